// etcd-connector/metrics against the OpenTelemetry SDK in memory, with real etcd: leadership
// transitions counted, a session loss counted, keepalive round trips, the shared watch stream's
// resumes, a resync after compaction, lock waits, holds and losses, failed calls — and nothing after dispose().
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { after, before, describe, test } from 'node:test';
import { MeterProvider, MetricReader, type MetricData } from '@opentelemetry/sdk-metrics';
import {
  EtcdConnector,
  LEStatus,
  type DiagnosticMessages,
  type LeaderEvent,
} from '../src/index.js';
import { instrumentMetrics, METRIC_NAMES, type MetricsHandle } from '../src/metrics/index.js';
import { startProxy, testTimeout, uniqueName, waitFor } from '../src/testing/index.js';
import { Recorder } from './fixtures/faults-kit.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

/** A reader that collects on demand (the SDK's own pull model). */
class TestReader extends MetricReader {
  protected onShutdown(): Promise<void> {
    return Promise.resolve();
  }
  protected onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
}

const isLeader = (e: LeaderEvent): boolean => e.status === LEStatus.Leader;

void describe('etcd-connector/metrics', () => {
  const suite = etcdSuite();
  let reader: TestReader;
  let provider: MeterProvider;
  let handle: MetricsHandle;

  before(() => {
    reader = new TestReader();
    provider = new MeterProvider({ readers: [reader] });
    handle = instrumentMetrics({ meterProvider: provider });
  });
  after(async () => {
    handle.dispose();
    await provider.shutdown();
  });

  async function metric(name: string): Promise<MetricData | undefined> {
    const { resourceMetrics } = await reader.collect();
    return resourceMetrics.scopeMetrics
      .flatMap((s) => s.metrics)
      .find((m) => m.descriptor.name === name);
  }

  /** Sum of a counter's points (or histograms' counts) whose attributes include `where`. */
  async function total(name: string, where: Record<string, unknown> = {}): Promise<number> {
    const m = await metric(name);
    let sum = 0;
    for (const p of m?.dataPoints ?? []) {
      const attrs = p.attributes as Record<string, unknown>;
      if (!Object.entries(where).every(([k, v]) => attrs[k] === v)) continue;
      const v = p.value as number | { count: number };
      sum += typeof v === 'number' ? v : v.count;
    }
    return sum;
  }

  void test('leadership: gained and lost counted, status is who leads now', async (t) => {
    const conn = new EtcdConnector(suite.etcd.endpoints, uniqueName('m'));
    t.after(() => conn.close());
    const path = conn.constructPath('e');
    const a = conn.newLeaderElector(path, 'a', 5);
    const ra = new Recorder(a.start());
    await ra.next(isLeader, 'a leads');
    const other = new EtcdConnector(suite.etcd.endpoints, conn.namespace);
    t.after(() => other.close());
    const b = other.newLeaderElector(path, 'b', 5);
    const rb = new Recorder(b.start());
    await rb.next((e) => e.status === LEStatus.Follower && e.leader === 'a', 'b follows');
    await a.stop();
    await rb.next(isLeader, 'b leads');
    assert.equal(await total(METRIC_NAMES.leaderTransitions, { path, direction: 'gained' }), 2);
    assert.equal(
      await total(METRIC_NAMES.leaderTransitions, { path, direction: 'lost', reason: 'resigned' }),
      1,
    );
    assert.equal(await total(METRIC_NAMES.leaderStatus, { path }), 1, 'one leader now');
    await b.stop();
    assert.equal(await total(METRIC_NAMES.leaderStatus, { path }), 0);
  });

  void test('locks: wait, held time and losses recorded by kind; the channels say which key', async (t) => {
    const conn = new EtcdConnector(suite.etcd.endpoints, uniqueName('m'));
    t.after(() => conn.close());
    const waits: DiagnosticMessages['etcd-connector:lock.wait'][] = [];
    const onWait = (m: unknown): void => {
      waits.push(m as DiagnosticMessages['etcd-connector:lock.wait']);
    };
    subscribe('etcd-connector:lock.wait', onWait);
    t.after(() => unsubscribe('etcd-connector:lock.wait', onWait));
    const path = conn.constructPath('lock');
    const where = { kind: 'mutex', path };
    const a = conn.newMutex(path);
    const b = conn.newMutex(path, { session: await conn.session({ ttl: 5 }) });
    const held = await a.lock();
    const second = b.lock();
    await waitFor(() => waits.some((w) => w.path === path), {
      timeoutMs: testTimeout(5000),
      message: 'the second caller reported waiting',
    });
    const waiting = waits.find((w) => w.path === path);
    assert.ok(waiting !== undefined);
    assert.equal(waiting.kind, 'mutex');
    assert.notEqual(waiting.key, held.key);
    await held.unlock();
    const next = await second;
    assert.equal(next.key, waiting.key);
    assert.equal(await total(METRIC_NAMES.lockWait, where), 2);
    assert.equal(await total(METRIC_NAMES.lockHeld, { ...where, outcome: 'released' }), 1);
    const m = await metric(METRIC_NAMES.lockWait);
    const slow = m?.dataPoints.find((p) => (p.attributes as Record<string, unknown>).path === path);
    assert.ok(((slow?.value as { max?: number }).max ?? 0) > 0, 'the waiter waited');
    // Deleted behind its back: lost, counted and timed as such.
    await suite.client.delete().key(next.key);
    await waitFor(() => next.state === 'lost', {
      timeoutMs: testTimeout(5000),
      message: 'the lock lost',
    });
    assert.equal(await total(METRIC_NAMES.lockLost, where), 1);
    assert.equal(await total(METRIC_NAMES.lockHeld, { ...where, outcome: 'lost' }), 1);
    const sem = conn.newSemaphore(conn.constructPath('sem'), 2);
    await (await sem.acquire()).unlock();
    assert.equal(await total(METRIC_NAMES.lockWait, { kind: 'semaphore' }), 1);
  });

  void test('a session lost past its TTL is counted; keepalive round trips are recorded', async (t) => {
    const proxy = await startProxy(suite.endpoint);
    t.after(() => proxy.close());
    const conn = new EtcdConnector([proxy.endpoint], uniqueName('m'), { callTimeoutMs: 1000 });
    t.after(async () => {
      proxy.pass();
      await conn.close();
    });
    const lostBefore = await total(METRIC_NAMES.sessionLost, { ttl: 2 });
    const s = await conn.session({ ttl: 2 });
    await waitFor(async () => (await total(METRIC_NAMES.keepaliveRtt, { ttl: 2 })) > 0, {
      timeoutMs: testTimeout(5000),
      message: 'a keepalive round trip recorded',
    });
    proxy.blackhole();
    await waitFor(() => s.state === 'lost', {
      timeoutMs: testTimeout(10_000),
      message: 'the session lost',
    });
    assert.equal(await total(METRIC_NAMES.sessionLost, { ttl: 2 }), lostBefore + 1);
  });

  void test('watch: resumes after a cut, a resync after compaction, lag recorded', async (t) => {
    const proxy = await startProxy(suite.endpoint);
    t.after(() => proxy.close());
    const conn = new EtcdConnector([proxy.endpoint], uniqueName('m'), { callTimeoutMs: 1000 });
    t.after(() => conn.close());
    const path = conn.constructPath('o');
    const from = Number((await suite.client.get('x').exec()).header.revision) + 1;
    await suite.client.put(`${path}/a`).value('1');
    const rec = new Recorder(conn.newObserver(path).start(from, true));
    await rec.next((e) => e.type === 'put', 'a first event');
    const resumes = await total(METRIC_NAMES.watchResumes);
    proxy.reset();
    await suite.client.put(`${path}/b`).value('2');
    await rec.next((e) => e.type === 'put' && e.key.endsWith('/b'), 'the event after the cut');
    await waitFor(async () => (await total(METRIC_NAMES.watchResumes)) > resumes, {
      timeoutMs: testTimeout(5000),
      message: 'a resume counted',
    });
    assert.ok((await total(METRIC_NAMES.watchLag)) > 0, 'deliveries recorded');

    // Replay from a compacted revision: a resync.
    const resyncs = await total(METRIC_NAMES.watchResyncs);
    const rev = (await suite.client.put(`${path}/c`).value('3').exec()).header.revision;
    await suite.client.kv.compact({ revision: rev });
    const late = new Recorder(conn.newObserver(path).start(from, true));
    await late.next((e) => e.type === 'resync', 'a resync');
    assert.equal(await total(METRIC_NAMES.watchResyncs), resyncs + 1);
  });

  void test('failed calls are counted by code; dispose stops recording', async (t) => {
    const conn = new EtcdConnector(['http://127.0.0.1:9'], uniqueName('m'), {
      dialTimeoutMs: 500,
      callTimeoutMs: 500,
    });
    t.after(() => conn.close());
    const before = await total(METRIC_NAMES.callErrors, { code: 'ETCDC_UNAVAILABLE' });
    await assert.rejects(conn.newLeaderElector(conn.constructPath('e'), 'x', 5).getLeader());
    assert.ok((await total(METRIC_NAMES.callErrors, { code: 'ETCDC_UNAVAILABLE' })) > before);

    // The channels themselves: a subscriber sees the message shapes the README documents.
    const seen: unknown[] = [];
    const listener = (m: unknown): void => {
      seen.push(m);
    };
    subscribe('etcd-connector:call.error', listener);
    try {
      await assert.rejects(conn.newLeaderElector(conn.constructPath('e'), 'x', 5).getLeader());
    } finally {
      unsubscribe('etcd-connector:call.error', listener);
    }
    const msg = seen[0] as { what: string; code: string; retryable: boolean; message: string };
    assert.equal(msg.code, 'ETCDC_UNAVAILABLE');
    assert.equal(msg.retryable, true);
    assert.match(msg.what, /get leader/);

    handle.dispose();
    handle.dispose();
    const frozen = await total(METRIC_NAMES.callErrors, { code: 'ETCDC_UNAVAILABLE' });
    await assert.rejects(conn.newLeaderElector(conn.constructPath('e'), 'x', 5).getLeader());
    assert.equal(await total(METRIC_NAMES.callErrors, { code: 'ETCDC_UNAVAILABLE' }), frozen);
    handle = instrumentMetrics({ meterProvider: provider });
  });
});
