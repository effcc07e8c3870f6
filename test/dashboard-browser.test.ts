/**
 * The dashboard in a real headless Chromium (Debian's, driven by playwright-core), against a real
 * 3-member etcd: an election between `etcdc elect` processes, a lock held by `etcdctl lock` (with a
 * second one waiting), registered services and a few other keys. The page must show what etcd
 * holds — read with a separate client — and, once the leader's process is killed, the new leader
 * within TTL + 2 s. Screenshots go to test-artifacts/ (docs/dashboard.png is one of them).
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import type { Locator, Page } from 'playwright-core';
import { startDashboard, type Dashboard } from '../src/cli/dashboard/server.js';
import { EtcdConnector } from '../src/index.js';
import {
  findEtcdBinary,
  startEtcdCluster,
  testTimeout,
  waitFor,
  type EtcdCluster,
} from '../src/testing/index.js';
import { chromiumMissing, launchChromium, type Browser } from './fixtures/browser.js';
import { CliProcess, killAll, ROOT } from './fixtures/cli-harness.js';

const ARTIFACTS = join(ROOT, 'test-artifacts');
/** Lease TTL of the election's participants, in seconds. */
const TTL = 2;
const NS = 'shop';

/**
 * `role name` of each row of a recipe's table, read from the page in one go (row by row, a
 * re-render between two reads would leave a locator waiting for a row that is gone).
 */
async function rowsOf(table: Locator): Promise<string[]> {
  const rows = await table.locator('tbody tr').allInnerTexts();
  return rows.map((row) => row.split('\t').slice(0, 2).join(' ').trim());
}

/** A recipe's table, found by its accessible name (its caption): `kind path`. */
function recipe(page: Page, kind: string, path: string): Locator {
  return page.getByRole('table', { name: `${kind} ${path}`, exact: true });
}

void describe('dashboard in a browser', () => {
  const missing = chromiumMissing();
  let cluster: EtcdCluster;
  let client: Etcd3;
  let conn: EtcdConnector;
  let dashboard: Dashboard | undefined;
  let browser: Browser | undefined;

  before(async () => {
    if (missing !== undefined) return;
    cluster = await startEtcdCluster(3);
    client = new Etcd3({ hosts: [...cluster.endpoints] });
    conn = new EtcdConnector(cluster.endpoints, NS);
  });

  after(async () => {
    await browser?.close();
    await dashboard?.stop();
    await killAll();
    await (conn as EtcdConnector | undefined)?.close();
    (client as Etcd3 | undefined)?.close();
    await (cluster as EtcdCluster | undefined)?.stop();
  });

  /** The keys under `prefix` in create order, once `ok` holds for them. */
  async function keys(prefix: string, ok: (n: number) => boolean) {
    return waitFor(
      async () => {
        const res = await client.getAll().prefix(prefix).sort('Create', 'Ascend').exec();
        return ok(res.kvs.length) ? res.kvs : undefined;
      },
      { timeoutMs: testTimeout(10000), message: `keys under ${prefix}` },
    );
  }

  void test('shows the leader, the lock holder and the services etcd holds; a new leader within TTL + 2 s of a crash', async (t) => {
    // npm test installs Chromium (scripts/ensure-chromium.sh): without it this fails, never skips.
    assert.equal(missing, undefined, missing);
    const endpoints = cluster.endpoints.join(',');
    const at = ['--endpoints', endpoints, '--namespace', NS];
    const root = `/${NS}`;

    // An election between three processes, in a known order.
    const electionPath = `${root}/elections/orders`;
    const participants = new Map<string, CliProcess>();
    for (const id of ['node-a', 'node-b', 'node-c']) {
      const p = new CliProcess(['elect', 'orders', id, '--ttl', String(TTL), ...at, '--json']);
      participants.set(id, p);
      await p.waitRecord((r) => r.event === 'status', `${id} campaigns`);
    }
    // A lock held by etcdctl (Go's Mutex), one more waiting.
    const lockPath = `${root}/locks/billing`;
    const etcdctl = (): CliProcess =>
      new CliProcess([`--endpoints=${endpoints}`, 'lock', lockPath], {
        command: findEtcdBinary('etcdctl'),
        env: { ETCDCTL_API: '3' },
      });
    await etcdctl().waitLine(new RegExp(`^${lockPath}/`), 'etcdctl holds the lock');
    etcdctl();
    await keys(`${lockPath}/`, (n) => n === 2);
    // Registered services, and keys of other layouts.
    const servicePath = `${root}/services/api`;
    await Promise.all(
      ['api-1', 'api-2', 'api-3'].map((name, i) =>
        conn.newRegistration(servicePath, name).register(`10.0.0.${i + 1}:8080`, 10),
      ),
    );
    // Items as Go's recipe.Queue writes them: `path/<UnixNano>`, no lease.
    const nano = (): string =>
      String(
        BigInt(Date.now()) * 1_000_000n + BigInt(Math.floor(performance.now() * 1000) % 1_000_000),
      );
    await client.put(`${root}/queues/emails/${nano()}`).value('welcome mail');
    await client.put(`${root}/queues/emails/${nano()}`).value('invoice mail');
    await client.put(`${root}/config/feature-x`).value('on');

    dashboard = await startDashboard(conn, { healthIntervalMs: 1000 });
    browser = await launchChromium();
    const { page } = browser;
    // No page operation may wait longer than a test deadline.
    page.setDefaultTimeout(testTimeout(10_000));
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(err.message));
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(msg.text());
    });
    // Nothing may be fetched from anywhere but the dashboard.
    const elsewhere: string[] = [];
    page.on('request', (req) => {
      if (!req.url().startsWith(dashboard?.url ?? '-') && !req.url().startsWith('data:')) {
        elsewhere.push(req.url());
      }
    });
    await page.goto(dashboard.url);
    await page.getByRole('status').filter({ hasText: 'live' }).waitFor();

    // The election: leader and candidates in etcd's create order.
    const candidates = await keys(`${electionPath}/`, (n) => n === 3);
    const expected = candidates.map(
      (kv, i) => `${i === 0 ? 'leader' : 'candidate'} ${kv.value.toString()}`,
    );
    const election = recipe(page, 'election', electionPath);
    await waitFor(async () => (await rowsOf(election)).join() === expected.join(), {
      timeoutMs: testTimeout(10000),
      message: `the page shows ${expected.join(', ')}`,
    });
    assert.equal(expected[0], 'leader node-a');

    // The lock: the holder is the oldest key's lease, the waiter next.
    const lockKeys = await keys(`${lockPath}/`, (n) => n === 2);
    const leaseHex = (id: string): string => BigInt(id).toString(16);
    assert.deepEqual(await rowsOf(recipe(page, 'lock', lockPath)), [
      `holder ${leaseHex(lockKeys[0]?.lease ?? '0')}`,
      `waiter ${leaseHex(lockKeys[1]?.lease ?? '0')}`,
    ]);

    // The services: every registered instance with its value.
    const registered = await keys(`${servicePath}/`, (n) => n === 3);
    const services = recipe(page, 'services', servicePath);
    await waitFor(async () => (await services.locator('tbody tr').count()) === 3, {
      timeoutMs: testTimeout(5000),
      message: 'three instances on the page',
    });
    for (const kv of registered) {
      const name = kv.key.toString().slice(servicePath.length + 1);
      const row = services.locator('tbody tr', { has: page.getByRole('rowheader', { name }) });
      assert.equal(await row.locator('td.value').innerText(), kv.value.toString(), name);
    }

    // The cluster: three healthy members, the raft leader marked.
    const raftLeader = await cluster.leader();
    const members = page.getByRole('table', { name: 'Cluster members' });
    await waitFor(async () => (await members.getByText('✓ healthy').count()) === 3, {
      timeoutMs: testTimeout(10000),
      message: 'three healthy members',
    });
    const leaderRow = members.locator('tbody tr', { hasText: 'raft leader' });
    assert.equal(await leaderRow.getAttribute('data-endpoint'), raftLeader.endpoint);

    // Every lease on screen counts down with a TTL no longer than its grant.
    const ttlText = await election.locator('td.ttl span').first().innerText();
    assert.match(ttlText, /^\d+ s$/);
    assert.ok(Number.parseInt(ttlText, 10) <= TTL, ttlText);

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-before.png'), fullPage: true });

    // The leader crashes: its lease must expire before the next candidate leads.
    const leaderName = 'node-a';
    const crashed = performance.now();
    await participants.get(leaderName)?.kill();
    const next = candidates[1]?.value.toString() ?? '';
    await waitFor(async () => (await rowsOf(election))[0] === `leader ${next}`, {
      timeoutMs: testTimeout((TTL + 2) * 1000),
      intervalMs: 50,
      message: `the page shows ${next} as leader within TTL + 2 s`,
    });
    const tookMs = performance.now() - crashed;
    t.diagnostic(`the page showed the new leader ${(tookMs / 1000).toFixed(2)} s after the crash`);
    const now = await keys(`${electionPath}/`, (n) => n === 2);
    assert.equal(now[0]?.value.toString(), next, 'the same leader as etcd');
    assert.deepEqual(await rowsOf(election), [
      `leader ${next}`,
      `candidate ${now[1]?.value.toString() ?? ''}`,
    ]);
    // The log says it in recipe terms.
    await page
      .getByRole('log')
      .getByText(`${leaderName} (leader) left; ${next}: candidate → leader`)
      .waitFor({ timeout: testTimeout(5000) });

    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });
    assert.deepEqual(problems, [], 'no script error on the page');
    assert.deepEqual(elsewhere, [], 'no request to anywhere else');
  });
});
