// 100 observers of one connector share its one watch stream. Through connection resets, a
// blackhole and a compaction, each of the 99 that read gets every write exactly once, in order;
// the one whose reader stalls never slows them, and when it reads again it gets everything it
// missed — or, if the history it needed was compacted meanwhile, an explicit resync that equals
// etcd's state, then the rest. etcd counts the Watch streams we opened.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { EtcdConnector, type ObserverChange, type ObserverEvent } from '../src/index.js';
import {
  startClusterProxies,
  testTimeout,
  uniqueName,
  waitFor,
  type FaultProxy,
} from '../src/testing/index.js';
import { assertExactlyOnce, Writer } from './fixtures/faults-kit.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

const OBSERVERS = 100;
const BUFFER = 16;

/** Open Watch streams a member serves now, from its gRPC metrics. */
async function watchStreams(endpoint: string): Promise<number> {
  const res = await fetch(`${endpoint}/metrics`, { signal: AbortSignal.timeout(2000) });
  let n = 0;
  for (const line of (await res.text()).split('\n')) {
    if (!line.includes('grpc_method="Watch"')) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (line.startsWith('grpc_server_started_total')) n += value;
    else if (line.startsWith('grpc_server_handled_total')) n -= value;
  }
  return n;
}

void describe('observers sharing one watch stream', () => {
  const suite = etcdSuite({ members: 3 });
  let proxies: FaultProxy[];

  before(async () => {
    proxies = await startClusterProxies(suite.etcd);
    suite.defer(() => Promise.all(proxies.map((p) => p.close())));
  });

  void test('cut, blackhole and compaction with one stalled reader among 100', async (t) => {
    const conn = new EtcdConnector(
      proxies.map((p) => p.endpoint),
      uniqueName('shared'),
      { callTimeoutMs: 2000, dialTimeoutMs: 1000, watchSilenceMs: 300 },
    );
    t.after(() => conn.close());
    const prefix = conn.constructPath('data');
    const from = Number((await suite.client.get('nothing').exec()).header.revision) + 1;
    const baseline = (await Promise.all(suite.etcd.endpoints.map(watchStreams))).reduce(
      (a, b) => a + b,
      0,
    );

    // Readers 1..99 read everything; reader 0 reads one event, then stalls until released.
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    const seen: ObserverEvent[][] = [];
    const observers = Array.from({ length: OBSERVERS }, () =>
      conn.newObserver(prefix, { bufferSize: BUFFER }),
    );
    const readers = observers.map(async (obs, i) => {
      const events: ObserverEvent[] = [];
      seen[i] = events;
      for await (const ev of obs.start(from, true)) {
        events.push(ev);
        if (i === 0 && events.length === 1) await released;
      }
    });
    const hasRevision = (i: number, revision: number): boolean =>
      (seen[i] ?? []).some(
        (e) => (e.type === 'put' || e.type === 'resync') && e.revision >= revision,
      );
    const writer = new Writer(suite.client, prefix);
    await writer.write(20);
    await waitFor(() => seen[0]?.length === 1, {
      timeoutMs: testTimeout(10000),
      message: 'the stalled reader got its first event',
    });
    const streams = (await Promise.all(suite.etcd.endpoints.map(watchStreams))).reduce(
      (a, b) => a + b,
      0,
    );
    t.diagnostic(`Watch streams at etcd: ${streams - baseline} for ${OBSERVERS} observers`);
    assert.ok(streams - baseline <= 1, `${streams - baseline} Watch streams opened`);

    // Cut every connection, twice, under load.
    await writer.write(50);
    for (const p of proxies) p.reset();
    await writer.write(50);
    for (const p of proxies) p.reset();
    // A blackhole longer than the silence probe: the stream moves or waits, nothing is lost.
    for (const p of proxies) p.blackhole();
    // The fault's duration is the input of this test, not a wait for a condition.
    await sleep(1200);
    for (const p of proxies) p.pass();
    await writer.write(50);

    // The 99 got everything while reader 0 was stalled: one slow reader slows no one else.
    const last = await writer.write(1);
    await waitFor(() => seen.every((_e, i) => i === 0 || hasRevision(i, last)), {
      timeoutMs: testTimeout(30000),
      message: 'the last write at every reading observer',
    });
    assert.equal(seen[0]?.length, 1, 'the stalled reader read nothing more meanwhile');

    // Compact past what the stalled reader has delivered, then let it read.
    const compactAt = (await suite.client.get('nothing').exec()).header.revision;
    await suite.client.kv.compact({ revision: compactAt, physical: true });
    const end = await writer.write(1);
    release();
    await waitFor(() => seen.every((_e, i) => hasRevision(i, end)), {
      timeoutMs: testTimeout(30000),
      message: 'the end write at every observer, the stalled one included',
    }).catch((err: unknown) => {
      const missing = seen.flatMap((_e, i) => (hasRevision(i, end) ? [] : [i]));
      throw new Error(`${String(err)}; missing at ${missing.join(',')}`);
    });
    await Promise.all(observers.map((o) => o.stop()));
    await Promise.all(readers);

    const changes = (events: readonly ObserverEvent[]): ObserverChange[] =>
      events.filter((e): e is ObserverChange => e.type === 'put' || e.type === 'delete');
    for (let i = 1; i < OBSERVERS; i++) {
      await assertExactlyOnce(suite.client, prefix, seen.at(i) ?? [], writer).catch(
        (err: unknown) => {
          assert.fail(`observer ${i}: ${String(err)}`);
        },
      );
    }

    // The stalled one: its first event, then (history gone) one resync equal to etcd's state at
    // its revision, then only later changes — no gap, nothing repeated.
    const stalled = seen.at(0) ?? [];
    const resyncs = stalled.filter((e) => e.type === 'resync');
    t.diagnostic(`stalled reader: ${stalled.length} items, ${resyncs.length} resync`);
    const resync = resyncs[0];
    if (resync?.type === 'resync') {
      assert.equal(resyncs.length, 1);
      const truth = await suite.client
        .getAll()
        .prefix(`${prefix}/`)
        .revision(resync.revision)
        .strings();
      assert.deepEqual(Object.fromEntries(resync.snapshot), truth);
      const after = changes(stalled.slice(stalled.indexOf(resync) + 1));
      assert.ok(after.every((e) => e.revision > resync.revision));
      const before = changes(stalled.slice(0, stalled.indexOf(resync)));
      for (let i = 1; i < before.length; i++) {
        assert.ok((before[i]?.revision ?? 0) > (before[i - 1]?.revision ?? 0));
      }
    } else {
      await assertExactlyOnce(suite.client, prefix, stalled, writer);
    }
  });
});
