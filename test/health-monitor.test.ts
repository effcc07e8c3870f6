import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ClusterStatus, EtcdConnector, type HealthReport } from '../src/index.js';
import {
  startEtcdCluster,
  testTimeout,
  uniqueName,
  withTimeout,
  type EtcdCluster,
} from '../src/testing/index.js';

const INTERVAL_MS = 300;

/** Reads reports until one satisfies `ok`, failing after `timeoutMs`. */
async function until(
  it: AsyncIterator<HealthReport>,
  ok: (r: HealthReport) => boolean,
  timeoutMs: number,
  what: string,
): Promise<HealthReport> {
  const deadline = Date.now() + timeoutMs;
  const seen: string[] = [];
  for (;;) {
    const left = deadline - Date.now();
    const res = await withTimeout(
      it.next(),
      Math.max(1, left),
      `${what} (seen: ${seen.join(', ')})`,
    );
    assert.equal(res.done, false, `the stream ended while waiting for ${what}`);
    const r = res.value;
    seen.push(`${r.status}[${r.members.map((m) => (m.healthy ? '+' : '-')).join('')}]`);
    if (ok(r)) return r;
  }
}

void describe('HealthMonitor', () => {
  let cluster: EtcdCluster;
  let conn: EtcdConnector;

  before(async () => {
    cluster = await startEtcdCluster(3);
    conn = new EtcdConnector(cluster.endpoints, uniqueName('health'));
  });

  after(async () => {
    await conn.close();
    await cluster.stop();
  });

  void test('once: exactly one Healthy report with every member, then the stream ends', async () => {
    const mon = conn.newHealthMonitor();
    const reports: HealthReport[] = [];
    await withTimeout(
      (async () => {
        for await (const r of mon.start(true, 10_000)) reports.push(r);
      })(),
      testTimeout(10000),
      'a once-only health check',
    );
    assert.equal(reports.length, 1);
    const [r] = reports;
    assert.ok(r !== undefined);
    assert.equal(r.status, ClusterStatus.Healthy);
    assert.deepEqual(
      r.members.map((m) => m.endpoint),
      cluster.endpoints,
    );
    for (const m of r.members) {
      assert.equal(m.healthy, true, m.error?.message);
      assert.equal(m.error, undefined);
      assert.ok(m.latencyMs !== undefined && m.latencyMs >= 0);
      assert.match(m.memberId ?? '', /^[0-9a-f]+$/);
      assert.ok((m.raftTerm ?? 0) >= 1);
      assert.match(m.version ?? '', /^3\./);
    }
    const leaders = r.members.filter((m) => m.isLeader === true);
    assert.equal(leaders.length, 1);
    assert.equal(r.leader, leaders[0]?.endpoint);
    assert.equal(r.leader, (await cluster.leader()).endpoint);
    assert.ok(r.checkedAt instanceof Date);
    await mon.stop();
    assert.throws(() => mon.start(true), { name: 'ClosedError' });
  });

  void test('bad input and misuse get typed errors', async () => {
    assert.throws(() => conn.newHealthMonitor({ timeoutMs: 0 }), { name: 'InvalidArgumentError' });
    const mon = conn.newHealthMonitor();
    assert.throws(() => mon.start(false, 0), { name: 'InvalidArgumentError' });
    assert.throws(() => mon.start(false, NaN), { name: 'InvalidArgumentError' });
    mon.start(false, 60_000);
    assert.throws(() => mon.start(false, 60_000), { name: 'InvalidStateError' });
    await mon.stop();
    await mon.stop();
    await mon[Symbol.asyncDispose]();
  });

  void test('stop() ends the stream; break stops the monitor', async () => {
    const mon = conn.newHealthMonitor();
    const it = mon.start(false, INTERVAL_MS)[Symbol.asyncIterator]();
    const first = await withTimeout(it.next(), testTimeout(10000), 'the first report');
    assert.equal(first.done, false);
    await withTimeout(mon.stop(), testTimeout(5000), 'stop()');
    assert.equal((await withTimeout(it.next(), testTimeout(1000), 'the end')).done, true);

    const mon2 = conn.newHealthMonitor();
    for await (const r of mon2.start(false, INTERVAL_MS)) {
      assert.equal(r.status, ClusterStatus.Healthy);
      break;
    }
    await withTimeout(mon2.stop(), testTimeout(5000), 'stop() after break');
  });

  void test('a killed member is reported unhealthy within an interval, the others healthy; all killed -> Unhealthy', async (t) => {
    const mon = conn.newHealthMonitor({ timeoutMs: 1000 });
    t.after(() => mon.stop());
    const it = mon.start(false, INTERVAL_MS)[Symbol.asyncIterator]();
    await until(it, (r) => r.status === ClusterStatus.Healthy, testTimeout(10000), 'Healthy');

    const leader = await cluster.leader();
    const victim = cluster.members.find((m) => m !== leader);
    assert.ok(victim !== undefined);
    await victim.kill();
    const degraded = await until(
      it,
      (r) => r.status !== ClusterStatus.Healthy,
      INTERVAL_MS + testTimeout(3000),
      'a report after the kill',
    );
    assert.equal(degraded.status, ClusterStatus.Degraded);
    for (const m of degraded.members) {
      assert.equal(m.healthy, m.endpoint !== victim.endpoint, m.endpoint);
    }
    const down = degraded.members.find((m) => m.endpoint === victim.endpoint);
    assert.ok(down?.error !== undefined);
    assert.equal((down.error as { retryable?: boolean }).retryable, true);

    // Quorum gone, then everything gone: Unhealthy, every member unhealthy.
    await Promise.all(cluster.members.map((m) => m.kill()));
    const unhealthy = await until(
      it,
      (r) => r.members.every((m) => !m.healthy),
      INTERVAL_MS + testTimeout(5000),
      'every member unhealthy',
    );
    assert.equal(unhealthy.status, ClusterStatus.Unhealthy);
    await withTimeout(mon.stop(), testTimeout(5000), 'stop()');
  });
});
