import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { IRequestOp } from 'etcd3';
import {
  ClosedError,
  CompactedError,
  InvalidArgumentError,
  InvalidStateError,
  KeyExistsError,
  UnavailableError,
  type ServiceData,
} from '../src/index.js';
import { startProxy, testTimeout, uniqueName, waitFor } from '../src/testing/index.js';
import { PersistentMap } from '../src/engines/persistent-map.js';
import { Child } from './fixtures/elector-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

/** Reads a tracker's stream in the background, keeping every state it yields. */
class Reader {
  readonly items: ServiceData[] = [];
  readonly done: Promise<void>;

  constructor(stream: AsyncIterable<ServiceData>) {
    this.done = (async () => {
      for await (const d of stream) this.items.push(d);
    })();
  }

  get last(): ServiceData | undefined {
    return this.items[this.items.length - 1];
  }

  async until(match: (d: ServiceData) => boolean, what: string, ms = 10000): Promise<ServiceData> {
    return waitFor(() => this.items.find(match), {
      timeoutMs: testTimeout(ms),
      intervalMs: 10,
      message: what,
    });
  }
}

function sameEntries(map: ReadonlyMap<string, string>, truth: Record<string, string>): boolean {
  const keys = Object.keys(truth);
  return map.size === keys.length && keys.every((k) => map.get(k) === truth[k]);
}

void describe('ServiceTracker and ServiceRegistration', () => {
  const suite = etcdSuite({ members: 3, connector: { watchSilenceMs: 300 } });

  /** The instances under `path` as etcd has them now. */
  async function truth(path: string): Promise<Record<string, string>> {
    const all = await suite.client
      .getAll()
      .prefix(path + '/')
      .strings();
    return Object.fromEntries(Object.entries(all).map(([k, v]) => [k.slice(path.length + 1), v]));
  }

  test('bad input is refused before any I/O; start twice, stop twice, calls after stop', async () => {
    const ns = uniqueName('tr');
    const conn = suite.connect(ns, { endpoints: ['http://127.0.0.1:9'] });
    const path = conn.constructPath('services', 'svc');
    for (const p of ['', 'rel', '/elsewhere/svc', `/${ns}/a/../b`, `/${ns}/a\0`]) {
      assert.throws(() => conn.newServiceTracker(p), InvalidArgumentError, p);
    }
    assert.throws(() => conn.newServiceTracker(path, { pageSize: 0 }), InvalidArgumentError);
    for (const instance of ['', 'a/b', '.', '..', 'a\0b', 3 as unknown as string]) {
      assert.throws(() => conn.newRegistration(path, instance), InvalidArgumentError);
    }
    assert.throws(() => conn.newRegistration('relative', 'a'), InvalidArgumentError);
    const reg = conn.newRegistration(path, 'i1');
    await assert.rejects(reg.register('v', 0), InvalidArgumentError);
    await assert.rejects(reg.register('v', 1.5), InvalidArgumentError);
    assert.equal(reg.registered, false);

    const tracker = conn.newServiceTracker(path);
    const r = new Reader(tracker.start());
    assert.throws(() => tracker.start(), InvalidStateError);
    // etcd is unreachable here: the tracker says so, and stop() still ends everything.
    const down = await r.until((d) => d.error !== undefined, 'an error state');
    assert.ok(down.error instanceof UnavailableError || down.error?.name === 'TimeoutError');
    assert.equal(down.services.size, 0);
    await tracker.stop();
    await tracker.stop();
    await tracker[Symbol.asyncDispose]();
    await r.done;
    assert.throws(() => tracker.start(), ClosedError);
    await reg.stop();
    await reg[Symbol.asyncDispose]();
  });

  test('the persistent map behind ServiceData: snapshots stay intact, order is sorted', () => {
    const model = new Map<string, string>();
    let map = PersistentMap.from([
      ['b', '1'],
      ['a', '0'],
      ['b', '2'],
    ]);
    model.set('a', '0').set('b', '2');
    const snapshots: [PersistentMap, [string, string][]][] = [];
    for (let i = 0; i < 3000; i++) {
      const key = `k${(i * 7919) % 500}`;
      if (i % 3 === 2) {
        map = map.delete(key);
        model.delete(key);
      } else {
        map = map.set(key, String(i));
        model.set(key, String(i));
      }
      if (i % 500 === 0) snapshots.push([map, [...model].sort(([x], [y]) => (x < y ? -1 : 1))]);
    }
    const sorted = [...model].sort(([x], [y]) => (x < y ? -1 : 1));
    assert.deepEqual([...map], sorted);
    assert.equal(map.size, model.size);
    for (const [k, v] of model) assert.equal(map.get(k), v);
    assert.equal(map.has('nope'), false);
    for (const [snap, want] of snapshots) assert.deepEqual([...snap.entries()], want);
    assert.equal(PersistentMap.empty.size, 0);
  });

  test('2,000 instances all in the first map; one added or removed shows up quickly', async () => {
    const ns = uniqueName('tr');
    const conn = suite.connect(ns);
    const path = conn.constructPath('services', 'big');
    const lease = suite.client.lease(30, { autoKeepAlive: false });
    suite.defer(() => lease.revoke().catch(() => undefined));
    const leaseId = await lease.grant();
    for (let start = 0; start < 2000; start += 125) {
      const puts: IRequestOp[] = [];
      for (let i = start; i < start + 125; i++) {
        const key = Buffer.from(`${path}/inst-${String(i).padStart(4, '0')}`);
        puts.push({
          request_put: { key, value: Buffer.from(`10.0.${i >> 8}.${i & 255}:80`), lease: leaseId },
        });
      }
      await suite.client.kv.txn({ success: puts });
    }
    // A key that only shares the prefix string is not an instance.
    await suite.client.put(`${path}x/other`).value('no');

    const tracker = conn.newServiceTracker(path, { pageSize: 300 });
    const r = new Reader(tracker.start());
    const first = await r.until(() => true, 'first map');
    assert.equal(first.error, undefined);
    assert.equal(first.services.size, 2000);
    assert.equal(first.services.get('inst-0000'), '10.0.0.0:80');
    assert.equal(first.services.get('inst-1999'), '10.0.7.207:80');
    assert.equal(first.services.has('x/other'), false);
    assert.ok(sameEntries(first.services, await truth(path)));
    const names = [...first.services.keys()];
    assert.deepEqual(names, [...names].sort(), 'sorted by name');

    const reg = conn.newRegistration(path, 'new-one');
    const t0 = performance.now();
    await reg.register('10.1.1.1:80', 2);
    const added = await r.until((d) => d.services.get('new-one') === '10.1.1.1:80', 'added');
    assert.equal(added.services.size, 2001);
    assert.ok(performance.now() - t0 < testTimeout(1000));
    await reg.update('10.1.1.1:81');
    await r.until((d) => d.services.get('new-one') === '10.1.1.1:81', 'updated');
    await reg.stop();
    const removed = await r.until(
      (d) => d.revision > added.revision && !d.services.has('new-one'),
      'removed',
    );
    assert.equal(removed.services.size, 2000);
    // Every emitted map is a snapshot: later changes did not touch it.
    assert.equal(first.services.size, 2000);
    assert.equal(added.services.get('new-one'), '10.1.1.1:80');
    const json = JSON.parse(JSON.stringify(added.services)) as Record<string, string>;
    assert.equal(json['new-one'], '10.1.1.1:80');
    await lease.revoke();
    const empty = await r.until((d) => d.services.size === 0, 'lease revoked: all gone');
    assert.ok(empty.revision > removed.revision);
    await tracker.stop();
    await r.done;
  });

  test('leaving the loop stops the tracker', async () => {
    const ns = uniqueName('tr');
    const conn = suite.connect(ns);
    const tracker = conn.newServiceTracker(conn.constructPath('services', 's'));
    for await (const d of tracker.start()) {
      assert.equal(d.services.size, 0);
      break;
    }
    await tracker.stop();
    assert.throws(() => tracker.start(), ClosedError);
  });

  test('kill -9 of an instance process removes it within TTL + 2 s', async () => {
    const ns = uniqueName('tr');
    const conn = suite.connect(ns);
    const path = conn.constructPath('services', 'svc');
    const args = [suite.etcd.endpoints.join(','), ns, path];
    const a = new Child('a', 'tracker-instance', [...args, 'a', 'host-a:1', '2']);
    const b = new Child('b', 'tracker-instance', [...args, 'b', 'host-b:1', '2']);
    suite.defer(() => a.kill());
    suite.defer(() => b.kill());
    await Promise.all([a, b].map((c) => c.waitLine((l) => l.event === 'registered', 'registered')));
    // The name is taken by a live process: a second registration is refused, nothing written.
    const twin = conn.newRegistration(path, 'a');
    await assert.rejects(twin.register('intruder', 2), KeyExistsError);
    assert.equal(twin.registered, false);
    assert.equal(await suite.client.get(`${path}/a`).string(), 'host-a:1');
    const tracker = conn.newServiceTracker(path);
    const r = new Reader(tracker.start());
    await r.until((d) => d.services.size === 2, 'both registered');
    const t0 = performance.now();
    await a.kill();
    const after = await r.until((d) => d.services.size === 1, 'a removed');
    const took = performance.now() - t0;
    assert.ok(took < testTimeout(4000), `removed after ${took.toFixed(0)} ms (TTL 2 s)`);
    assert.equal(after.services.get('b'), 'host-b:1');
    // A clean exit deregisters at once.
    b.child.stdin?.end();
    assert.equal(await b.exited, 0);
    await r.until((d) => d.services.size === 0, 'b deregistered');
    await tracker.stop();
  });

  test('a tracker cut off while history is compacted converges to the true set', async () => {
    const ns = uniqueName('tr');
    const endpoint = suite.etcd.endpoints[0];
    assert.ok(endpoint !== undefined);
    const proxy = await startProxy(endpoint);
    suite.defer(() => proxy.close());
    const conn = suite.connect(ns, { endpoints: [proxy.endpoint] });
    const path = conn.constructPath('services', 'svc');
    for (let i = 0; i < 10; i++) await suite.client.put(`${path}/i${i}`).value(`v${i}`);
    const tracker = conn.newServiceTracker(path);
    const r = new Reader(tracker.start());
    await r.until((d) => d.services.size === 10, 'initial set');
    proxy.blackhole();
    for (let i = 0; i < 5; i++) await suite.client.delete().key(`${path}/i${i}`);
    for (let i = 10; i < 15; i++) await suite.client.put(`${path}/i${i}`).value(`v${i}`);
    await suite.client.put(`${path}/i7`).value('changed');
    const rev = (await suite.client.get('nothing').exec()).header.revision;
    await suite.client.kv.compact({ revision: rev, physical: true });
    await r.until((d) => d.error instanceof UnavailableError, 'the tracker noticed the cut');
    proxy.pass();
    const want = await truth(path);
    const converged = await r.until(
      (d) => sameEntries(d.services, want) && d.revision >= Number(rev),
      'converged to the true set',
      20000,
    );
    assert.equal(converged.services.get('i7'), 'changed');
    assert.ok(
      r.items.some((d) => d.error instanceof CompactedError),
      'compaction was reported',
    );
    // And it keeps following afterwards.
    await suite.client.put(`${path}/late`).value('x');
    await r.until((d) => d.services.get('late') === 'x', 'a change after the resync');
    await tracker.stop();
  });
});
