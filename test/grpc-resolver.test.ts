/**
 * `etcd-connector/grpc` against real processes: @grpc/grpc-js servers in child processes register
 * themselves in Go's naming/endpoints format (test/fixtures/grpc-server.ts), and a grpc-js client
 * in this process dials `etcd:///<servicePath>` through registerEtcdResolver.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { EtcdConnector, InvalidArgumentError } from '../src/index.js';
import { registerEtcdResolver } from '../src/grpc/index.js';
import { testTimeout, uniqueName, waitFor } from '../src/testing/index.js';
import { Child } from './fixtures/elector-harness.js';
import { startGoPeer } from './fixtures/go-peer.js';
import { who } from './fixtures/grpc-echo.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

/** Lease TTL of the servers' registrations, in seconds. */
const TTL = 2;

/** How many calls each server answered. */
function tally(ids: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const id of ids) counts[id] = (counts[id] ?? 0) + 1;
  return counts;
}

void describe('registerEtcdResolver: a grpc-js client dialling etcd:///<servicePath>', () => {
  const suite = etcdSuite();

  function server(ns: string, path: string, id: string): Child {
    const child = new Child(id, 'grpc-server', [
      suite.etcd.endpoints.join(','),
      ns,
      path,
      id,
      String(TTL),
    ]);
    suite.defer(() => child.kill());
    return child;
  }

  function client(target: string): grpc.Client {
    const c = new grpc.Client(target, grpc.credentials.createInsecure());
    suite.defer(() => {
      c.close();
    });
    return c;
  }

  /** `n` calls one after the other: who answered each. */
  async function calls(c: grpc.Client, n: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) ids.push(await who(c, testTimeout(2000)));
    return ids;
  }

  /**
   * Calls until `streak` calls in a row succeed (none answered by `not`); returns when the streak
   * began and how many calls failed before.
   */
  async function untilAllSucceed(
    c: grpc.Client,
    what: string,
    not: string,
    streak = 20,
  ): Promise<{ since: number; failures: number }> {
    let run = 0;
    let since = 0;
    let failures = 0;
    await waitFor(
      async () => {
        try {
          const id = await who(c, 300);
          assert.notEqual(id, not, `${not} answered`);
          if (run++ === 0) since = performance.now();
        } catch (err) {
          if (err instanceof assert.AssertionError) throw err;
          failures++;
          run = 0;
        }
        return run >= streak;
      },
      { timeoutMs: testTimeout(15000), intervalMs: 5, message: what },
    );
    return { since, failures };
  }

  void test('3 servers: round robin; kill -9 one: all calls succeed again within TTL + 2 s; a 4th gets calls within 1 s', async (t) => {
    const ns = uniqueName('grpc');
    const conn = suite.connect(ns);
    const path = conn.constructPath('grpc', 'echo');
    const servers = ['s1', 's2', 's3'].map((id) => server(ns, path, id));
    await Promise.all(servers.map((s) => s.waitLine((l) => l.event === 'ready', 'ready')));
    registerEtcdResolver(conn);
    const c = client(`etcd:///${path.slice(1)}`);

    // Subchannels connect in the background; round robin uses the ready ones.
    const seen = new Set<string>();
    await waitFor(async () => seen.add(await who(c, testTimeout(2000))).size === 3, {
      timeoutMs: testTimeout(10000),
      message: 'every server answered once',
    });
    assert.deepEqual(tally(await calls(c, 30)), { s1: 10, s2: 10, s3: 10 }, 'round robin');

    const [s1] = servers;
    assert.ok(s1 !== undefined);
    const t0 = performance.now();
    await s1.kill();
    const { since } = await untilAllSucceed(c, 'all calls succeed after kill -9 of s1', 's1');
    const recovered = since - t0;
    assert.ok(
      recovered < testTimeout((TTL + 2) * 1000),
      `calls all succeeded again ${recovered.toFixed(0)} ms after the kill (TTL ${TTL} s)`,
    );
    // Its registration goes with its lease: the client's list then holds only the live ones.
    const tracker = conn.newEndpointTracker(path);
    for await (const data of tracker.start()) {
      if (data.endpoints.size === 2) break;
    }
    const gone = performance.now() - t0;
    assert.ok(gone < testTimeout((TTL + 2) * 1000), `s1 deregistered after ${gone.toFixed(0)} ms`);
    t.diagnostic(
      `kill -9: calls all succeed again after ${recovered.toFixed(0)} ms; ` +
        `deregistered after ${gone.toFixed(0)} ms`,
    );
    assert.deepEqual(tally(await calls(c, 20)), { s2: 10, s3: 10 });

    const s4 = server(ns, path, 's4');
    await s4.waitLine((l) => l.event === 'ready', 's4 ready');
    const registered = performance.now();
    await waitFor(async () => (await who(c, testTimeout(2000))) === 's4', {
      timeoutMs: testTimeout(5000),
      intervalMs: 5,
      message: 's4 gets a call',
    });
    const took = performance.now() - registered;
    assert.ok(
      took < testTimeout(1000),
      `s4 got its first call ${took.toFixed(0)} ms after it registered`,
    );
    t.diagnostic(`s4 got its first call ${took.toFixed(0)} ms after it registered`);
    assert.deepEqual(tally(await calls(c, 30)), { s2: 10, s3: 10, s4: 10 }, 'round robin again');
    c.close();
  });

  void test('SIGSTOP of a server: calls to it fail only until its lease expires; on SIGCONT it is back', async (t) => {
    const ns = uniqueName('grpc');
    const conn = suite.connect(ns);
    const path = conn.constructPath('grpc', 'echo');
    const [a, b] = ['a', 'b'].map((id) => server(ns, path, id));
    assert.ok(a !== undefined && b !== undefined);
    await Promise.all([a, b].map((s) => s.waitLine((l) => l.event === 'ready', 'ready')));
    registerEtcdResolver(conn);
    // Four slashes name the same absolute path (what a Go client dials: Go strips one).
    const c = client(`etcd:////${path.slice(1)}`);
    const seen = new Set<string>();
    await waitFor(async () => seen.add(await who(c, testTimeout(2000))).size === 2, {
      timeoutMs: testTimeout(10000),
      message: 'both servers answered',
    });

    // A stopped process keeps its TCP connections: only its removal from the list helps.
    const t0 = performance.now();
    a.child.kill('SIGSTOP');
    const { since, failures } = await untilAllSucceed(c, 'all calls succeed without a', 'a');
    assert.ok(failures > 0, 'calls routed to the stopped server failed until it was removed');
    const recovered = since - t0;
    assert.ok(
      recovered < testTimeout((TTL + 2) * 1000),
      `calls all succeeded again ${recovered.toFixed(0)} ms after SIGSTOP (TTL ${TTL} s)`,
    );

    t.diagnostic(`SIGSTOP: calls all succeed again after ${recovered.toFixed(0)} ms`);
    // Resumed: its lease is lost, the registration is put back under a new one, calls return.
    a.child.kill('SIGCONT');
    await waitFor(async () => (await who(c, testTimeout(2000))) === 'a', {
      timeoutMs: testTimeout(10000),
      intervalMs: 10,
      message: 'a answers again after SIGCONT',
    });
    await a.waitLine((l) => l.event === 'error' && l.error?.name === 'SessionLostError', 'a lost');
    c.close();
  });

  void test('no instance, a bad path, a closed connector: calls fail UNAVAILABLE and say why', async () => {
    const ns = uniqueName('grpc');
    const conn = suite.connect(ns);
    registerEtcdResolver(conn, { scheme: 'etcd-bad' });
    const call = async (target: string): Promise<grpc.ServiceError> => {
      const c = client(target);
      const err = await who(c, testTimeout(3000)).then(
        () => assert.fail('the call succeeded'),
        (e: unknown) => e as grpc.ServiceError,
      );
      c.close();
      return err;
    };
    const empty = await call(`etcd-bad:///${ns}/grpc/none`);
    assert.equal(empty.code, grpc.status.UNAVAILABLE);
    assert.match(empty.details, new RegExp(`no instance registered under /${ns}/grpc/none`));
    const malformed = await call(`etcd-bad:///${ns}/grpc/%zz`);
    assert.equal(malformed.code, grpc.status.UNAVAILABLE);
    assert.match(malformed.details, /malformed percent-encoding/);
    const outside = await call('etcd-bad:///elsewhere/x');
    assert.equal(outside.code, grpc.status.UNAVAILABLE);
    assert.match(outside.details, /outside the namespace/);
    await conn.close();
    const closed = await call(`etcd-bad:///${ns}/grpc/none`);
    assert.equal(closed.code, grpc.status.UNAVAILABLE);
    assert.match(closed.details, /closed/);

    assert.throws(() => {
      registerEtcdResolver({} as unknown as EtcdConnector);
    }, InvalidArgumentError);
    assert.throws(() => {
      registerEtcdResolver(conn, { scheme: 'Not a scheme' });
    }, InvalidArgumentError);
  });

  void test('a target path is percent-decoded, as Go reads it', async () => {
    const ns = uniqueName('grpc');
    const conn = suite.connect(ns);
    const path = conn.constructPath('grpc', 'my svc');
    const s = server(ns, path, 'spaced');
    await s.waitLine((l) => l.event === 'ready', 'ready');
    registerEtcdResolver(conn);
    const c = client(`etcd:///${ns}/grpc/my%20svc`);
    assert.equal(await who(c, testTimeout(5000)), 'spaced');
  });

  void test('an endpoint a Go peer registered (endpoints.Manager) is dialled too', async () => {
    const ns = uniqueName('grpc');
    const conn = suite.connect(ns);
    const path = conn.constructPath('grpc', 'go');
    const node = server(ns, conn.constructPath('grpc', 'node'), 'node');
    const ready = await node.waitLine((l) => l.event === 'ready', 'ready');
    const go = await startGoPeer({ endpoints: suite.etcd.endpoints, ttl: TTL });
    suite.defer(() => go.close());
    await go.ok({ cmd: 'endpoints.add', path, addr: ready.line.addr ?? '', withLease: true });
    registerEtcdResolver(conn);
    const c = client(`etcd:///${path.slice(1)}`);
    assert.equal(await who(c, testTimeout(5000)), 'node');
    // Go revokes its lease: the endpoint is gone and calls have nowhere to go.
    await go.close();
    await waitFor(
      () =>
        who(c, 300).then(
          () => false,
          (e: unknown) => (e as grpc.ServiceError).code === grpc.status.UNAVAILABLE,
        ),
      { timeoutMs: testTimeout(5000), message: 'the Go endpoint is gone from the list' },
    );
    c.close();
  });
});
