/**
 * A key whose delete failed (etcd out of reach at that moment) must not stay for good. Revoking
 * the lease at its last release is no help when other recipes of the process hold the same
 * shared session on: the chaos run found a double barrier participant's key left that way, and
 * every later round of the barrier counted it, so no one could leave. The key is now deleted once
 * etcd answers, while the session lives.
 *
 * The failure is made exactly: the connector's next delete of the key is not sent but fails as an
 * unreachable etcd would.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GRPCUnavailableError, type Etcd3 } from 'etcd3';
import { AbortError, LEStatus, type EtcdConnector } from '../src/index.js';
import { testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { etcdSuite } from './fixtures/etcd-suite.js';
import { interceptNextTxn, keysOf } from './fixtures/intercept-txn.js';

/** The next transaction of `client` that deletes a key under `prefix` fails, unsent. */
async function failNextDelete(client: Etcd3, prefix: string): Promise<void> {
  await interceptNextTxn(
    client,
    (req) => keysOf(req, 'delete').some((k) => k.startsWith(prefix)),
    () => Promise.reject(new GRPCUnavailableError('unavailable (the test)')),
  );
}

void describe('a key whose delete failed', () => {
  const suite = etcdSuite();

  /** A connector whose shared session of TTL 10 (the recipes' default) another holder keeps. */
  async function withSharedSession(): Promise<EtcdConnector> {
    const conn = suite.connect(uniqueName('faildel'));
    const other = await conn.session({ ttl: 10 });
    suite.defer(() => other.close());
    return conn;
  }

  /** Resolves once nothing is left under `prefix`. */
  async function gone(prefix: string): Promise<void> {
    await waitFor(async () => (await suite.client.getAll().prefix(prefix).keys()).length === 0, {
      timeoutMs: testTimeout(5000),
    });
  }

  test('a double barrier participant that gave up: its key is deleted after all', async () => {
    const conn = await withSharedSession();
    const barrier = conn.newDoubleBarrier(conn.constructPath('meet'), 2);
    const ac = new AbortController();
    const failing = failNextDelete(conn.client, barrier.waitersPrefix);
    const entering = barrier.enter({ signal: ac.signal });
    await waitFor(
      async () => (await suite.client.getAll().prefix(barrier.waitersPrefix).keys()).length === 1,
      { timeoutMs: testTimeout(5000) },
    );
    ac.abort();
    await assert.rejects(entering, AbortError);
    await failing;
    // Left there, it would be this barrier's second participant for as long as the process runs.
    await gone(barrier.waitersPrefix);
  });

  test('an ephemeral key whose delete() failed: deleted after all', async () => {
    const conn = await withSharedSession();
    const key = conn.newEphemeralKey(conn.constructPath('eph'));
    await key.create('v', 10);
    const failing = failNextDelete(conn.client, key.key);
    await assert.rejects(key.delete());
    await failing;
    await gone(key.key);
  });

  test('an elector whose resign failed: its key is deleted after all', async () => {
    const conn = await withSharedSession();
    const path = conn.constructPath('elect');
    const elector = conn.newLeaderElector(path, 'me', 10);
    const events = elector.start()[Symbol.asyncIterator]();
    const leads = async (): Promise<void> => {
      for (;;) {
        const next = await events.next();
        if (next.done === true || next.value.status === LEStatus.Leader) return;
      }
    };
    await withTimeout(leads(), testTimeout(5000), 'leading');
    const failing = failNextDelete(conn.client, `${path}/`);
    await withTimeout(elector.stop(), testTimeout(5000), 'stop()');
    await withTimeout(failing, testTimeout(5000), 'the resign');
    await gone(`${path}/`);
  });
});
