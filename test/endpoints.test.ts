/**
 * Endpoint registrations and the endpoint tracker (Go's naming/endpoints format) against a real
 * etcd, the real `etcdctl` and a real Go peer running etcd's own `endpoints.Manager`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import {
  ClosedError,
  CompactedError,
  InvalidArgumentError,
  InvalidStateError,
  KeyChangedError,
  KeyExistsError,
  SessionLostError,
  UnavailableError,
  type EndpointData,
} from '../src/index.js';
import {
  findEtcdBinary,
  startProxy,
  testTimeout,
  uniqueName,
  waitFor,
} from '../src/testing/index.js';
import { startGoPeer, type GoPeer } from './fixtures/go-peer.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

const execFileAsync = promisify(execFile);

/** Keeps every item of a stream, read in the background. */
class Log<T> {
  readonly items: T[] = [];
  readonly done: Promise<void>;

  constructor(stream: AsyncIterable<T>) {
    this.done = (async () => {
      for await (const item of stream) this.items.push(item);
    })();
  }

  get last(): T | undefined {
    return this.items[this.items.length - 1];
  }

  async until(match: (item: T) => boolean, what: string, from = 0, ms = 10000): Promise<T> {
    return waitFor(() => this.items.slice(from).find(match), {
      timeoutMs: testTimeout(ms),
      intervalMs: 10,
      message: what,
    });
  }
}

/** The endpoints of a state as `{ name: [addr, metadata] }`. */
function plain(d: EndpointData | undefined): Record<string, [string, unknown]> {
  return Object.fromEntries([...(d?.endpoints ?? [])].map(([n, e]) => [n, [e.addr, e.metadata]]));
}

/** Metadata that exercises Go's encoder: key order, HTML escaping, control and non-ASCII chars. */
const TRICKY = {
  zone: 'a<b>&c',
  weight: 2,
  ü: 'x\u2028y',
  nested: { z: [1, 2.5, true, null, 1e21], a: 'é\n\t"\\/' },
};
/** What Go's json.Marshal writes for TRICKY (keys sorted by bytes; 'ü' is C3 BC). */
const TRICKY_JSON = String.raw`{"nested":{"a":"é\n\t\"\\/","z":[1,2.5,true,null,1e+21]},"weight":2,"zone":"a\u003cb\u003e\u0026c","ü":"x\u2028y"}`;

void describe('endpoint registration and tracker (Go naming/endpoints)', () => {
  const suite = etcdSuite({ connector: { watchSilenceMs: 300 } });

  async function goPeer(): Promise<GoPeer> {
    const p = await startGoPeer({ endpoints: suite.etcd.endpoints, ttl: 10 });
    suite.defer(() => p.close());
    return p;
  }

  async function etcdctl(...args: string[]): Promise<string> {
    const { stdout } = await execFileAsync(
      findEtcdBinary('etcdctl'),
      [`--endpoints=${suite.etcd.endpoints.join(',')}`, ...args],
      { env: { ...process.env, ETCDCTL_API: '3' }, timeout: testTimeout(10000) },
    );
    return stdout;
  }

  /** The raw bytes of a key, and its lease in hex ('' = none), as etcdctl shows them. */
  async function stored(key: string): Promise<{ value: Buffer; lease: string } | undefined> {
    const out = await etcdctl('get', key, '-w', 'json');
    const exact = out.replace(/"lease":(\d+)/g, '"lease":"$1"');
    const kv = (JSON.parse(exact) as { kvs?: { value?: string; lease?: string }[] }).kvs?.[0];
    if (kv === undefined) return undefined;
    return {
      value: Buffer.from(kv.value ?? '', 'base64'),
      lease: kv.lease === undefined ? '' : BigInt(kv.lease).toString(16),
    };
  }

  void test('bad input is refused before any I/O', async () => {
    const ns = uniqueName('ep');
    // Nothing listens there: any I/O would fail differently.
    const conn = suite.connect(ns, { endpoints: ['http://127.0.0.1:9'] });
    const path = conn.constructPath('grpc', 'api');
    const reg = (addr: string, options?: object): unknown =>
      conn.newEndpointRegistration(path, addr, options);
    for (const p of ['', 'rel', '/elsewhere/x', `${path}/`]) {
      assert.throws(() => conn.newEndpointRegistration(p, 'h:1'), InvalidArgumentError, p);
      assert.throws(() => conn.newEndpointTracker(p), InvalidArgumentError, p);
      assert.throws(() => conn.newServiceProvider(p), InvalidArgumentError, p);
    }
    for (const addr of ['', 'h', 'h:0', 'h:70000', 'a/b:1', 'a b:1', '[nope]:1']) {
      assert.throws(() => reg(addr), InvalidArgumentError, addr);
    }
    const cyclic: Record<string, unknown> = {};
    cyclic.me = cyclic;
    for (const metadata of [NaN, { w: Infinity }, 5n, cyclic, () => 1]) {
      assert.throws(() => reg('h:1', { metadata }), InvalidArgumentError);
    }
    assert.throws(
      () => reg('h:1', { metadata: 'x'.repeat(2 * 1024 * 1024) }),
      InvalidArgumentError,
    );
    for (const ttl of [0, 1.5, -1]) assert.throws(() => reg('h:1', { ttl }), InvalidArgumentError);
    assert.throws(() => reg('h:1', { session: {} }), InvalidArgumentError);
    const ep = conn.newEndpointRegistration(path, '[::1]:50051', { metadata: { a: 1 } });
    assert.equal(ep.key, `${path}/[::1]:50051`);
    assert.equal(ep.value, '{"Op":0,"Addr":"[::1]:50051","Metadata":{"a":1}}');
    await assert.rejects(ep.update({ b: 2 }), InvalidStateError);
    assert.deepEqual(ep.metadata, { a: 1 }, 'a refused update changes nothing');
    await assert.rejects(ep.update(NaN), InvalidArgumentError);
    assert.throws(() => conn.newEndpointTracker(path, { pageSize: 0 }), InvalidArgumentError);
    for (const options of [
      { strategy: 'fastest' },
      { filter: 'zone-a' },
      { downInstancePolicy: { errorThreshold: 0 } },
      { downInstancePolicy: { windowMs: -1 } },
      { downInstancePolicy: { downMs: NaN } },
    ]) {
      assert.throws(
        () => conn.newServiceProvider(path, options as object),
        InvalidArgumentError,
        JSON.stringify(options),
      );
    }
    const provider = conn.newServiceProvider(path);
    assert.throws(() => {
      provider.noteError({} as never);
    }, InvalidArgumentError);
    await provider.stop();
    await assert.rejects(provider.pick(), ClosedError);
  });

  void test("the stored value is Go's, byte for byte: etcdctl shows it, a Go peer writes the same and lists ours", async () => {
    const ns = uniqueName('ep');
    const conn = suite.connect(ns);
    const path = conn.constructPath('grpc', 'api');
    const withMeta = conn.newEndpointRegistration(path, '127.0.0.1:5000', {
      metadata: TRICKY,
      ttl: 5,
    });
    const bare = conn.newEndpointRegistration(path, '127.0.0.1:5001', { ttl: 5 });
    await withMeta.register();
    await bare.register();
    const expected = `{"Op":0,"Addr":"127.0.0.1:5000","Metadata":${TRICKY_JSON}}`;
    assert.equal(withMeta.value, expected);
    const a = await stored(withMeta.key);
    assert.deepEqual(a?.value, Buffer.from(expected), 'field order, escaping, key order');
    assert.equal(a.lease, withMeta.leaseId, 'under the registration lease');
    const b = await stored(bare.key);
    assert.equal(b?.value.toString(), '{"Op":0,"Addr":"127.0.0.1:5001","Metadata":null}');
    // etcdctl get prints the value as it is.
    assert.equal(
      await etcdctl('get', withMeta.key, '--print-value-only'),
      `${expected}\n`,
      'etcdctl get shows the Go value',
    );

    // Go's own endpoints.Manager writes the very same bytes for the same endpoint.
    const go = await goPeer();
    const goTarget = conn.constructPath('grpc', 'from-go');
    await go.ok({ cmd: 'endpoints.add', path: goTarget, addr: '127.0.0.1:5000', metadata: TRICKY });
    assert.deepEqual((await stored(`${goTarget}/127.0.0.1:5000`))?.value, Buffer.from(expected));

    // Go lists ours; ours lists Go's.
    const listed = await go.ok({ cmd: 'endpoints.list', path });
    assert.deepEqual(listed.endpoints, {
      [withMeta.key]: { addr: '127.0.0.1:5000', metadata: JSON.parse(TRICKY_JSON) as unknown },
      [bare.key]: { addr: '127.0.0.1:5001', metadata: null },
    });
    await go.ok({ cmd: 'endpoints.add', path: goTarget, addr: '10.0.0.9:80', withLease: true });
    const fromGo = new Log(conn.newEndpointTracker(goTarget).start());
    const first = await fromGo.until((d) => d.endpoints.size === 2, 'the Go endpoints');
    assert.deepEqual(plain(first), {
      '10.0.0.9:80': ['10.0.0.9:80', null],
      '127.0.0.1:5000': ['127.0.0.1:5000', JSON.parse(TRICKY_JSON) as unknown],
    });
    assert.equal(first.endpoints.get('10.0.0.9:80')?.key, `${goTarget}/10.0.0.9:80`);
    // Go deletes one: the tracker follows.
    await go.ok({ cmd: 'endpoints.delete', path: goTarget, addr: '127.0.0.1:5000' });
    await fromGo.until((d) => d.endpoints.size === 1, 'the Go deletion');

    // An update is seen by Go and by our tracker; stop deletes at once.
    const ours = new Log(conn.newEndpointTracker(path).start());
    await ours.until((d) => d.endpoints.size === 2, 'ours listed');
    await withMeta.update({ zone: 'b' });
    assert.equal(
      (await stored(withMeta.key))?.value.toString(),
      '{"Op":0,"Addr":"127.0.0.1:5000","Metadata":{"zone":"b"}}',
    );
    await ours.until(
      (d) =>
        (d.endpoints.get('127.0.0.1:5000')?.metadata as { zone?: string } | null)?.zone === 'b',
      'update seen',
    );
    const relisted = await go.ok({ cmd: 'endpoints.list', path });
    assert.deepEqual((relisted.endpoints as Record<string, unknown>)[withMeta.key], {
      addr: '127.0.0.1:5000',
      metadata: { zone: 'b' },
    });
    await withMeta.stop();
    await bare.stop();
    assert.equal(await stored(withMeta.key), undefined, 'deleted at once');
    await ours.until((d) => d.endpoints.size === 0, 'both gone');
    await withMeta.stop(); // idempotent
    await withMeta[Symbol.asyncDispose]();
  });

  void test('foreign entries under the path are skipped and reported; the rest is read', async () => {
    const ns = uniqueName('ep');
    const conn = suite.connect(ns);
    const path = conn.constructPath('grpc', 'mixed');
    await suite.client.put(`${path}/plain`).value('10.0.0.1:80'); // a plain registration
    await suite.client.put(`${path}/nokey`).value('{"Op":0,"Metadata":{}}');
    await suite.client.put(`${path}/minimal`).value('{"Addr":"10.0.0.2:80"}'); // Go reads this
    await suite.client.put(`${path}-sibling/x`).value('{"Addr":"10.0.0.3:80"}'); // not under path/
    const log = new Log(conn.newEndpointTracker(path).start());
    const first = await log.until((d) => d.revision > 0, 'listed');
    assert.deepEqual(plain(first), { minimal: ['10.0.0.2:80', null] });
    assert.deepEqual(Object.fromEntries(first.skipped), { nokey: 'no Addr', plain: 'not JSON' });
    // A foreign entry turning into an endpoint, and back.
    await suite.client.put(`${path}/plain`).value('{"Op":0,"Addr":"10.0.0.1:80","Metadata":null}');
    await log.until((d) => d.endpoints.has('plain') && !d.skipped.has('plain'), 'fixed');
    const before = log.items.length;
    await suite.client.put(`${path}/plain`).value('[]');
    const broken = await log.until((d) => d.skipped.has('plain'), 'broken again', before);
    assert.equal(broken.skipped.get('plain'), 'not a JSON object (array)');
    assert.equal(broken.endpoints.has('plain'), false);
    await suite.client.delete().key(`${path}/plain`);
    await log.until((d) => !d.skipped.has('plain'), 'deleted');
  });

  void test('a registration is put back after etcdctl del and after its lease is revoked', async () => {
    const ns = uniqueName('ep');
    const conn = suite.connect(ns);
    const path = conn.constructPath('grpc', 'heal');
    const ep = conn.newEndpointRegistration(path, '10.1.1.1:7', { ttl: 2, metadata: { v: 1 } });
    const errors = new Log(await ep.register());
    const log = new Log(conn.newEndpointTracker(path).start());
    await log.until((d) => d.endpoints.size === 1, 'registered');
    const firstLease = ep.leaseId;

    const from = log.items.length;
    await etcdctl('del', ep.key);
    await errors.until((e) => e instanceof KeyChangedError, 'deletion reported');
    const deleted = await log.until((d) => d.endpoints.size === 0, 'seen deleted', from);
    await log.until((d) => d.endpoints.size === 1, 'put back', log.items.indexOf(deleted), 2000);
    assert.equal((await stored(ep.key))?.value.toString(), ep.value);

    await suite.client.leaseClient.leaseRevoke({ ID: BigInt(`0x${firstLease ?? '0'}`).toString() });
    await errors.until((e) => e instanceof SessionLostError, 'loss reported');
    await waitFor(async () => (await stored(ep.key))?.lease, {
      timeoutMs: testTimeout(5000),
      message: 'back under a lease',
    });
    const now = await stored(ep.key);
    assert.notEqual(now?.lease, firstLease, 'a new lease');
    assert.equal(now?.value.toString(), ep.value);

    // The same address twice in one connector would share its lease: refused.
    const twin = conn.newEndpointRegistration(path, '10.1.1.1:7');
    await assert.rejects(twin.register(), KeyExistsError);
    await ep.stop();
  });

  void test('the tracker converges after a blackhole with a compaction, and after connection resets', async () => {
    const ns = uniqueName('ep');
    const proxy = await startProxy(suite.endpoint);
    suite.defer(() => proxy.close());
    const conn = suite.connect(ns, { endpoints: [proxy.endpoint] });
    const path = conn.constructPath('grpc', 'far');
    const value = (i: number): string => `{"Op":0,"Addr":"10.0.0.${i}:80","Metadata":null}`;
    for (let i = 0; i < 6; i++) await suite.client.put(`${path}/i${i}`).value(value(i));
    const log = new Log(conn.newEndpointTracker(path).start());
    await log.until((d) => d.endpoints.size === 6, 'initial');
    proxy.blackhole();
    for (let i = 0; i < 3; i++) await suite.client.delete().key(`${path}/i${i}`);
    await suite.client.put(`${path}/i9`).value(value(9));
    await suite.client.put(`${path}/bad`).value('nope');
    const rev = (await suite.client.get('nothing').exec()).header.revision;
    await suite.client.kv.compact({ revision: rev, physical: true });
    await log.until((d) => d.error instanceof UnavailableError, 'the cut was noticed');
    proxy.pass();
    const converged = await log.until(
      (d) => d.endpoints.size === 4 && d.skipped.has('bad') && d.revision >= Number(rev),
      'converged',
      0,
      20000,
    );
    assert.deepEqual([...converged.endpoints.keys()], ['i3', 'i4', 'i5', 'i9']);
    assert.ok(
      log.items.some((d) => d.error instanceof CompactedError),
      'compaction reported',
    );

    // Connections reset: the watch resumes from its last revision, nothing is missed.
    proxy.reset();
    await suite.client.put(`${path}/i10`).value(value(10));
    await suite.client.delete().key(`${path}/i3`);
    await log.until(
      (d) => d.endpoints.has('i10') && !d.endpoints.has('i3') && d.endpoints.size === 4,
      'changes after the reset',
    );
    await conn.close();
    await proxy.close();
  });
});
