/**
 * A call given up (its `signal`) while its write is in flight, and whose answer is then lost,
 * cannot know whether the write landed: it must say so (`OutcomeUnknownError`), never
 * `AbortError`, which promises nothing was written. The write is applied here and its answer
 * replaced by a timeout, after the caller's signal fired.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GRPCDeadlineExceededError, type Etcd3 } from 'etcd3';
import { OutcomeUnknownError } from '../src/index.js';
import { uniqueName } from '../src/testing/index.js';
import { etcdSuite } from './fixtures/etcd-suite.js';
import { interceptNextTxn, putValues } from './fixtures/intercept-txn.js';

/**
 * The next guarded write of `client` (it puts a receipt, `w:...`): `ac` aborts while it is in
 * flight, etcd applies it, and its answer is lost (a timeout).
 */
function abortThenLose(client: Etcd3, ac: AbortController): void {
  void interceptNextTxn(
    client,
    (req) => putValues(req).some((v) => v.startsWith('w:')),
    async (send) => {
      ac.abort();
      await send();
      throw new GRPCDeadlineExceededError('deadline exceeded (the test)');
    },
  );
}

void describe('a call aborted while its answer is lost', () => {
  const suite = etcdSuite();

  /** `call`, given a signal that fires while its write is in flight, whose answer is lost. */
  async function unknownOutcome(
    client: Etcd3,
    call: (signal: AbortSignal) => Promise<unknown>,
  ): Promise<void> {
    const ac = new AbortController();
    abortThenLose(client, ac);
    await assert.rejects(call(ac.signal), OutcomeUnknownError);
  }

  test('counter add and compareAndSet: OutcomeUnknownError, and the write is there', async () => {
    const conn = suite.connect(uniqueName('abort'));
    const counter = conn.newCounter(conn.constructPath('n'));
    await unknownOutcome(conn.client, (signal) => counter.add(1, { signal }));
    await unknownOutcome(conn.client, (signal) => counter.compareAndSet(1, 2, { signal }));
    assert.equal(await counter.get(), 2);
  });

  test('queue enqueue: OutcomeUnknownError, and the item is there', async () => {
    const conn = suite.connect(uniqueName('abort'));
    const queue = conn.newQueue(conn.constructPath('jobs'));
    await unknownOutcome(conn.client, (signal) => queue.enqueue('job', { signal }));
    assert.equal(await queue.dequeue(), 'job');
  });

  test('stm: OutcomeUnknownError, and the transaction is there', async () => {
    const conn = suite.connect(uniqueName('abort'));
    const key = conn.constructPath('k');
    await unknownOutcome(conn.client, (signal) =>
      conn.stm(
        (tx) => {
          tx.put(key, 'v');
          return Promise.resolve();
        },
        { signal },
      ),
    );
    assert.equal(await conn.client.get(key).string(), 'v');
  });
});
