// Transactions of many recipes in one call, against real etcd: batching happens under load,
// never puts two writes to one queue in one batch (their keys would share a create revision: two
// holders with one fencing token), and a batch etcd refuses fails only the transaction at fault.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { EtcdLeaseInvalidError, type ITxnRequest } from 'etcd3';
import { EtcdConnector, LEStatus, type LeaderEvent } from '../src/index.js';
import { TxnBatcher } from '../src/transport/txn-batch.js';
import { FailureMemory } from '../src/transport/rpc.js';
import { uniqueName } from '../src/testing/index.js';
import { Recorder } from './fixtures/faults-kit.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

/** Create `key` if absent (a queue join without a lease). */
function join(key: string): ITxnRequest {
  const k = Buffer.from(key);
  return {
    compare: [{ key: k, target: 'Create', result: 'Equal', create_revision: 0 }],
    success: [{ request_put: { key: k, value: Buffer.from('') } }],
  };
}

void describe('TxnBatcher', () => {
  const suite = etcdSuite();
  let batcher: TxnBatcher;

  before(() => {
    const failures = new FailureMemory();
    batcher = new TxnBatcher({
      client: suite.client,
      callOptions: () => ({ deadline: new Date(Date.now() + 5000) }),
      toError: (err, what) => failures.toError(err, what),
    });
  });

  void test('under load transactions share calls; writes to one queue never share a batch', async () => {
    const ns = `/${uniqueName('tb')}`;
    // Distinct queues: batched (fewer revisions than transactions).
    const spread = await Promise.all(
      Array.from({ length: 40 }, (_x, i) => batcher.txn(join(`${ns}/q${i}/k`), `${ns}/q${i}/`)),
    );
    assert.ok(spread.every((r) => r.succeeded));
    const revisions = new Set(spread.map((r) => r.header.revision));
    assert.ok(
      revisions.size < 40,
      `${revisions.size} revisions for 40 writes: nothing was batched`,
    );

    // One queue: every join in a call of its own, so every key has its own create revision.
    const same = await Promise.all(
      Array.from({ length: 40 }, (_x, i) => batcher.txn(join(`${ns}/one/k${i}`), `${ns}/one/`)),
    );
    assert.ok(same.every((r) => r.succeeded));
    const kvs = await suite.client.getAll().prefix(`${ns}/one/`).exec();
    const creates = kvs.kvs.map((kv) => kv.create_revision);
    assert.equal(new Set(creates).size, 40, 'two keys of one queue share a create revision');
  });

  void test('a batch etcd refuses is re-sent one by one: only the culprit fails', async () => {
    const ns = `/${uniqueName('tb')}`;
    const bad: ITxnRequest = {
      success: [
        { request_put: { key: Buffer.from(`${ns}/bad`), value: Buffer.from('x'), lease: '12345' } },
      ],
    };
    const results = await Promise.allSettled([
      ...Array.from({ length: 10 }, (_x, i) => batcher.txn(join(`${ns}/a${i}`), `${ns}/a${i}`)),
      batcher.txn(bad),
      ...Array.from({ length: 10 }, (_x, i) => batcher.txn(join(`${ns}/b${i}`), `${ns}/b${i}`)),
    ]);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(failed.length, 1);
    assert.ok(failed[0]?.reason instanceof EtcdLeaseInvalidError);
    assert.equal((await suite.client.getAll().prefix(`${ns}/`).keys()).length, 20);
  });

  void test('electors of one connector with different TTLs on one path: never two leaders', async (t) => {
    const conn = new EtcdConnector(suite.etcd.endpoints, uniqueName('tb'));
    t.after(() => conn.close());
    const paths = Array.from({ length: 30 }, (_x, i) => conn.constructPath(`e${i}`));
    // Two sessions (TTLs 5 and 6) join each election at the same moment: batched joins.
    const readers = paths.flatMap((p) =>
      [5, 6].map(
        (ttl) => new Recorder<LeaderEvent>(conn.newLeaderElector(p, `ttl${ttl}`, ttl).start()),
      ),
    );
    await Promise.all(
      readers.map((r) =>
        r.next((e) => e.status === LEStatus.Leader || e.leader !== undefined, 'a status'),
      ),
    );
    for (let i = 0; i < paths.length; i++) {
      const pair = [readers[2 * i], readers[2 * i + 1]];
      const leaders = pair.filter((r) => r?.items.some((x) => x.item.status === LEStatus.Leader));
      assert.equal(leaders.length, 1, `${paths[i] ?? ''}: ${leaders.length} leaders`);
    }
    const kvs = await suite.client.getAll().prefix(conn.constructPath('')).exec();
    const byElection = new Map<string, Set<string>>();
    for (const kv of kvs.kvs) {
      const election = kv.key.toString().replace(/\/[^/]+$/, '');
      const set = byElection.get(election) ?? new Set();
      set.add(kv.create_revision);
      byElection.set(election, set);
    }
    for (const [election, revs] of byElection) assert.equal(revs.size, 2, `${election}: one token`);
  });
});
