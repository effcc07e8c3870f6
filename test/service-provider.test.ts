/**
 * ServiceProvider (Curator's ServiceProvider on Go's endpoint format) against a real etcd: each
 * strategy, the filter, the down-instance policy, no instance, and what pick() does before its
 * first listing.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  AbortError,
  ClosedError,
  EtcdConnector,
  NoInstanceError,
  TimeoutError,
  UnavailableError,
  type EndpointRegistration,
  type ServiceEndpoint,
  type ServiceProvider,
} from '../src/index.js';
import { testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

/** How often each address was picked. */
function tally(picked: readonly ServiceEndpoint[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const e of picked) counts[e.addr] = (counts[e.addr] ?? 0) + 1;
  return counts;
}

async function picks(provider: ServiceProvider, n: number): Promise<ServiceEndpoint[]> {
  const out: ServiceEndpoint[] = [];
  for (let i = 0; i < n; i++) out.push(await provider.pick());
  return out;
}

void describe('ServiceProvider', () => {
  const suite = etcdSuite();

  /** Registers `addrs` (zone a for even ports, b for odd) under `path`. */
  async function register(
    conn: EtcdConnector,
    path: string,
    addrs: readonly string[],
  ): Promise<EndpointRegistration[]> {
    const regs = addrs.map((addr) =>
      conn.newEndpointRegistration(path, addr, {
        ttl: 5,
        metadata: { zone: Number(addr.split(':')[1]) % 2 === 0 ? 'a' : 'b' },
      }),
    );
    for (const r of regs) await r.register();
    return regs;
  }

  /** Waits until the provider sees exactly `n` instances (picks fail or answer from them). */
  async function sees(provider: ServiceProvider, addrs: readonly string[]): Promise<void> {
    await waitFor(
      async () => {
        const seen = new Set((await picks(provider, addrs.length * 4)).map((e) => e.addr));
        return seen.size === addrs.length && addrs.every((a) => seen.has(a));
      },
      { timeoutMs: testTimeout(5000), intervalMs: 10, message: `sees ${addrs.join(', ')}` },
    );
  }

  void test('round-robin (default): each instance in turn, in key order', async () => {
    const conn = suite.connect(uniqueName('prov'));
    const path = conn.constructPath('grpc', 'rr');
    const addrs = ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80'];
    await register(conn, path, addrs);
    const provider = conn.newServiceProvider(path);
    assert.equal(provider.strategy, 'round-robin');
    const picked = await picks(provider, 30);
    assert.deepEqual(tally(picked), { '10.0.0.1:80': 10, '10.0.0.2:80': 10, '10.0.0.3:80': 10 });
    // In turn: every window of three holds all three, in key order.
    const order = picked.map((e) => e.addr);
    for (let i = 3; i < order.length; i++) assert.equal(order[i], order[i - 3]);
    const start = addrs.indexOf(order[0] ?? '');
    assert.deepEqual(
      order.slice(0, 3),
      [0, 1, 2].map((k) => addrs[(start + k) % 3]),
    );
    const first = picked[0];
    assert.ok(first !== undefined);
    assert.deepEqual(first.metadata, { zone: Number(first.addr.split(':')[1]) % 2 ? 'b' : 'a' });
    assert.equal(first.key, `${path}/${first.addr}`);
    await provider.stop();
  });

  void test('random: every instance, evenly within chance', async () => {
    const conn = suite.connect(uniqueName('prov'));
    const path = conn.constructPath('grpc', 'random');
    await register(conn, path, ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80']);
    const provider = conn.newServiceProvider(path, { strategy: 'random' });
    const counts = tally(await picks(provider, 600));
    assert.equal(Object.keys(counts).length, 3);
    // Binomial(600, 1/3): mean 200, sd 11.5; 120..280 is seven sd.
    for (const [addr, n] of Object.entries(counts)) assert.ok(n > 120 && n < 280, `${addr}: ${n}`);
    // Not round robin in disguise: some instance comes twice in a row.
    const seq = (await picks(provider, 60)).map((e) => e.addr);
    assert.ok(seq.some((a, i) => i > 0 && a === seq[i - 1]));
    await provider.stop();
  });

  void test('sticky: the same instance until it goes or is marked down', async () => {
    const conn = suite.connect(uniqueName('prov'));
    const path = conn.constructPath('grpc', 'sticky');
    const regs = await register(conn, path, ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80']);
    const provider = conn.newServiceProvider(path, {
      strategy: 'sticky',
      downInstancePolicy: { errorThreshold: 1, downMs: 60_000 },
    });
    const first = await provider.pick();
    assert.deepEqual(Object.keys(tally(await picks(provider, 20))), [first.addr]);
    // Marked down: another one, kept in turn.
    provider.noteError(first);
    assert.equal(provider.isDown(first), true);
    const second = await provider.pick();
    assert.notEqual(second.addr, first.addr);
    assert.deepEqual(Object.keys(tally(await picks(provider, 20))), [second.addr]);
    // Deregistered: the last one left.
    await regs.find((r) => r.addr === second.addr)?.stop();
    const third = await waitFor(
      async () => {
        const e = await provider.pick();
        return e.addr !== second.addr ? e : undefined;
      },
      { timeoutMs: testTimeout(5000), intervalMs: 10, message: 'moved off the deregistered one' },
    );
    assert.ok(third.addr !== first.addr && third.addr !== second.addr);
    assert.deepEqual(Object.keys(tally(await picks(provider, 20))), [third.addr]);
    await provider.stop();
  });

  void test('filter: only matching instances; none matching is a NoInstanceError that says so', async () => {
    const conn = suite.connect(uniqueName('prov'));
    const path = conn.constructPath('grpc', 'filter');
    await register(conn, path, ['10.0.0.1:80', '10.0.0.2:81', '10.0.0.3:82']);
    const zoneB = conn.newServiceProvider(path, {
      filter: (e) => (e.metadata as { zone?: string } | null)?.zone === 'b',
    });
    assert.deepEqual(tally(await picks(zoneB, 5)), { '10.0.0.2:81': 5 });
    const none = conn.newServiceProvider(path, { filter: () => false });
    const err = await none.pick().then(
      () => assert.fail('picked'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof NoInstanceError);
    assert.deepEqual([err.registered, err.filtered, err.down], [3, 3, 0]);
    assert.equal(err.retryable, true);
    assert.equal(err.servicePath, path);
    await Promise.all([zoneB.stop(), none.stop()]);
  });

  void test('down-instance policy: N errors within the window skip an instance for downMs', async () => {
    const conn = suite.connect(uniqueName('prov'));
    const path = conn.constructPath('grpc', 'down');
    await register(conn, path, ['10.0.0.1:80', '10.0.0.2:80']);
    const windowMs = 400;
    const downMs = 600;
    const provider = conn.newServiceProvider(path, {
      downInstancePolicy: { errorThreshold: 2, windowMs, downMs },
    });
    const bad = await provider.pick();
    // One error, then the window passes: it does not count with the next one.
    provider.noteError(bad);
    const t0 = performance.now();
    await waitFor(() => performance.now() - t0 > windowMs, {
      timeoutMs: testTimeout(5000),
      message: 'the error window passed',
    });
    provider.noteError(bad.key);
    assert.equal(provider.isDown(bad), false, 'errors further apart than the window');
    // Two within the window: down, skipped by every pick.
    provider.noteError(bad);
    const downAt = performance.now();
    assert.equal(provider.isDown(bad), true);
    const during = await picks(provider, 10);
    assert.ok(
      during.every((e) => e.addr !== bad.addr),
      'a down instance is not picked',
    );
    // Both down: none to pick, and the error says why.
    const good = during[0];
    assert.ok(good !== undefined);
    provider.noteError(good);
    provider.noteError(good);
    const err = await provider.pick().then(
      () => assert.fail('picked'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof NoInstanceError);
    assert.deepEqual([err.registered, err.filtered, err.down], [2, 0, 2]);
    // After downMs it is back.
    await waitFor(() => !provider.isDown(bad), {
      timeoutMs: testTimeout(5000),
      intervalMs: 10,
      message: 'back after downMs',
    });
    const back = performance.now() - downAt;
    assert.ok(back >= downMs - 1, `down for ${back.toFixed(0)} ms`);
    await sees(provider, ['10.0.0.1:80', '10.0.0.2:80']);
    // Off: errors change nothing.
    const off = conn.newServiceProvider(path, { downInstancePolicy: false });
    const e = await off.pick();
    for (let i = 0; i < 5; i++) off.noteError(e);
    assert.equal(off.isDown(e), false);
    await Promise.all([provider.stop(), off.stop()]);
  });

  void test('no instance registered: NoInstanceError; one registering later is picked', async () => {
    const conn = suite.connect(uniqueName('prov'));
    const path = conn.constructPath('grpc', 'empty');
    const provider = conn.newServiceProvider(path);
    await assert.rejects(provider.pick(), (e: unknown) => {
      assert.ok(e instanceof NoInstanceError);
      assert.equal(e.registered, 0);
      assert.match(e.message, /no instance of .* is registered/);
      return true;
    });
    await register(conn, path, ['10.0.0.7:80']);
    await sees(provider, ['10.0.0.7:80']);
    await provider.stop();
  });

  void test('etcd unreachable before the first listing: pick() says so within the dial timeout; abort; stop; close', async () => {
    const ns = uniqueName('prov');
    const dead = suite.connect(ns, {
      endpoints: ['http://127.0.0.1:9'],
      dialTimeoutMs: 500,
      callTimeoutMs: 500,
    });
    const path = dead.constructPath('grpc', 'x');
    const provider = dead.newServiceProvider(path);
    const t0 = performance.now();
    const err = await withTimeout(
      provider.pick().then(
        () => assert.fail('picked'),
        (e: unknown) => e,
      ),
      testTimeout(5000),
      'pick against an unreachable etcd',
    );
    assert.ok(
      err instanceof UnavailableError || err instanceof TimeoutError,
      `unreachable: ${String(err)}`,
    );
    assert.ok(performance.now() - t0 < testTimeout(3000));
    // Abort while waiting: a second provider that has not heard anything yet.
    const other = dead.newServiceProvider(path);
    const controller = new AbortController();
    const waiting = other.pick({ signal: controller.signal });
    controller.abort();
    await assert.rejects(waiting, AbortError);
    await provider.stop();
    await assert.rejects(provider.pick(), ClosedError);
    await dead.close();
    await assert.rejects(other.pick(), ClosedError);

    // A live one: conn.close() ends it too.
    const conn = suite.connect(ns);
    const live = conn.newServiceProvider(conn.constructPath('grpc', 'y'));
    await assert.rejects(live.pick(), NoInstanceError);
    await conn.close();
    await assert.rejects(live.pick(), ClosedError);
  });
});
