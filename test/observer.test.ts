import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import {
  ClosedError,
  EtcdConnector,
  InvalidArgumentError,
  InvalidStateError,
  SlowConsumerError,
  type ObserverEvent,
} from '../src/index.js';
import {
  startClusterProxies,
  startProxy,
  testTimeout,
  uniqueName,
  waitFor,
  withTimeout,
  type FaultProxy,
} from '../src/testing/index.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

type Change = Extract<ObserverEvent, { type: 'put' | 'delete' }>;

/** Reads a stream in the background: everything it yields, and how it ended. */
function collect(
  stream: AsyncIterable<ObserverEvent>,
  onEvent?: (ev: ObserverEvent, n: number) => Promise<void> | void,
): { events: ObserverEvent[]; ended: Promise<unknown> } {
  const events: ObserverEvent[] = [];
  const ended = (async () => {
    try {
      for await (const ev of stream) {
        events.push(ev);
        await onEvent?.(ev, events.length);
      }
      return undefined;
    } catch (err) {
      return err;
    }
  })();
  return { events, ended };
}

function changes(events: readonly ObserverEvent[]): Change[] {
  return events.filter((e): e is Change => e.type === 'put' || e.type === 'delete');
}

function assertStrictlyIncreasingRevisions(events: readonly Change[]): void {
  for (let i = 1; i < events.length; i++) {
    const prev = events[i - 1];
    const cur = events[i];
    assert.ok(prev !== undefined && cur !== undefined);
    assert.ok(cur.revision > prev.revision, `revision ${cur.revision} after ${prev.revision}`);
  }
}

describe('Observer', () => {
  const suite = etcdSuite({ members: 3 });
  let proxies: FaultProxy[];

  const deadline = (): { deadline: number } => ({ deadline: Date.now() + 3000 });

  async function put(key: string, value: string): Promise<number> {
    const res = await suite.client.kv.put(
      { key: Buffer.from(key), value: Buffer.from(value) },
      deadline(),
    );
    return Number(res.header.revision);
  }

  async function del(key: string): Promise<number> {
    const res = await suite.client.kv.deleteRange({ key: Buffer.from(key) }, deadline());
    return Number(res.header.revision);
  }

  async function currentRevision(): Promise<number> {
    const res = await suite.client.kv.range(
      { key: Buffer.from('/'), count_only: true },
      deadline(),
    );
    return Number(res.header.revision);
  }

  /** etcd's live watcher count, summed over the running members. */
  async function watcherCount(): Promise<number> {
    let total = 0;
    for (const m of suite.etcd.members.filter((x) => x.running && !x.paused)) {
      const res = await fetch(`${m.endpoint}/metrics`, { signal: AbortSignal.timeout(2000) });
      const match = /^etcd_debugging_mvcc_watcher_total (\d+)/m.exec(await res.text());
      total += Number(match?.[1] ?? 0);
    }
    return total;
  }

  /** A connector through the fault proxies, closed after the test. */
  function connect(
    t: { after(fn: () => Promise<void>): void },
    endpoints = proxies.map((p) => p.endpoint),
  ): EtcdConnector {
    const conn = new EtcdConnector(endpoints, uniqueName('obs'), {
      callTimeoutMs: 2000,
      dialTimeoutMs: 1000,
      // Short, so a blackholed stream is found quickly.
      watchSilenceMs: 300,
    });
    t.after(() => conn.close());
    return conn;
  }

  /** Writes `key` repeatedly until the observer delivered one of those writes. */
  async function pingUntilSeen(events: readonly ObserverEvent[], key: string): Promise<void> {
    let n = 0;
    await waitFor(
      async () => {
        if (events.some((e) => (e.type === 'put' || e.type === 'delete') && e.key === key))
          return true;
        await put(key, `ping-${n++}`);
        return false;
      },
      { timeoutMs: testTimeout(15000), intervalMs: 100, message: `the observer to see ${key}` },
    );
  }

  before(async () => {
    proxies = await startClusterProxies(suite.etcd);
    suite.defer(() => Promise.all(proxies.map((p) => p.close())));
  });

  void test('bad input and wrong state: typed errors before any I/O', async (t) => {
    const conn = connect(t);
    const path = conn.constructPath('bad');
    assert.throws(() => conn.newObserver(path, { bufferSize: 0 }), InvalidArgumentError);
    assert.throws(() => conn.newObserver(path, { bufferSize: 1.5 }), InvalidArgumentError);
    assert.throws(
      () => conn.newObserver(path, { slowConsumer: 'drop' as 'error' }),
      InvalidArgumentError,
    );
    assert.throws(() => conn.newObserver('relative/path'), InvalidArgumentError);
    assert.throws(() => conn.newObserver('/elsewhere/x'), InvalidArgumentError);
    const obs = conn.newObserver(path);
    assert.throws(() => obs.start(-1), InvalidArgumentError);
    assert.throws(() => obs.start(1.5), InvalidArgumentError);
    assert.throws(() => obs.start(Number.NaN), InvalidArgumentError);
    assert.throws(() => obs.start(0, 'yes' as unknown as boolean), InvalidArgumentError);
    // None of that started it.
    const stream = obs.start(0, true);
    assert.throws(() => obs.start(), InvalidStateError);
    await withTimeout(obs.stop(), testTimeout(5000), 'stop');
    await obs.stop();
    await obs[Symbol.asyncDispose]();
    const ended = collect(stream);
    assert.equal(await withTimeout(ended.ended, testTimeout(5000), 'stream end'), undefined);
    assert.throws(() => obs.start(), ClosedError);

    const never = conn.newObserver(path);
    await never.stop();
    assert.throws(() => never.start(), ClosedError);

    const late = conn.newObserver(path);
    await conn.close();
    assert.throws(() => late.start(), ClosedError);
    assert.throws(() => conn.newObserver(path), ClosedError);
  });

  void test('replay from a past revision; recursive sees the subtree but not siblings', async (t) => {
    const conn = connect(t);
    const path = conn.constructPath('tree');
    // Every write, in order, with what an observer of `path` should see of it.
    const expected: Change[] = [];
    const write = async (key: string, value: string | undefined, seen: 'exact' | 'sub' | 'no') => {
      const revision = value === undefined ? await del(key) : await put(key, value);
      if (seen !== 'no') {
        expected.push({
          type: value === undefined ? 'delete' : 'put',
          key,
          value: value ?? '',
          revision,
          createRevision: 0,
          version: 0,
        });
      }
    };
    await write(path, 'root-1', 'exact');
    const from = expected[0]?.revision ?? 0;
    await write(`${path}/a`, 'a-1', 'sub');
    await write(`${path}-x`, 'sibling', 'no');
    await write(`${path}x`, 'sibling', 'no');
    await write(`${path}/b/c`, 'c-1', 'sub');
    await write(`${path}/a`, undefined, 'sub');
    await write(path, 'root-2', 'exact');
    await write(`${path}.x`, 'sibling', 'no');
    await write(path, undefined, 'exact');
    await write(`${path}/a`, 'a-2', 'sub');
    // One transaction: two events of one revision (plus a sibling's), delivered in order.
    const txn = await suite.client.kv.txn(
      {
        success: [
          { request_put: { key: Buffer.from(`${path}/t1`), value: Buffer.from('t') } },
          { request_put: { key: Buffer.from(`${path}-t`), value: Buffer.from('t') } },
          { request_put: { key: Buffer.from(`${path}/t2`), value: Buffer.from('t') } },
        ],
      },
      deadline(),
    );
    const txnRev = Number(txn.header.revision);
    for (const k of [`${path}/t1`, `${path}/t2`]) {
      expected.push({
        type: 'put',
        key: k,
        value: 't',
        revision: txnRev,
        createRevision: 0,
        version: 0,
      });
    }

    const rec = conn.newObserver(path);
    const exact = conn.newObserver(path);
    const recSeen = collect(rec.start(from, true));
    const exactSeen = collect(exact.start(from, false));
    // A last write on the key itself: once both saw it, everything before it was delivered.
    await write(path, 'end', 'exact');
    const endRev = expected[expected.length - 1]?.revision;
    for (const seen of [recSeen, exactSeen]) {
      await waitFor(
        () =>
          seen.events.some(
            (e) => (e.type === 'put' || e.type === 'delete') && e.revision === endRev,
          ),
        {
          timeoutMs: testTimeout(10000),
          message: 'the last write',
        },
      );
    }
    const strip = (e: ObserverEvent): unknown =>
      e.type === 'resync' || e.type === 'status'
        ? e
        : { type: e.type, key: e.key, value: e.value, revision: e.revision };
    assert.deepEqual(recSeen.events.map(strip), expected.map(strip));
    assert.deepEqual(
      exactSeen.events.map(strip),
      expected.filter((e) => e.key === path).map(strip),
    );
    // Versions and create revisions come from etcd.
    const a2 = changes(recSeen.events).find((e) => e.key === `${path}/a` && e.value === 'a-2');
    assert.deepEqual([a2?.version, a2?.createRevision], [1, a2?.revision]);
    const root2 = changes(recSeen.events).find((e) => e.value === 'root-2');
    assert.deepEqual([root2?.version, root2?.createRevision], [2, from]);
    const gone = changes(recSeen.events).find((e) => e.type === 'delete');
    assert.deepEqual([gone?.version, gone?.createRevision], [0, 0]);
    await Promise.all([rec.stop(), exact.stop()]);
    assert.equal(await recSeen.ended, undefined);
    assert.equal(await exactSeen.ended, undefined);
  });

  void test('from now: earlier writes are not delivered, later ones are', async (t) => {
    const conn = connect(t);
    const path = conn.constructPath('now');
    const before = await put(`${path}/old`, 'old');
    const obs = conn.newObserver(path);
    const seen = collect(obs.start(0, true));
    await pingUntilSeen(seen.events, `${path}/ping`);
    const after = await put(`${path}/new`, 'new');
    await waitFor(() => changes(seen.events).some((e) => e.revision === after), {
      timeoutMs: testTimeout(10000),
      message: 'the new write',
    });
    const got = changes(seen.events);
    assert.ok(got.every((e) => e.revision > before));
    assertStrictlyIncreasingRevisions(got);
    await obs.stop();
  });

  void test('break out of for-await, conn.close() and the abort signal stop the watch', async (t) => {
    const conn = connect(t);
    const path = conn.constructPath('brk');
    const baseline = await watcherCount();
    const obs = conn.newObserver(path);
    const from = await put(path, 'first');
    for await (const ev of obs.start(from)) {
      assert.equal(ev.type, 'put');
      break;
    }
    await withTimeout(obs.stop(), testTimeout(5000), 'stop after break');
    await waitFor(async () => (await watcherCount()) === baseline, {
      timeoutMs: testTimeout(10000),
      message: 'etcd to drop the watcher after break',
    });

    const controller = new AbortController();
    const aborted = conn.newObserver(path, { signal: controller.signal });
    const closed = conn.newObserver(path);
    const a = collect(aborted.start(from));
    const c = collect(closed.start(from));
    await waitFor(() => a.events.length > 0 && c.events.length > 0, {
      timeoutMs: testTimeout(10000),
      message: 'first events',
    });
    controller.abort();
    assert.equal(await withTimeout(a.ended, testTimeout(5000), 'aborted stream end'), undefined);
    await withTimeout(conn.close(), testTimeout(10000), 'conn.close()');
    assert.equal(await withTimeout(c.ended, testTimeout(5000), 'closed stream end'), undefined);
    assert.throws(() => closed.start(), ClosedError);
    await waitFor(async () => (await watcherCount()) === baseline, {
      timeoutMs: testTimeout(10000),
      message: 'etcd to drop the watchers after abort and close',
    });
  });

  void test('slow consumer: SlowConsumerError with "error", complete delivery with back-pressure', async (t) => {
    const conn = connect(t);
    const path = conn.constructPath('slow');
    const first = await put(`${path}/k0`, 'v0');
    for (let i = 1; i < 50; i++) await put(`${path}/k${i}`, `v${i}`);

    // 50 revisions of backlog arrive in one response: far more than 10 can wait.
    const strict = conn.newObserver(path, { bufferSize: 10, slowConsumer: 'error' });
    const s = collect(strict.start(first, true));
    const err = await withTimeout(s.ended, testTimeout(10000), 'slow consumer error');
    assert.ok(err instanceof SlowConsumerError, `ended with ${String(err)}`);
    assert.equal(err.code, 'ETCDC_SLOW_CONSUMER');
    assert.ok(s.events.length <= 12, `${s.events.length} events before the error`);
    changes(s.events).forEach((e, i) => {
      assert.equal(e.value, `v${i}`);
    });
    await withTimeout(strict.stop(), testTimeout(5000), 'stop');

    // Back-pressure: a small buffer, a slow reader, 2,000 events written meanwhile.
    const total = 2000;
    const start = (await currentRevision()) + 1;
    const obs = conn.newObserver(path, { bufferSize: 16 });
    const seen = collect(obs.start(start, true), async (_ev, n) => {
      if (n % 25 === 0) await new Promise((resolve) => setTimeout(resolve, 2));
    });
    const revisions: number[] = [];
    const workers = Array.from({ length: 8 }, async (_x, w) => {
      for (let i = w; i < total; i += 8) revisions[i] = await put(`${path}/bp/${i}`, `${i}`);
    });
    await Promise.all(workers);
    await waitFor(() => seen.events.length >= total, {
      timeoutMs: testTimeout(60000),
      message: `${total} events (have ${seen.events.length})`,
    });
    const got = changes(seen.events);
    assert.equal(got.length, total);
    assertStrictlyIncreasingRevisions(got);
    assert.deepEqual(
      got.map((e) => e.revision),
      [...revisions].sort((x, y) => x - y),
    );
    await obs.stop();
  });

  void test('catch-up of >1000 revisions cut by connection resets: none skipped or repeated', async (t) => {
    const conn = connect(t);
    const path = conn.constructPath('catchup');
    const total = 1500;
    const revisions: number[] = [];
    const workers = Array.from({ length: 8 }, async (_x, w) => {
      for (let i = w; i < total; i += 8) revisions[i] = await put(`${path}/${i}`, `${i}`);
    });
    await Promise.all(workers);
    revisions.sort((x, y) => x - y);
    const first = revisions[0] ?? 0;
    let resets = 0;
    const obs = conn.newObserver(path, { bufferSize: 64 });
    const seen = collect(obs.start(first, true), async (_ev, n) => {
      // Cut every connection right after the first events, and again deep into the backlog.
      if (n === 1 || n === 700 || n === 1200) {
        for (const p of proxies) p.reset();
        resets++;
      }
      if (n % 50 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
    });
    await waitFor(() => seen.events.length >= total, {
      timeoutMs: testTimeout(60000),
      message: `${total} events (have ${seen.events.length})`,
    });
    assert.equal(resets, 3);
    const got = changes(seen.events);
    assert.deepEqual(
      got.map((e) => e.revision),
      revisions,
    );
    await obs.stop();
  });

  void test('a blackholed connection is detected and the watch moves to another member', async (t) => {
    const [m0, m1] = suite.etcd.endpoints;
    assert.ok(m0 !== undefined && m1 !== undefined);
    const pa = await startProxy(m0);
    const pb = await startProxy(m1);
    t.after(async () => {
      await Promise.all([pa.close(), pb.close()]);
    });
    const conn = connect(t, [pa.endpoint, pb.endpoint]);
    const path = conn.constructPath('hole');
    // With pb silent the watch can only work through pa ...
    pb.blackhole();
    const obs = conn.newObserver(path);
    // An explicit start: "from now" would first need a unary read, which etcd3 may send into the
    // blackhole and retry only after the call deadline.
    const seen = collect(obs.start((await currentRevision()) + 1, true));
    const t0 = performance.now();
    await pingUntilSeen(seen.events, `${path}/ping`);
    const t1 = performance.now();
    // ... so blackholing pa now cuts the live stream: it must notice and move to pb.
    pb.pass();
    pa.blackhole();
    const during: number[] = [];
    for (let i = 0; i < 5; i++) during.push(await put(`${path}/during/${i}`, `${i}`));
    await waitFor(() => during.every((r) => changes(seen.events).some((e) => e.revision === r)), {
      timeoutMs: testTimeout(20000),
      message: 'the writes made during the blackhole, while it lasts',
    });
    t.diagnostic(
      `first event after ${Math.round(t1 - t0)} ms; moved off the blackhole in ` +
        `${Math.round(performance.now() - t1)} ms`,
    );
    assertStrictlyIncreasingRevisions(changes(seen.events));
    pa.pass();
    await obs.stop();
  });

  void test('compaction while cut off: an explicit resync, then a correct state', async (t) => {
    const conn = connect(t);
    const path = conn.constructPath('compact');
    await put(`${path}/keep`, 'k1');
    await put(`${path}/gone`, 'g1');
    const obs = conn.newObserver(path);
    const seen = collect(obs.start(0, true));
    await pingUntilSeen(seen.events, `${path}/ping`);
    const beforeCut = seen.events.length;

    for (const p of proxies) p.blackhole();
    await put(`${path}/keep`, 'k2');
    await del(`${path}/gone`);
    await put(`${path}/new`, 'n1');
    await put(`${path}-sibling`, 's');
    const compactAt = await put(`${path}/ping`, 'last-before-compaction');
    await suite.client.kv.compact({ revision: String(compactAt), physical: true }, deadline());
    // End the cut with a reset, so nothing sent before the compaction is still in flight.
    for (const p of proxies) {
      p.reset();
      p.pass();
    }

    await waitFor(() => seen.events.some((e) => e.type === 'resync'), {
      timeoutMs: testTimeout(15000),
      message: 'a resync event',
    });
    const after = await put(`${path}/after`, 'a1');
    await waitFor(() => changes(seen.events).some((e) => e.revision === after), {
      timeoutMs: testTimeout(10000),
      message: 'the write after the resync',
    });
    const resyncAt = seen.events.findIndex((e) => e.type === 'resync');
    const resync = seen.events[resyncAt];
    assert.ok(resync?.type === 'resync');
    assert.equal(resync.reason, 'compacted');
    assert.ok(resync.compactRevision >= compactAt, `compacted at ${resync.compactRevision}`);
    assert.ok(resync.revision >= compactAt);
    assert.ok(resyncAt >= beforeCut, 'the resync follows the events before the cut');
    assert.equal(seen.events.filter((e) => e.type === 'resync').length, 1);
    // Snapshot + later events = etcd's state.
    const state = new Map(resync.snapshot);
    const later = changes(seen.events.slice(resyncAt + 1));
    assert.ok(later.every((e) => e.revision > resync.revision));
    for (const e of later) {
      if (e.type === 'put') state.set(e.key, e.value);
      else state.delete(e.key);
    }
    const truth = await suite.client.kv.range(
      { key: Buffer.from(`${path}/`), range_end: Buffer.from(`${path}0`) },
      deadline(),
    );
    assert.deepEqual(
      [...state].sort(),
      truth.kvs.map((kv) => [kv.key.toString(), kv.value.toString()]).sort(),
    );
    assert.equal(state.get(`${path}/keep`), 'k2');
    assert.equal(state.has(`${path}/gone`), false);
    assert.equal(state.has(`${path}-sibling`), false);
    await obs.stop();
  });

  void test('5,000 writes while the leader is killed and restarted and connections reset: each exactly once, in order', async (t) => {
    const conn = connect(t);
    const path = conn.constructPath('chaos');
    const groups = 1250; // each: 3 puts, then a delete of the first -> 5,000 writes
    const acked = new Map<number, { type: 'put' | 'delete'; key: string; value: string }>();
    const attempted = new Set<string>();
    let done = 0;
    let failures = 0;

    /** Retries until etcd acknowledges; an ambiguous failure may have been applied anyway. */
    async function write(type: 'put' | 'delete', key: string, value: string): Promise<void> {
      attempted.add(`${type} ${key} ${value}`);
      for (;;) {
        try {
          if (type === 'put') {
            acked.set(await put(key, value), { type, key, value });
          } else {
            const res = await suite.client.kv.deleteRange({ key: Buffer.from(key) }, deadline());
            // Nothing deleted: an earlier, unacknowledged attempt did it.
            if (res.deleted !== '0') acked.set(Number(res.header.revision), { type, key, value });
          }
          done++;
          return;
        } catch {
          failures++;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    }

    const start = (await currentRevision()) + 1;
    const obs = conn.newObserver(path);
    const seen = collect(obs.start(start, true));

    let next = 0;
    const writers = Array.from({ length: 8 }, async () => {
      for (let g = next++; g < groups; g = next++) {
        const base = `${path}/g${g}`;
        await write('put', `${base}/a`, `a${g}`);
        await write('put', `${base}/b`, `b${g}`);
        await write('put', `${base}/c`, `c${g}`);
        await write('delete', `${base}/a`, '');
      }
    });

    const faults = (async () => {
      const at = (n: number) =>
        waitFor(() => done >= n, { timeoutMs: testTimeout(120000), message: `${n} writes` });
      await at(600);
      for (const p of proxies) p.reset();
      await at(1200);
      const leader = await suite.etcd.leader();
      t.diagnostic(`killing leader ${leader.name} after ${done} writes`);
      await leader.kill();
      await at(2200);
      for (const p of proxies) p.reset();
      await leader.restart();
      await at(3300);
      for (const p of proxies) p.reset();
      await at(4300);
      for (const p of proxies) p.reset();
    })();

    await Promise.all([...writers, faults]);
    const marker = await put(path, 'end');
    await waitFor(() => changes(seen.events).some((e) => e.revision === marker), {
      timeoutMs: testTimeout(60000),
      message: `the end marker (have ${seen.events.length} events)`,
    });
    await obs.stop();
    await suite.etcd.waitHealthy();
    t.diagnostic(`${acked.size} acknowledged writes, ${failures} failed attempts retried`);

    const got = changes(seen.events);
    assert.deepEqual(
      seen.events.filter((e) => e.type === 'resync'),
      [],
      'no resync expected',
    );
    assertStrictlyIncreasingRevisions(got);
    // Nothing else writes to this cluster meanwhile: every revision from start to the marker is
    // one of ours, and each must have been delivered exactly once.
    assert.equal(got[0]?.revision, start);
    assert.equal(got.length, marker - start + 1);
    const byRevision = new Map(got.map((e) => [e.revision, e]));
    for (const [revision, w] of acked) {
      const e = byRevision.get(revision);
      assert.ok(e !== undefined, `acknowledged write at ${revision} not delivered`);
      assert.deepEqual([e.type, e.key, e.value], [w.type, w.key, w.value]);
    }
    for (const e of got.slice(0, -1)) {
      assert.ok(attempted.has(`${e.type} ${e.key} ${e.value}`), `unexpected event ${e.key}`);
    }
    assert.ok(acked.size >= groups * 4 - failures);
  });
});
