import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { noop } from 'cockatiel';
import { Etcd3, GRPCDeadlineExceededError } from 'etcd3';
import {
  startClusterProxies,
  startEtcd,
  startProxy,
  testTimeout,
  uniqueName,
  waitFor,
  withTimeout,
  type EtcdCluster,
  type FaultProxy,
} from '../src/testing/index.js';

/**
 * A client that fails fast and never retries by itself: etcd3's default retry and circuit
 * breaker would hide (or prolong) exactly the faults these tests inject.
 */
function newClient(host: string, deadlineMs: number): Etcd3 {
  return new Etcd3({
    hosts: host,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + deadlineMs }),
    faultHandling: { host: () => noop, global: noop },
  });
}

/** Read through a call: after `assert.equal(proxy.connections, 0)` TS narrows the getter to 0. */
function openConnections(proxy: FaultProxy): number {
  return proxy.connections;
}

void describe('fault proxy in front of etcd', () => {
  let etcd: EtcdCluster;
  let proxy: FaultProxy;
  let client: Etcd3;
  const ns = uniqueName('proxy');

  before(async () => {
    etcd = await startEtcd();
    const endpoint = etcd.endpoints[0];
    assert.ok(endpoint !== undefined);
    proxy = await startProxy(endpoint);
    client = newClient(proxy.endpoint, 2000);
  });

  after(async () => {
    client.close();
    await proxy.close();
    await etcd.stop();
  });

  void test('pass forwards requests', async () => {
    assert.equal(proxy.mode, 'pass');
    assert.match(proxy.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
    await client.put(`${ns}/a`).value('1').exec();
    assert.equal(await client.get(`${ns}/a`).string(), '1');
    assert.ok(proxy.connections >= 1);
  });

  void test('blackhole stalls in-flight and new requests; pass lets them through again', async (t) => {
    await client.put(`${ns}/b`).value('before').exec();
    const connectionsBefore = proxy.connections;
    assert.ok(connectionsBefore >= 1);
    proxy.blackhole();
    t.after(() => {
      proxy.pass();
    });
    assert.equal(proxy.mode, 'blackhole');

    const started = Date.now();
    await assert.rejects(
      client
        .put(`${ns}/b`)
        .value('during')
        .options({ deadline: Date.now() + 1000 })
        .exec(),
      GRPCDeadlineExceededError,
    );
    assert.ok(Date.now() - started >= 900, 'the put failed by its deadline, not at once');
    assert.ok(proxy.connections >= connectionsBefore, 'the socket stays open');

    // A client connecting during the blackhole is accepted, but nothing flows either.
    const fresh = newClient(proxy.endpoint, 1000);
    try {
      await assert.rejects(fresh.get(`${ns}/b`).string(), GRPCDeadlineExceededError);
      assert.ok(proxy.connections > connectionsBefore, 'the new connection was accepted');
      proxy.pass();
      assert.equal(proxy.mode, 'pass');
      await client.put(`${ns}/b`).value('after').exec();
      assert.equal(await fresh.get(`${ns}/b`).string(), 'after');
    } finally {
      fresh.close();
    }
  });

  void test('reset drops every connection and the client reconnects', async () => {
    await client.put(`${ns}/c`).value('1').exec();
    assert.ok(proxy.connections >= 1);
    proxy.reset();
    assert.equal(proxy.connections, 0);
    assert.equal(proxy.mode, 'pass');
    // A put racing with the client noticing the RST fails with UNAVAILABLE (as in production);
    // the client must reconnect by itself and a following put succeed.
    await waitFor(
      async () => {
        await client.put(`${ns}/c`).value('2').exec();
        return true;
      },
      { timeoutMs: testTimeout(5000), intervalMs: 100, message: 'a put after reset' },
    );
    assert.equal(await client.get(`${ns}/c`).string(), '2');
    assert.ok(openConnections(proxy) >= 1, 'the client opened a new connection');
  });

  void test('delay holds every chunk for the given time', async (t) => {
    await client.put(`${ns}/d`).value('1').exec();
    proxy.delay(200);
    t.after(() => {
      proxy.pass();
    });
    assert.equal(proxy.mode, 'delay');
    const slow = newClient(proxy.endpoint, testTimeout(10000));
    try {
      const started = Date.now();
      assert.equal(await slow.get(`${ns}/d`).string(), '1');
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 200, `get took ${elapsed} ms, expected >= 200`);
      assert.ok(elapsed < testTimeout(10000), `get took ${elapsed} ms`);
    } finally {
      slow.close();
    }
  });

  void test('startClusterProxies gives one proxy per member, in order', async () => {
    const proxies = await startClusterProxies(etcd);
    try {
      assert.deepEqual(
        proxies.map((p) => p.target),
        etcd.endpoints,
      );
      const viaProxy = newClient(proxies[0]?.endpoint ?? '', 2000);
      try {
        assert.equal(await viaProxy.get(`${ns}/a`).string(), '1');
      } finally {
        viaProxy.close();
      }
    } finally {
      await Promise.all(proxies.map((p) => p.close()));
    }
  });
});

void describe('fault proxy on raw TCP', () => {
  let echo: Server;
  let echoPort: number;
  const sockets = new Set<Socket>();

  before(async () => {
    echo = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
      socket.pipe(socket);
    });
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    echoPort = (echo.address() as AddressInfo).port;
  });

  after(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => echo.close(resolve));
  });

  /** Connects through the proxy and collects what comes back. */
  async function open(proxy: FaultProxy): Promise<{ socket: Socket; received: () => Buffer }> {
    const url = new URL(proxy.endpoint);
    const socket = connect(Number(url.port), url.hostname);
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return { socket, received: () => Buffer.concat(chunks) };
  }

  void test('large transfers arrive intact (back-pressure, no loss)', async (t) => {
    const proxy = await startProxy(`127.0.0.1:${echoPort}`);
    t.after(() => proxy.close());
    const { socket, received } = await open(proxy);
    t.after(() => socket.destroy());
    const payload = randomBytes(8 * 1024 * 1024);
    socket.write(payload);
    await waitFor(() => received().length >= payload.length, {
      timeoutMs: testTimeout(20000),
      message: 'the echo of 8 MiB',
    });
    assert.ok(received().equals(payload));
  });

  void test('delay keeps order; blackhole holds data until pass', async (t) => {
    const proxy = await startProxy(`http://127.0.0.1:${echoPort}`);
    t.after(() => proxy.close());
    const { socket, received } = await open(proxy);
    t.after(() => socket.destroy());

    proxy.delay(100);
    const started = Date.now();
    socket.write('a');
    socket.write('b');
    socket.write('c');
    await waitFor(() => received().toString() === 'abc', {
      timeoutMs: testTimeout(5000),
      message: 'abc echoed in order',
    });
    assert.ok(Date.now() - started >= 100);

    proxy.blackhole();
    socket.write('d');
    // Absence can only be observed over a window: nothing may come back within it.
    await assert.rejects(
      waitFor(() => received().length > 3, { timeoutMs: 300 }),
      /timed out/,
    );
    assert.equal(proxy.connections, 1, 'the connection stays open');
    proxy.pass();
    await waitFor(() => received().toString() === 'abcd', {
      timeoutMs: testTimeout(5000),
      message: 'held data after pass()',
    });
  });

  void test('close is idempotent and refuses new connections', async () => {
    const proxy = await startProxy(`127.0.0.1:${echoPort}`);
    const { socket } = await open(proxy);
    const closed = new Promise((resolve) => socket.once('close', resolve));
    await proxy.close();
    await proxy.close();
    await proxy[Symbol.asyncDispose]();
    assert.equal(proxy.connections, 0);
    await withTimeout(closed, testTimeout(5000), 'client socket close');
    const url = new URL(proxy.endpoint);
    await assert.rejects(
      new Promise((resolve, reject) => {
        const s = connect(Number(url.port), url.hostname, () => {
          s.destroy();
          resolve(undefined);
        });
        s.once('error', reject);
      }),
      /ECONNREFUSED/,
    );
  });

  void test('rejects a target without a port', async () => {
    await assert.rejects(startProxy('127.0.0.1'), { code: 'ETCDC_INVALID_ARGUMENT' });
  });
});
