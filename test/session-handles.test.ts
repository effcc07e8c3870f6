// Session handles and the connection's state, and the review bugs of the first version: a
// disposed or twice-closed handle revoked the lease every recipe on that TTL used; orphan() then
// close() never revoked; a campaign whose session closed said nothing; the tracker's paged listing
// had no retry for a compaction between pages.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import {
  EtcdConnector,
  LEStatus,
  SessionLostError,
  type ConnectionState,
  type LeaderEvent,
} from '../src/index.js';
import { Session } from '../src/session/session.js';
import { LINGER_MS } from '../src/session/session-pool.js';
import { FailureMemory } from '../src/transport/rpc.js';
import { startProxy, testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { Recorder } from './fixtures/faults-kit.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

/** Remaining TTL of a lease (hex id) as etcd sees it; -1 when it does not exist. */
async function remainingTtl(client: Etcd3, hex: string): Promise<number> {
  const res = await client.leaseClient.leaseTimeToLive(
    { ID: BigInt('0x' + hex).toString(), keys: false },
    { deadline: Date.now() + 2000 },
  );
  return Number(res.TTL);
}

const isLeader = (e: LeaderEvent): boolean => e.status === LEStatus.Leader;

void describe('session handles', () => {
  const suite = etcdSuite();
  function connect(t: { after(fn: () => Promise<void>): void }): EtcdConnector {
    const conn = new EtcdConnector(suite.etcd.endpoints, uniqueName('sh'), { callTimeoutMs: 2000 });
    t.after(() => conn.close());
    return conn;
  }

  void test('await using a handle (and closing it twice) never revokes the lease an elector uses', async (t) => {
    const conn = connect(t);
    const elector = conn.newLeaderElector(conn.constructPath('e'), 'a', 5);
    const rec = new Recorder(elector.start());
    const lead = await rec.next(isLeader, 'leads');
    let lease = '';
    {
      await using s = await conn.session({ ttl: 5 });
      lease = s.leaseId;
      assert.equal(lead.item.token?.key, `${conn.constructPath('e')}/${lease}`, 'one shared lease');
      await s.close();
      await s.close();
    }
    assert.ok((await remainingTtl(suite.client, lease)) > 0, 'the lease lives on');
    assert.equal(elector.isLeader, true);
    assert.equal(await elector.getLeader(), 'a');
    assert.deepEqual(
      rec.items.slice(lead.index + 1).map((x) => x.item.status),
      [],
      'no event after the handle went',
    );
    await elector.stop();
    assert.equal(await remainingTtl(suite.client, lease), -1, 'the last holder revokes');
  });

  void test('a session only recipes used outlives its last release a moment: locks in a row keep one lease', async (t) => {
    const conn = connect(t);
    const m = conn.newMutex(conn.constructPath('m'), { ttl: 5 });
    const first = await m.lock();
    await first.unlock();
    const again = await m.lock();
    assert.equal(again.key, first.key, 'the same lease: no grant and revoke around each lock');
    await again.unlock();
    const lease = again.key.slice(again.key.lastIndexOf('/') + 1);
    assert.ok(
      (await remainingTtl(suite.client, lease)) > 0,
      'kept a moment after the last release',
    );
    await waitFor(async () => (await remainingTtl(suite.client, lease)) === -1, {
      timeoutMs: testTimeout(LINGER_MS + 3000),
      intervalMs: 100,
      message: 'revoked once the moment passed',
    });
  });

  void test('an elector bound to { session }: a lease revoked behind its back ends its stream', async (t) => {
    const conn = connect(t);
    const s = await conn.session({ ttl: 5 });
    const bound = conn.newLeaderElector(conn.constructPath('bound'), 'b', 5, { session: s });
    const pooled = conn.newLeaderElector(conn.constructPath('pooled'), 'p', 7);
    const stream = bound.start();
    const rec = new Recorder(stream);
    const other = new Recorder(pooled.start());
    await rec.next(isLeader, 'bound leads');
    await other.next(isLeader, 'pooled leads');
    assert.equal(bound.fencingToken?.key.endsWith(s.leaseId), true);

    const from = rec.items.length;
    await suite.client.leaseClient.leaseRevoke({ ID: s.leaseIdDecimal });
    // Its key goes first (NotLeaderError), then the session learns that the lease is gone.
    const lost = await rec.next((e) => e.error instanceof SessionLostError, 'the loss', from);
    assert.equal(lost.item.status, LEStatus.Follower);
    assert.equal(
      rec.items.slice(from).some((x) => isLeader(x.item)),
      false,
      'never leader again',
    );
    const ended = await withTimeout(rec.ended, testTimeout(5000), 'the stream to end');
    assert.ok(ended instanceof SessionLostError, String(ended));
    assert.ok((await stream.closed) instanceof SessionLostError);
    assert.equal(s.state, 'lost');
    assert.equal(s.signal.aborted, true);
    assert.equal(pooled.isLeader, true, 'another lease: untouched');
  });

  void test('an ephemeral key bound to { session } reports the loss and ends', async (t) => {
    const conn = connect(t);
    const s = await conn.session({ ttl: 5 });
    const eph = conn.newEphemeralKey(conn.constructPath('k'));
    const errors = new Recorder(await eph.create('v', 5, { session: s }));
    assert.equal(eph.leaseId, s.leaseId);
    await suite.client.leaseClient.leaseRevoke({ ID: s.leaseIdDecimal });
    const reported = await errors.next(() => true, 'the loss on the error stream');
    assert.ok(reported.item instanceof SessionLostError, String(reported.item));
    await withTimeout(errors.ended, testTimeout(5000), 'the error stream to end');
    await waitFor(() => eph.state === 'idle', {
      timeoutMs: testTimeout(5000),
      message: 'the key back to idle',
    });
    assert.equal((await suite.client.get(eph.key).exec()).kvs.length, 0, 'not put back');
  });

  void test('a handle from another connector is refused before any I/O', async (t) => {
    const a = connect(t);
    const b = connect(t);
    const s = await a.session({ ttl: 5 });
    for (const session of [s, {} as never]) {
      assert.throws(() => b.newLeaderElector(b.constructPath('e'), 'x', 5, { session }), {
        name: 'InvalidArgumentError',
      });
      await assert.rejects(b.newEphemeralKey(b.constructPath('k')).create('v', 5, { session }), {
        name: 'InvalidArgumentError',
      });
    }
  });

  void test('orphan() then close() revokes (as Go: Close after Orphan)', async () => {
    const session = await Session.grant(suite.client, 5, {
      callTimeoutMs: 2000,
      failures: new FailureMemory(),
    });
    session.orphan();
    assert.equal(session.state, 'closed');
    assert.ok((await remainingTtl(suite.client, session.leaseIdHex)) > 0, 'orphaned: not revoked');
    await session.close();
    assert.equal(await remainingTtl(suite.client, session.leaseIdHex), -1, 'close revokes');
  });

  void test('the tracker lists through a compaction between its pages', async (t) => {
    // Behind a proxy that delays every packet, a one-key-per-page listing of 40 keys takes
    // seconds: a compaction lands between its pages for sure.
    const proxy = await startProxy(suite.endpoint);
    t.after(() => proxy.close());
    const conn = new EtcdConnector([proxy.endpoint], uniqueName('sh'), { callTimeoutMs: 5000 });
    t.after(() => conn.close());
    const path = conn.constructPath('svc');
    for (let i = 0; i < 40; i++) {
      await suite.client.put(`${path}/i${String(i).padStart(2, '0')}`).value(`v${i}`);
    }
    proxy.delay(25);
    const tracker = conn.newServiceTracker(path, { pageSize: 1 });
    const rec = new Recorder(tracker.start());
    // The fault's timing (a few pages in), not a wait for a result.
    await sleep(400);
    assert.equal(rec.items.length, 0, 'still listing');
    const res = await suite.client.put(conn.constructPath('churn')).value('x').exec();
    const compactAt = Number(res.header.revision);
    await suite.client.kv.compact({ revision: compactAt });
    const first = await rec.next(() => true, 'the first map', 0, 30_000);
    // Without the retry the listing would fail on the compacted revision and end the tracker.
    assert.equal(first.item.error, undefined);
    assert.ok(first.item.revision >= compactAt, 'listed again at a revision after the compaction');
    assert.equal(first.item.services.size, 40);
    assert.equal(first.item.services.get('i39'), 'v39');
    await tracker.stop();
  });
});

void describe('conn.status()', () => {
  const suite = etcdSuite();
  void test('connected, suspended on a blackhole, lost past the TTL, reconnected', async (t) => {
    const proxy = await startProxy(suite.endpoint);
    t.after(() => proxy.close());
    const conn = new EtcdConnector([proxy.endpoint], uniqueName('st'), {
      callTimeoutMs: 1000,
      watchSilenceMs: 300,
    });
    t.after(async () => {
      proxy.pass();
      await conn.close();
    });
    const rec = new Recorder<ConnectionState>(conn.status());
    await rec.next((s) => s === 'connected', 'connected');
    const session = await conn.session({ ttl: 2 });

    proxy.blackhole();
    const suspended = await rec.next((s) => s === 'suspended', 'suspended');
    const lost = await rec.next((s) => s === 'lost', 'lost', suspended.index);
    assert.equal(session.state, 'lost');
    proxy.pass();
    await rec.next((s) => s === 'reconnected', 'reconnected', lost.index);
    assert.deepEqual(
      rec.items.map((x) => x.item),
      ['connected', 'suspended', 'lost', 'reconnected'],
    );
    await conn.close();
    await withTimeout(rec.ended, testTimeout(5000), 'the status stream ends on close');
  });
});
