/**
 * `etcdc dashboard` and `startDashboard` over HTTP, against a real etcd: the page and its files,
 * the event stream (the whole state, then changes and log lines as they happen), exactly one etcd
 * watch whatever is on screen, the Host check, usage errors, and a clean stop on Ctrl-C and on
 * `stop()`. The page in a real browser is test/dashboard-browser.test.ts.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { describe, test } from 'node:test';
import { startDashboard } from '../src/cli/dashboard/server.js';
import type { PageState } from '../src/cli/dashboard/live.js';
import { EtcdConnector } from '../src/index.js';
import { testTimeout, uniqueName } from '../src/testing/index.js';
import { assertEnvelope, CliProcess, killAll, runCli } from './fixtures/cli-harness.js';
import { watcherCount } from './fixtures/etcd-metrics.js';
import { openEvents, type SseStream } from './fixtures/sse.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

/** A GET with any Host header (fetch does not let one set it). */
function get(
  url: string,
  options: { host?: string; method?: string } = {},
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: options.method ?? 'GET',
        headers: options.host === undefined ? {} : { host: options.host },
        timeout: testTimeout(5000),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const stateOf = (data: unknown): PageState =>
  (data as { state?: PageState }).state ?? (data as PageState);

void describe('etcdc dashboard', () => {
  const suite = etcdSuite();
  suite.defer(killAll);

  const at = (ns: string): string[] => ['--endpoints', suite.endpoint, '--namespace', ns];

  async function events(url: string): Promise<SseStream> {
    const s = await openEvents(url);
    suite.defer(() => {
      s.close();
    });
    return s;
  }

  void test('serves the page and a live event stream from one etcd watch; Ctrl-C stops it', async () => {
    const ns = uniqueName('dash');
    // Two candidates and a registration before the dashboard starts.
    const elect = (id: string): CliProcess =>
      new CliProcess(['elect', 'orders', id, '--ttl', '5', ...at(ns), '--json']);
    const a = elect('node-a');
    await a.waitRecord((r) => r.status === 'leader', 'node-a leads');
    const b = elect('node-b');
    await b.waitRecord((r) => r.event === 'status', 'node-b campaigns');
    const reg = new CliProcess(['register', 'api', 'api-1', '10.0.0.1:80', ...at(ns), '--json']);
    await reg.waitRecord((r) => r.event === 'registered', 'api-1 registered');
    const watchersBefore = await watcherCount(suite.endpoint);

    const dash = new CliProcess(['dashboard', ...at(ns), '--json']);
    const started = await dash.waitRecord((r) => r.event === 'dashboard', 'the address');
    const url = String(started.url);
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    assert.equal(started.path, `/${ns}`);

    // The page and its two files, with a policy that forbids anything from elsewhere.
    const page = await get(url);
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.match(String(page.headers['content-security-policy']), /default-src 'none'/);
    assert.match(page.body, /<script type="module" src="app.js"><\/script>/);
    assert.doesNotMatch(page.body, /https?:\/\//, 'no external address in the page');
    for (const [file, type] of [
      ['app.js', /^text\/javascript/],
      ['style.css', /^text\/css/],
    ] as const) {
      const res = await get(new URL(file, url).href);
      assert.equal(res.status, 200, file);
      assert.match(String(res.headers['content-type']), type, file);
      assert.doesNotMatch(res.body, /https?:\/\/(?!127\.0\.0\.1)/, `${file} fetches nothing`);
    }

    // The stream: the whole state first.
    const stream = await events(new URL('events', url).href);
    const hello = await stream.next((e) => e.event === 'hello', 'hello');
    let state = stateOf(hello.data);
    const electionPath = `/${ns}/elections/orders`;
    const election = (s: PageState) =>
      s.recipes.find((r) => r.kind === 'election' && r.path === electionPath);
    if (election(state)?.entries.length !== 2) {
      state = stateOf(
        (
          await stream.next(
            (e) => e.event === 'state' && election(stateOf(e.data))?.entries.length === 2,
            'both candidates',
          )
        ).data,
      );
    }
    assert.deepEqual(
      election(state)?.entries.map((e) => `${e.role} ${e.name}`),
      ['leader node-a', 'candidate node-b'],
    );
    assert.deepEqual(
      state.recipes.find((r) => r.kind === 'services')?.entries.map((e) => [e.name, e.value]),
      [['api-1', '10.0.0.1:80']],
    );
    // One watch of the namespace, however many recipes it shows.
    assert.equal(
      await watcherCount(suite.endpoint),
      watchersBefore + 1,
      'the dashboard adds one watch',
    );

    // A change arrives as a log line and a new state.
    const from = stream.events.length;
    const c = elect('node-c');
    await stream.next(
      (e) =>
        e.event === 'log' &&
        (e.data as { text: string }).text.includes('node-c joined as candidate'),
      'the log says node-c joined',
      from,
    );
    await stream.next(
      (e) => e.event === 'state' && election(stateOf(e.data))?.entries.length === 3,
      'a state with node-c',
      from,
    );
    // Every lease on screen gets its TTL.
    const withTtls = await stream.next(
      (e) => {
        if (e.event !== 'state') return false;
        const s = stateOf(e.data);
        const leases = s.recipes.flatMap((r) => r.entries.flatMap((x) => x.lease ?? []));
        return leases.length === 4 && leases.every((l) => l in s.leases);
      },
      'the TTLs of all four leases',
      from,
    );
    for (const ttl of Object.values(stateOf(withTtls.data).leases)) {
      assert.ok(ttl.ttl > 0 && ttl.ttl <= ttl.grantedTtl, JSON.stringify(ttl));
    }
    const current = await get(new URL('state', url).href);
    assert.equal(election(JSON.parse(current.body) as PageState)?.entries.length, 3);

    // Ctrl-C: the stream ends, the process exits 0, the port is closed.
    dash.interrupt();
    const exit = await dash.exit();
    assert.equal(exit.code, 0, dash.describe());
    await stream.ended;
    assertEnvelope(dash.records, dash.describe());
    assert.equal(dash.records.at(-1)?.event, 'stopped');
    await assert.rejects(get(url), /ECONNREFUSED/);
    for (const p of [a, b, c, reg]) p.interrupt();
    await Promise.all([a, b, c, reg].map((p) => p.exit()));
  });

  void test('refuses other Host names, other methods and unknown paths', async () => {
    const conn = new EtcdConnector([suite.endpoint], uniqueName('dash'));
    const dash = await startDashboard(conn);
    try {
      const { port } = dash.address;
      assert.equal((await get(dash.url, { host: `localhost:${port}` })).status, 200);
      assert.equal((await get(dash.url, { host: `evil.example:${port}` })).status, 421);
      assert.equal((await get(dash.url, { host: `127.0.0.1:${port + 1}` })).status, 421);
      assert.equal((await get(dash.url, { method: 'POST' })).status, 405);
      assert.equal((await get(new URL('nope', dash.url).href)).status, 404);
    } finally {
      await dash.stop();
      await conn.close();
    }
  });

  void test('stop() and the signal end every page stream and free the port; stop is idempotent', async () => {
    const conn = new EtcdConnector([suite.endpoint], uniqueName('dash'));
    try {
      const controller = new AbortController();
      const dash = await startDashboard(conn, { signal: controller.signal });
      const stream = await events(new URL('events', dash.url).href);
      await stream.next((e) => e.event === 'hello', 'hello');
      await dash.opened;
      assert.equal(dash.pages, 1);
      controller.abort();
      await stream.ended;
      await dash.stop();
      await dash.stop();
      await assert.rejects(get(dash.url), /ECONNREFUSED/);
      assert.equal(dash.pages, 0);

      // The same connector can serve another dashboard afterwards.
      await using again = await startDashboard(conn);
      assert.equal((await get(again.url)).status, 200);
    } finally {
      await conn.close();
    }
  });

  void test('usage errors exit 2; a port in use exits 1', async () => {
    const help = await runCli(['dashboard', '--help']);
    assert.equal(help.code, 0, help.describe);
    const text = help.lines.join(' ').replace(/\s+/g, ' ');
    for (const w of ['--port <n>', '--host <address>', '--path <path>', 'default: "127.0.0.1"']) {
      assert.ok(text.includes(w), `${w} in ${text}`);
    }
    const ns = uniqueName('dash');
    for (const args of [
      ['--port', '70000'],
      ['--port', 'x'],
      ['--path', '/elsewhere'],
      ['--path', 'a/../b'],
    ]) {
      const r = await runCli(['dashboard', ...args, ...at(ns), '--json']);
      assert.equal(r.code, 2, r.describe);
    }
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as { port: number }).port;
      const r = await runCli(['dashboard', '--port', String(port), ...at(ns), '--json']);
      assert.equal(r.code, 1, r.describe);
      assert.match(r.stderr, /EADDRINUSE/, r.describe);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});
