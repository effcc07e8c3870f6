// When etcd cannot be used, every recipe says so on its stream within the dial timeout, typed —
// and keeps trying while the reason is retryable (unreachable, blackholed), or ends with the
// reason when retrying cannot help (wrong password, a CA that did not sign the server, a
// forbidden prefix). Real etcd with auth and with TLS (certificates made by openssl).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import {
  AuthenticationFailedError,
  EtcdConnector,
  ErrorCode,
  LEStatus,
  PermissionDeniedError,
  TlsError,
  type EtcdConnectorOptions,
  type RecipeStream,
} from '../src/index.js';
import {
  enableAuth,
  makeTlsMaterial,
  startEtcd,
  startProxy,
  testTimeout,
  uniqueName,
  waitFor,
  withTimeout,
  type EtcdCluster,
  type FaultProxy,
  type TlsMaterial,
} from '../src/testing/index.js';
import { runCli } from './fixtures/cli-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

const TLS_CHILD = fileURLToPath(new URL('./fixtures/tls-client.js', import.meta.url));
const DIAL_MS = 800;
/** What "within the dial timeout" may take beyond it on a loaded 2-core machine. */
const SLACK_MS = 1500;

/** Reads a stream in the background, remembering when each item came. */
class Reader<T> {
  readonly items: { item: T; at: number }[] = [];

  constructor(stream: AsyncIterable<T>) {
    void (async () => {
      for await (const item of stream) this.items.push({ item, at: performance.now() });
    })().catch(() => undefined);
  }

  /** The first item at index >= `from` that matches, and when it came (ms after `since`). */
  async first(
    match: (item: T) => boolean,
    what: string,
    since = 0,
    from = 0,
  ): Promise<{ item: T; ms: number; index: number }> {
    const found = await waitFor(
      () => {
        const index = this.items.findIndex((x, i) => i >= from && match(x.item));
        const hit = this.items[index];
        return hit === undefined ? undefined : { item: hit.item, ms: hit.at - since, index };
      },
      { timeoutMs: testTimeout(15_000), intervalMs: 5, message: what },
    );
    return found;
  }
}

/** The error a stream ends with (it must end with one). */
async function endsWith(stream: RecipeStream<unknown>, what: string): Promise<Error> {
  const thrown = await withTimeout(
    (async () => {
      try {
        for await (const _ of stream) {
          // status reports before the end are fine
        }
      } catch (err) {
        return err;
      }
      return new Error(`${what}: the stream ended without an error`);
    })(),
    testTimeout(15_000),
    what,
  );
  assert.ok(thrown instanceof Error, String(thrown));
  const closed = await stream.closed;
  assert.equal(closed, thrown, `${what}: closed resolves with the error that ended the stream`);
  return thrown;
}

function code(err: unknown): string | undefined {
  return (err as { code?: string } | undefined)?.code;
}

/** Starts an elector, an observer, a tracker and a leader observer on one connector. */
function startAll(conn: EtcdConnector, path: string) {
  const elector = conn.newLeaderElector(conn.constructPath(path, 'e'), 'me', 5);
  const observer = conn.newObserver(conn.constructPath(path, 'o'));
  const tracker = conn.newServiceTracker(conn.constructPath(path, 's'));
  const leaders = conn.newLeaderObserver(conn.constructPath(path, 'e'));
  return {
    elector: elector.start(),
    observer: observer.start({ recursive: true }),
    tracker: tracker.start(),
    leaders: leaders.start(),
  };
}

void describe('no silent waits: etcd unreachable or blackholed', () => {
  const suite = etcdSuite();
  let proxy: FaultProxy;

  for (const fault of ['refused', 'blackholed'] as const) {
    void test(`${fault}: every recipe reports within the dial timeout, then recovers by itself`, async (t) => {
      proxy = await startProxy(suite.endpoint);
      t.after(() => proxy.close());
      // Refused: the port is closed (a proxy that reset its connections every few ms let a
      // call through now and then: no longer refused); blackholed: sockets open, nothing flows.
      const { endpoint } = proxy;
      if (fault === 'refused') await proxy.close();
      else proxy.blackhole();
      const conn = new EtcdConnector([endpoint], uniqueName('nsw'), {
        dialTimeoutMs: DIAL_MS,
        callTimeoutMs: 2000,
      });
      t.after(() => conn.close());
      const since = performance.now();
      const started = startAll(conn, 'x');
      const s = {
        elector: new Reader(started.elector),
        observer: new Reader(started.observer),
        tracker: new Reader(started.tracker),
        leaders: new Reader(started.leaders),
      };
      const reports = await Promise.all([
        s.elector.first((e) => e.error !== undefined, 'elector error', since),
        s.observer.first((e) => e.type === 'status', 'observer status', since),
        s.tracker.first((d) => d.error !== undefined, 'tracker error', since),
        s.leaders.first((i) => i.error !== undefined, 'leader observer error', since),
      ]);
      const [el, ob, tr, lo] = reports;
      assert.equal(el.item.status, LEStatus.Follower);
      assert.ok(el.item.error !== undefined);
      assert.equal(ob.item.type === 'status' ? ob.item.state : undefined, 'unavailable');
      for (const [name, err] of [
        ['elector', el.item.error],
        ['observer', ob.item.type === 'status' ? ob.item.error : undefined],
        ['tracker', tr.item.error],
        ['leader observer', lo.item.error],
      ] as const) {
        assert.ok(
          [ErrorCode.Unavailable, ErrorCode.Timeout].includes(code(err) as 'ETCDC_TIMEOUT'),
          `${name}: ${String(err)}`,
        );
        assert.equal((err as { retryable?: boolean }).retryable, true, name);
      }
      const worst = Math.max(...reports.map((r) => r.ms));
      t.diagnostic(`reported after ${reports.map((r) => r.ms.toFixed(0)).join(' / ')} ms`);
      assert.ok(worst <= DIAL_MS + SLACK_MS, `reported after ${worst.toFixed(0)} ms`);

      // Retryable: they keep trying, and work once etcd can be reached (on the same port).
      if (fault === 'refused') {
        proxy = await startProxy(suite.endpoint, { port: Number(new URL(endpoint).port) });
      } else proxy.pass();
      await s.elector.first((e) => e.status === LEStatus.Leader, 'leader after recovery');
      await s.tracker.first((d) => d.error === undefined, 'tracker after recovery', 0, tr.index);
      await s.leaders.first((i) => i.leader === 'me', 'leader observer sees the leader');
      // An observer "from now" fixes its start when it first reaches etcd, and says so with
      // `connected`; a write before that may precede its start (its read of "now" retries on
      // its own backoff, so under load it can come after the others recovered).
      await s.observer.first(
        (e) => e.type === 'status' && e.state === 'connected',
        'observer connected',
        0,
        ob.index,
      );
      await conn.client.put(conn.constructPath('x', 'o', 'k')).value('v');
      await s.observer.first(
        (e) => e.type === 'put' && e.key.endsWith('/o/k'),
        'observer event after recovery',
      );
      await conn.close();
    });
  }
});

void describe('no silent waits: an observer from now that starts while etcd is refused', () => {
  const suite = etcdSuite();

  void test('its `connected` marks "now": a write before it is not delivered, every write after it is', async (t) => {
    // A closed port refuses every connection; the proxy comes back on the same port later.
    const first = await startProxy(suite.endpoint);
    const port = Number(new URL(first.endpoint).port);
    await first.close();
    const ns = uniqueName('nsw');
    const conn = new EtcdConnector([first.endpoint], ns, {
      dialTimeoutMs: DIAL_MS,
      callTimeoutMs: 2000,
    });
    const direct = new EtcdConnector(suite.etcd.endpoints, ns);
    const proxies: FaultProxy[] = [];
    t.after(async () => {
      await Promise.all([conn.close(), direct.close(), ...proxies.map((p) => p.close())]);
    });
    const path = conn.constructPath('now');
    const observer = new Reader(conn.newObserver(path).start({ recursive: true }));
    const down = await observer.first(
      (e) => e.type === 'status' && e.state === 'unavailable',
      'observer unavailable',
    );
    // Written while the observer cannot have read "now": before its start, not delivered.
    const before = Number(
      (await direct.client.put(`${path}/before`).value('b').exec()).header.revision,
    );
    proxies.push(await startProxy(suite.endpoint, { port }));
    const up = await observer.first(
      (e) => e.type === 'status' && e.state === 'connected',
      'observer connected',
      0,
      down.index,
    );
    const after = Number(
      (await direct.client.put(`${path}/after`).value('a').exec()).header.revision,
    );
    await observer.first(
      (e) => e.type === 'put' && e.revision === after,
      'the write after `connected`',
    );
    const changes = observer.items.flatMap(({ item }) => (item.type === 'put' ? [item] : []));
    assert.deepEqual(
      changes.map((c) => c.key),
      [`${path}/after`],
      `before: revision ${before}; connected at index ${up.index}`,
    );
  });
});

void describe('no silent waits: final errors end the streams', () => {
  let etcd: EtcdCluster;
  let tls: TlsMaterial;
  let tlsEtcd: EtcdCluster;

  before(async () => {
    [etcd, tls] = await Promise.all([startEtcd(), makeTlsMaterial()]);
    tlsEtcd = await startEtcd({ tls });
    await enableAuth(tlsEtcd, { rootPassword: 'tlsroot' });
    await enableAuth(etcd, {
      rootPassword: 'rootpw',
      users: [
        {
          name: 'alice',
          password: 'alicepw',
          permissions: [{ prefix: '/ok/', permission: 'readwrite' }],
        },
      ],
    });
  });
  after(async () => {
    await Promise.all([etcd.stop(), tlsEtcd.stop()]);
  });

  async function assertAllEnd(
    endpoints: readonly string[],
    ns: string,
    options: EtcdConnectorOptions,
    expected: new (...args: never[]) => Error,
    path = 'x',
  ): Promise<void> {
    const conn = new EtcdConnector(endpoints, ns, { dialTimeoutMs: DIAL_MS, ...options });
    try {
      const s = startAll(conn, path);
      const errors = await Promise.all([
        endsWith(s.elector, 'elector'),
        endsWith(s.observer, 'observer'),
        endsWith(s.tracker, 'tracker'),
        endsWith(s.leaders, 'leader observer'),
      ]);
      for (const err of errors) {
        assert.ok(err instanceof expected, `${expected.name} expected, got ${String(err)}`);
        assert.equal((err as { retryable?: boolean }).retryable, false);
      }
    } finally {
      await conn.close();
    }
  }

  void test('a wrong password: AuthenticationFailedError ends every stream', async () => {
    await assertAllEnd(
      etcd.endpoints,
      'ok',
      { auth: { username: 'alice', password: 'wrong' } },
      AuthenticationFailedError,
    );
  });

  void test('no credentials where auth is on: AuthenticationFailedError', async () => {
    await assertAllEnd(etcd.endpoints, 'ok', {}, AuthenticationFailedError);
  });

  void test('a forbidden prefix: PermissionDeniedError ends every stream', async () => {
    await assertAllEnd(
      etcd.endpoints,
      'secret',
      { auth: { username: 'alice', password: 'alicepw' } },
      PermissionDeniedError,
    );
  });

  void test('a CA that did not sign the server: TlsError ends every stream', async () => {
    await assertAllEnd(tlsEtcd.endpoints, 'tls', { tls: { ca: tls.otherCa.cert } }, TlsError);
  });

  void test('the right CA works (with auth), and Node prints no TLS server-name warning (DEP0123)', async () => {
    // In a child process: Node warns once per process, so an earlier test could hide it here.
    const run = async (raw: boolean): Promise<string> => {
      const child = spawn(process.execPath, [TLS_CHILD], {
        env: {
          ...process.env,
          ENDPOINTS: tlsEtcd.endpoints.join(','),
          CA: tls.ca.cert,
          ROOT_PASSWORD: 'tlsroot',
          RAW: raw ? '1' : '0',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const [exitCode] = (await withTimeout(
        once(child, 'exit'),
        testTimeout(20_000),
        'the TLS child',
      )) as [number | null];
      assert.equal(exitCode, 0, out);
      assert.match(out, /done/);
      return out;
    };
    assert.match(await run(true), /DEP0123/, 'a plain etcd3 client does trigger the warning');
    assert.doesNotMatch(await run(false), /DEP0123/);
  });

  void test('etcdc exits 1 on a final error instead of waiting forever', async () => {
    const env = { ETCDC_ENDPOINTS: etcd.endpoints.join(',') };
    const elect = await runCli(
      ['--namespace', 'secret', '--user', 'alice:alicepw', '--json', 'elect', 'jobs', 'me'],
      { env },
    );
    assert.equal(elect.code, 1, elect.describe);
    assert.match(elect.stderr, /ETCDC_PERMISSION_DENIED/, elect.describe);
    const observe = await runCli(
      ['--namespace', 'ok', '--user', 'alice:wrong', 'observe', 'x', '--prefix'],
      { env },
    );
    assert.equal(observe.code, 1, observe.describe);
    assert.match(observe.stderr, /authentication failed/i, observe.describe);
  });
});
