import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { IKeyValue } from 'etcd3';
import { EtcdConnector, type EphemeralKey } from '../src/index.js';
import { startProxy, testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { killOwner, startOwner } from './fixtures/eph-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

void describe('EphemeralKey', () => {
  const suite = etcdSuite();

  /** The key's record, with its lease in hex (as `eph.leaseId` reports it). */
  async function kv(key: string): Promise<IKeyValue | undefined> {
    const res = await suite.client.get(key).exec();
    const found = res.kvs[0];
    return found === undefined ? undefined : { ...found, lease: BigInt(found.lease).toString(16) };
  }

  function connect(ns: string): EtcdConnector {
    return new EtcdConnector(suite.etcd.endpoints, ns, { callTimeoutMs: 3000 });
  }

  void test('create, update, delete (gone at once), create again', async (t) => {
    const conn = connect(uniqueName('eph'));
    t.after(() => conn.close());
    const eph = conn.newEphemeralKey(conn.constructPath('services/svc', 'instance1'));
    assert.equal(eph.key, `${conn.root}/services/svc/instance1`);
    assert.equal(eph.created, false);

    const errors = await eph.create('10.0.0.1:8080', 5);
    assert.equal(eph.state, 'live');
    let kvNow = await kv(eph.key);
    assert.equal(kvNow?.value.toString(), '10.0.0.1:8080');
    assert.equal(kvNow.lease, eph.leaseId);

    await assert.rejects(eph.create('again', 5), { name: 'InvalidStateError' });

    await eph.update('10.0.0.1:9090');
    kvNow = await kv(eph.key);
    assert.equal(kvNow?.value.toString(), '10.0.0.1:9090');
    assert.equal(kvNow.lease, eph.leaseId);

    await eph.delete();
    assert.equal(await kv(eph.key), undefined, 'gone right after delete() resolved');
    assert.equal(eph.state, 'idle');
    // The error stream ended without an error.
    const drained: Error[] = [];
    for await (const e of errors) drained.push(e);
    assert.deepEqual(drained, []);
    await eph.delete(); // idempotent
    await assert.rejects(eph.update('x'), { name: 'InvalidStateError' });

    await eph.create('second life', 5);
    assert.equal((await kv(eph.key))?.value.toString(), 'second life');
    await eph[Symbol.asyncDispose]();
    await eph[Symbol.asyncDispose]();
    assert.equal(await kv(eph.key), undefined);
  });

  void test('KeyExistsError while another connector holds the key; nothing overwritten', async (t) => {
    const ns = uniqueName('eph');
    const a = connect(ns);
    const b = connect(ns);
    t.after(() => Promise.all([a.close(), b.close()]));
    const path = a.constructPath('lock');
    const ea = a.newEphemeralKey(path);
    const eb = b.newEphemeralKey(path);
    await ea.create('a', 5);

    await assert.rejects(eb.create('b', 5), { name: 'KeyExistsError', code: 'ETCDC_KEY_EXISTS' });
    assert.equal(eb.state, 'idle');
    const held = await kv(path);
    assert.equal(held?.value.toString(), 'a');
    assert.equal(held.lease, ea.leaseId);

    // Once the owner lets go, the other may take it.
    await ea.delete();
    await eb.create('b', 5);
    assert.equal((await kv(path))?.lease, eb.leaseId);
    await assert.rejects(ea.create('a', 5), { name: 'KeyExistsError' });
  });

  void test('conn.close() deletes the key; afterwards calls fail with ClosedError', async () => {
    const conn = connect(uniqueName('eph'));
    const eph = conn.newEphemeralKey(conn.constructPath('k'));
    await eph.create('v', 5);
    await conn.close();
    assert.equal(await kv(eph.key), undefined);
    assert.equal(eph.state, 'idle');
    await assert.rejects(eph.create('v', 5), { name: 'ClosedError' });
    await assert.rejects(eph.update('v'), { name: 'ClosedError' });
    await eph.delete();
    assert.throws(() => conn.newEphemeralKey(conn.constructPath('k2')), { name: 'ClosedError' });
  });

  void test('S10: bad input gets a typed error before any I/O; nothing is written', async (t) => {
    const ns = uniqueName('eph');
    const conn = connect(ns);
    // Nothing listens there: an input error that were checked after I/O would be Unavailable.
    const dead = new EtcdConnector(['http://127.0.0.1:1'], ns);
    t.after(() => Promise.all([conn.close(), dead.close()]));

    for (const c of [conn, dead]) {
      for (const path of ['', 'relative/key', `/not_${ns}/k`, `${c.root}/a\0b`, `${c.root}/../x`]) {
        assert.throws(() => c.newEphemeralKey(path), { name: 'InvalidArgumentError' }, path);
      }
      const eph = c.newEphemeralKey(c.constructPath('k'));
      const big = 'x'.repeat(1.5 * 1024 * 1024);
      await assert.rejects(eph.create(big, 5), { name: 'InvalidArgumentError' });
      for (const ttl of [0, -1, 1.5, NaN, Infinity]) {
        await assert.rejects(eph.create('v', ttl), { name: 'InvalidArgumentError' }, String(ttl));
      }
      await assert.rejects(eph.create(42 as unknown as string, 5), {
        name: 'InvalidArgumentError',
      });
      await assert.rejects(eph.update('v'), { name: 'InvalidStateError' });
      assert.equal(eph.state, 'idle');
      await eph.delete();
      await eph.delete();
    }
    const written = await suite.client.getAll().prefix(`/${ns}`).keys();
    assert.deepEqual(written, []);
  });

  void test('an aborted create leaves nothing; an unreachable etcd fails fast and typed', async (t) => {
    const ns = uniqueName('eph');
    const conn = connect(ns);
    const dead = new EtcdConnector(['http://127.0.0.1:1'], ns, { callTimeoutMs: 2000 });
    t.after(() => Promise.all([conn.close(), dead.close()]));

    const eph = conn.newEphemeralKey(conn.constructPath('k'));
    await assert.rejects(eph.create('v', 5, { signal: AbortSignal.abort() }), {
      name: 'AbortError',
    });
    assert.equal(eph.state, 'idle');

    const unreachable = dead.newEphemeralKey(dead.constructPath('k'));
    const err = await withTimeout(
      unreachable.create('v', 5).then(
        () => assert.fail('created on a dead endpoint'),
        (e: unknown) => e,
      ),
      testTimeout(10000),
      'create on a dead endpoint',
    );
    assert.ok(err instanceof Error);
    assert.equal((err as { retryable?: boolean }).retryable, true, String(err));
    assert.equal(unreachable.state, 'idle');
    assert.deepEqual(await suite.client.getAll().prefix(`/${ns}`).keys(), []);
  });

  void test('SIGSTOP of the owner past its TTL: the key goes; on SIGCONT the owner reports the loss and the key comes back', async (t) => {
    const ns = uniqueName('eph');
    const key = `/${ns}/owner`;
    const owner = startOwner([suite.etcd.endpoints.join(','), ns, key, 'here', '2']);
    t.after(() => killOwner(owner));
    const created = await owner.next('created', 'the child to create its key');
    assert.equal((await kv(key))?.lease, created.lease);

    owner.child.kill('SIGSTOP');
    await waitFor(async () => (await kv(key)) === undefined, {
      timeoutMs: testTimeout(15000),
      message: 'the key of the stopped owner to expire',
    });
    owner.child.kill('SIGCONT');

    const loss = await owner.next('error', 'the loss report after SIGCONT');
    assert.equal(loss.name, 'SessionLostError');
    assert.equal(loss.code, 'ETCDC_SESSION_LOST');
    const back = await waitFor(
      async () => {
        const now = await kv(key);
        return now !== undefined && now.lease !== created.lease ? now : undefined;
      },
      { timeoutMs: testTimeout(15000), message: 'the key to come back under a new lease' },
    );
    assert.equal(back.value.toString(), 'here');
    assert.notEqual(back.lease, '0');

    // A clean end: stdin closes, the child deletes its key and exits by itself.
    owner.child.stdin?.end();
    assert.equal(await withTimeout(owner.exited, testTimeout(10000), 'the child to exit'), 0);
    assert.equal(await kv(key), undefined);
  });

  void test('kill -9 of the owner: the key is gone within TTL + 2 s', async (t) => {
    const ns = uniqueName('eph');
    const key = `/${ns}/owner`;
    const ttl = 2;
    const owner = startOwner([suite.etcd.endpoints.join(','), ns, key, 'here', String(ttl)]);
    t.after(() => killOwner(owner));
    await owner.next('created', 'the child to create its key');
    assert.ok((await kv(key)) !== undefined);

    owner.child.kill('SIGKILL');
    const killedAt = performance.now();
    await waitFor(async () => (await kv(key)) === undefined, {
      timeoutMs: testTimeout((ttl + 2) * 1000),
      intervalMs: 25,
      message: 'the key of the killed owner to expire',
    });
    assert.ok(performance.now() - killedAt <= testTimeout((ttl + 2) * 1000));
  });

  void test('S7: blackhole past the TTL: loss reported, the key comes back under a new lease once the network returns', async (t) => {
    const ns = uniqueName('eph');
    const target = suite.etcd.endpoints[0];
    assert.ok(target !== undefined);
    const proxy = await startProxy(target);
    const conn = new EtcdConnector([proxy.endpoint], ns, { callTimeoutMs: 1000 });
    t.after(async () => {
      proxy.pass();
      await conn.close();
      await proxy.close();
    });
    const eph = conn.newEphemeralKey(`/${ns}/k`);
    const errors = await eph.create('v', 2);
    const first = eph.leaseId;
    assert.ok(first !== undefined);
    const reported: Error[] = [];
    const reading = (async () => {
      for await (const e of errors) reported.push(e);
    })();

    proxy.blackhole();
    await waitFor(() => reported.length > 0, {
      timeoutMs: testTimeout(10000),
      intervalMs: 10,
      message: 'the loss report',
    });
    assert.equal(reported[0]?.name, 'SessionLostError');
    // Back at once: keepalives held in the blackhole now reach etcd and may renew the old lease.
    proxy.pass();
    const back = await waitFor(
      async () => {
        const now = await kv(eph.key);
        return now !== undefined && now.lease !== first && now.lease === eph.leaseId
          ? now
          : undefined;
      },
      { timeoutMs: testTimeout(20000), message: 'the key to come back under a new lease' },
    );
    assert.equal(back.value.toString(), 'v');
    await waitFor(() => eph.state === 'live', { timeoutMs: testTimeout(5000) });
    await eph.delete();
    await reading;
    // Our own old lease is never reported as "another owner".
    assert.deepEqual(
      reported.map((e) => e.name).filter((n) => n !== 'SessionLostError'),
      [],
    );
    assert.equal(await kv(eph.key), undefined);
  });

  void test('a lost session is reported on the stream at once and the key is re-created', async (t) => {
    const conn = connect(uniqueName('eph'));
    t.after(() => conn.close());
    const eph: EphemeralKey = conn.newEphemeralKey(conn.constructPath('k'));
    const errors = await eph.create('v', 3);
    const first = eph.leaseId;
    assert.ok(first !== undefined);
    // Someone revokes our lease behind our back: etcd deletes the key, the session learns it.
    await suite.client.leaseClient.leaseRevoke({ ID: BigInt('0x' + first).toString() });
    const it = errors[Symbol.asyncIterator]();
    const next = await withTimeout(it.next(), testTimeout(10000), 'the loss report');
    assert.equal(next.done, false);
    assert.equal(next.value.name, 'SessionLostError');
    const back = await waitFor(
      async () => {
        const now = await kv(eph.key);
        return now !== undefined && now.lease !== first ? now : undefined;
      },
      { timeoutMs: testTimeout(10000), message: 'the key to come back' },
    );
    assert.equal(back.lease, eph.leaseId);
    await waitFor(() => eph.state === 'live', { timeoutMs: testTimeout(5000) });
    await eph.update('v2');
    assert.equal((await kv(eph.key))?.value.toString(), 'v2');
    await eph.delete();
    assert.equal((await it.next()).done, true, 'delete() ends the stream');
  });
});
