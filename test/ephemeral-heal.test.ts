/**
 * Ephemeral keys and registrations put themselves back when someone else deletes or overwrites
 * them (issue 16), and never fight another live owner. Changes are made with the real `etcdctl`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import {
  EtcdConnector,
  KeyChangedError,
  KeyExistsError,
  SessionLostError,
  UnavailableError,
  type ServiceData,
} from '../src/index.js';
import {
  findEtcdBinary,
  startProxy,
  testTimeout,
  uniqueName,
  waitFor,
  withTimeout,
} from '../src/testing/index.js';
import { killOwner, startOwner, type Line, type Owner } from './fixtures/eph-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

const execFileAsync = promisify(execFile);

/** The key as etcd has it; lease in hex ('0' = none). */
interface Kv {
  value: string;
  lease: string;
  modRevision: number;
  createRevision: number;
  version: number;
}

/** One change in the key's history. */
interface Change {
  type: 'put' | 'delete';
  value: string;
  lease: string;
  revision: number;
}

/** Keeps every item of a stream, read in the background. */
class Log<T> {
  readonly items: T[] = [];
  readonly done: Promise<void>;

  constructor(stream: AsyncIterable<T>) {
    this.done = (async () => {
      for await (const item of stream) this.items.push(item);
    })();
  }

  /** The first item (at index >= `from`) that matches; waits for it. */
  async until<U extends T>(
    match: (item: T) => item is U,
    what: string,
    from = 0,
    ms = 10000,
  ): Promise<U> {
    return waitFor(() => this.items.slice(from).find(match), {
      timeoutMs: testTimeout(ms),
      intervalMs: 10,
      message: what,
    });
  }
}

const isChange = (e: Error): e is KeyChangedError => e instanceof KeyChangedError;
const isExists = (e: Error): e is KeyExistsError => e instanceof KeyExistsError;
const isLost = (e: Error): e is SessionLostError => e instanceof SessionLostError;

/** The header revision of `etcdctl ... -w json`. */
function revisionOf(json: string): number {
  const parsed = JSON.parse(json) as { header?: { revision?: number } };
  const revision = parsed.header?.revision;
  assert.ok(typeof revision === 'number', `no revision in ${json}`);
  return revision;
}

void describe('EphemeralKey heals itself', () => {
  const suite = etcdSuite();
  const etcdctlBin = findEtcdBinary('etcdctl');

  /** Runs the real etcdctl against the test's etcd; resolves with its stdout. */
  async function etcdctl(...args: string[]): Promise<string> {
    const { stdout } = await execFileAsync(
      etcdctlBin,
      [`--endpoints=${suite.etcd.endpoints.join(',')}`, ...args],
      { env: { ...process.env, ETCDCTL_API: '3' }, timeout: testTimeout(10000) },
    );
    return stdout;
  }

  /** `etcdctl lease grant <ttl>`: the new lease's id in hex, without etcdctl's zero padding. */
  async function grantLease(ttl: number): Promise<string> {
    const out = await etcdctl('lease', 'grant', String(ttl));
    const id = /lease ([0-9a-f]+) granted/.exec(out)?.[1];
    assert.ok(id !== undefined, out);
    return BigInt(`0x${id}`).toString(16);
  }

  async function kv(key: string): Promise<Kv | undefined> {
    const found = (await suite.client.get(key).exec()).kvs[0];
    if (found === undefined) return undefined;
    return {
      value: found.value.toString(),
      lease: BigInt(found.lease).toString(16),
      modRevision: Number(found.mod_revision),
      createRevision: Number(found.create_revision),
      version: Number(found.version),
    };
  }

  /** Waits (at most `ms`, scaled) until the key is `value` under `lease` at a revision > `after`. */
  async function restored(
    key: string,
    value: string,
    lease: () => string | undefined,
    after: number,
    what: string,
    ms = 1000,
  ): Promise<{ kv: Kv; tookMs: number }> {
    const t0 = performance.now();
    const found = await waitFor(
      async () => {
        const now = await kv(key);
        return now !== undefined &&
          now.modRevision > after &&
          now.value === value &&
          now.lease === lease()
          ? now
          : undefined;
      },
      { timeoutMs: testTimeout(ms), intervalMs: 5, message: what },
    );
    return { kv: found, tookMs: performance.now() - t0 };
  }

  /** The key's changes from revision `from`, once `complete` says all expected ones came. */
  async function history(
    key: string,
    from: number,
    complete: (changes: Change[]) => boolean,
  ): Promise<Change[]> {
    const changes: Change[] = [];
    const watcher = await suite.client.watch().key(key).startRevision(String(from)).create();
    try {
      watcher.on('data', (res) => {
        for (const e of res.events) {
          changes.push({
            type: e.type === 'Delete' ? 'delete' : 'put',
            value: e.kv.value.toString(),
            lease: BigInt(e.kv.lease).toString(16),
            revision: Number(e.kv.mod_revision),
          });
        }
      });
      await waitFor(() => complete(changes), {
        timeoutMs: testTimeout(10000),
        message: `the history of ${key}`,
      });
    } finally {
      await watcher.cancel();
    }
    return changes;
  }

  function connect(ns: string, endpoints: readonly string[] = suite.etcd.endpoints): EtcdConnector {
    return new EtcdConnector(endpoints, ns, { callTimeoutMs: 2000, watchSilenceMs: 300 });
  }

  void test('etcdctl del of a registration: back within 1 s, and a tracker shows it again', async (t) => {
    const ns = uniqueName('heal');
    const conn = connect(ns);
    const other = connect(ns);
    t.after(() => Promise.all([conn.close(), other.close()]));
    const path = conn.constructPath('services', 'api');
    const reg = conn.newRegistration(path, 'node-a');
    const errors = new Log(await reg.register('10.0.0.1:8080', 5));
    const tracker = other.newServiceTracker(path);
    const maps = new Log<ServiceData>(tracker.start());
    const has = (d: ServiceData): d is ServiceData => d.services.get('node-a') === '10.0.0.1:8080';
    await maps.until(has, 'the tracker to list node-a');
    const before = await kv(reg.key);
    assert.ok(before !== undefined);

    const deleted = revisionOf(await etcdctl('del', reg.key, '-w', 'json'));
    const back = await restored(
      reg.key,
      '10.0.0.1:8080',
      () => before.lease,
      deleted,
      'the registration back within 1 s',
    );
    t.diagnostic(`back ${back.tookMs.toFixed(0)} ms after etcdctl del returned`);
    await maps.until(
      (d): d is ServiceData => has(d) && d.revision >= back.kv.modRevision,
      'the tracker to show node-a again',
    );

    const report = await errors.until(isChange, 'the report of the deletion');
    assert.equal(report.code, 'ETCDC_KEY_CHANGED');
    assert.equal(report.change, 'deleted');
    assert.equal(report.revision, deleted);
    assert.equal(report.key, reg.key);
    assert.equal(errors.items.length, 1, errors.items.map(String).join('; '));
    assert.equal(reg.registered, true);
    await reg.stop();
    await errors.done;
    assert.equal(await kv(reg.key), undefined);
    await tracker.stop();
  });

  void test('etcdctl put without a lease: our value and lease back within 1 s; another value under our lease too', async (t) => {
    const conn = connect(uniqueName('heal'));
    t.after(() => conn.close());
    const eph = conn.newEphemeralKey(conn.constructPath('k'));
    const errors = new Log(await eph.create('ours', 5));
    const lease = (): string | undefined => eph.leaseId;

    const put = revisionOf(await etcdctl('put', eph.key, 'theirs', '-w', 'json'));
    const first = await restored(eph.key, 'ours', lease, put, 'value and lease back within 1 s');
    t.diagnostic(`no lease: back after ${first.tookMs.toFixed(0)} ms`);
    const r1 = await errors.until(isChange, 'the report of the put without a lease');
    assert.deepEqual([r1.change, r1.lease, r1.revision], ['lease', undefined, put]);

    // Under our own lease another value is still ours to restore.
    const sneaky = revisionOf(
      await etcdctl('put', eph.key, 'sneaky', `--lease=${String(eph.leaseId)}`, '-w', 'json'),
    );
    const second = await restored(eph.key, 'ours', lease, sneaky, 'our value back within 1 s');
    t.diagnostic(`another value: back after ${second.tookMs.toFixed(0)} ms`);
    const r2 = await errors.until(isChange, 'the report of the value change', 1);
    assert.deepEqual([r2.change, r2.revision], ['value', sneaky]);
    await waitFor(() => eph.state === 'live', { timeoutMs: testTimeout(5000) });
    assert.deepEqual(
      errors.items.map((e) => e.name),
      ['KeyChangedError', 'KeyChangedError'],
    );
    await eph.delete();
  });

  void test('our own updates are never taken for someone else’s change', async (t) => {
    const conn = connect(uniqueName('heal'));
    t.after(() => conn.close());
    const eph = conn.newEphemeralKey(conn.constructPath('k'));
    const errors = new Log(await eph.create('v0', 5));
    // One at a time, and many in flight at once (their events race their answers).
    for (let i = 1; i <= 10; i++) await eph.update(`v${i}`);
    await Promise.all(Array.from({ length: 20 }, (_, i) => eph.update(`w${i}`)));
    const now = await kv(eph.key);
    assert.deepEqual([now?.value, now?.lease], ['w19', eph.leaseId]);

    // A marker change: the first report must be about it, nothing before.
    const marker = revisionOf(await etcdctl('del', eph.key, '-w', 'json'));
    const report = await errors.until(isChange, 'the report of the marker');
    assert.deepEqual([report.change, report.revision], ['deleted', marker]);
    assert.equal(errors.items.length, 1, errors.items.map(String).join('; '));
    await restored(eph.key, 'w19', () => eph.leaseId, marker, 'the last value back');
    await eph.delete();
  });

  void test('another live lease takes the key: KeyExistsError, no fight; back when that key goes', async (t) => {
    const conn = connect(uniqueName('heal'));
    t.after(() => conn.close());
    const eph = conn.newEphemeralKey(conn.constructPath('k'));
    const errors = new Log(await eph.create('ours', 5));
    const start = (await kv(eph.key))?.modRevision;
    assert.ok(start !== undefined);

    const theirs = await grantLease(30);
    const taken = revisionOf(
      await etcdctl('put', eph.key, 'theirs', `--lease=${theirs}`, '-w', 'json'),
    );
    const exists = await errors.until(isExists, 'KeyExistsError');
    assert.equal(exists.code, 'ETCDC_KEY_EXISTS');
    assert.equal(exists.lease, theirs);
    const changed = errors.items[0];
    assert.ok(changed instanceof KeyChangedError);
    assert.deepEqual([changed.change, changed.lease, changed.revision], ['lease', theirs, taken]);
    assert.equal(eph.state, 'recovering');
    assert.equal(eph.created, true);
    // Waiting, not fighting: updates are refused too, and nothing is written.
    await assert.rejects(eph.update('ours 2'), KeyExistsError);
    const rewritten = revisionOf(
      await etcdctl('put', eph.key, 'theirs 2', `--lease=${theirs}`, '-w', 'json'),
    );
    const held = await kv(eph.key);
    assert.deepEqual(
      [held?.value, held?.lease, held?.modRevision],
      ['theirs 2', theirs, rewritten],
    );

    // Their lease ends: their key goes, ours comes back (woken by the watch, not a timer).
    await etcdctl('lease', 'revoke', theirs);
    const back = await restored(eph.key, 'ours 2', () => eph.leaseId, rewritten, 'our key back');
    t.diagnostic(`taken back ${back.tookMs.toFixed(0)} ms after the lease revoke returned`);
    await waitFor(() => eph.state === 'live', { timeoutMs: testTimeout(5000) });

    // etcd's history of the key: only their writes, their key's end and our one put-back.
    const changes = await history(eph.key, start + 1, (c) =>
      c.some((x) => x.revision >= back.kv.modRevision),
    );
    assert.deepEqual(
      changes.map((c) => [c.type, c.value, c.lease]),
      [
        ['put', 'theirs', theirs],
        ['put', 'theirs 2', theirs],
        ['delete', '', '0'],
        ['put', 'ours 2', eph.leaseId],
      ],
    );
    // Reported once for the whole wait; the end of their key is not a change of ours.
    assert.deepEqual(
      errors.items.map((e) => e.name),
      ['KeyChangedError', 'KeyExistsError'],
    );
    await eph.delete();
  });

  void test('a second process creating the same key while ours is live gets KeyExistsError; ours is untouched', async (t) => {
    const ns = uniqueName('heal');
    const conn = connect(ns);
    t.after(() => conn.close());
    const eph = conn.newEphemeralKey(conn.constructPath('k'));
    const errors = new Log(await eph.create('ours', 5));
    const before = await kv(eph.key);

    const second = startOwner([suite.etcd.endpoints.join(','), ns, eph.key, 'intruder', '5']);
    t.after(() => killOwner(second));
    const refused = await second.next('create-failed', 'the second process to be refused');
    assert.equal(refused.name, 'KeyExistsError');
    assert.equal(refused.code, 'ETCDC_KEY_EXISTS');
    second.child.stdin?.end();
    assert.equal(await withTimeout(second.exited, testTimeout(10000), 'the child to exit'), 0);
    assert.deepEqual(await kv(eph.key), before);

    // Nothing was reported on our side: the first report is the one of a marker change.
    const marker = revisionOf(await etcdctl('del', eph.key, '-w', 'json'));
    const report = await errors.until(isChange, 'the report of the marker');
    assert.equal(report.revision, marker);
    assert.equal(errors.items.length, 1, errors.items.map(String).join('; '));
    await eph.delete();
  });

  void test('two processes with the same key do not flap it: its revision stays put for 10 s', async (t) => {
    const ns = uniqueName('heal');
    const key = `/${ns}/shared`;
    const args = [suite.etcd.endpoints.join(','), ns, key];
    // TTL 10: A's lease outlives the short stop below.
    const a = startOwner([...args, 'A', '10']);
    const b = startOwner([...args, 'B', '10', 'wait']);
    t.after(() => Promise.all([killOwner(a), killOwner(b)]));
    const aLease = (await a.next('created', 'A to create the key')).lease;

    // Both live on one key: while A is stopped its key is deleted and B creates it; A, resumed,
    // sees both and waits.
    a.child.kill('SIGSTOP');
    await etcdctl('del', key);
    b.send('create');
    const bLease = (await b.next('created', 'B to create the key')).lease;
    a.child.kill('SIGCONT');
    const aDeleted = await a.next('error', 'A to report the deletion');
    assert.deepEqual([aDeleted.name, aDeleted.change], ['KeyChangedError', 'deleted']);
    const aWaits = await a.next('error', 'A to report that B holds the key');
    assert.deepEqual([aWaits.name, aWaits.lease], ['KeyExistsError', bLease]);
    assert.equal((await kv(key))?.lease, bLease);

    // Both race for the key once it is deleted again; exactly one takes it.
    const deleted = revisionOf(await etcdctl('del', key, '-w', 'json'));
    const settled = await waitFor(
      async () => {
        const now = await kv(key);
        return now !== undefined && now.createRevision > deleted ? now : undefined;
      },
      { timeoutMs: testTimeout(1000), intervalMs: 5, message: 'one of them to take the key' },
    );
    assert.ok([aLease, bLease].includes(settled.lease), settled.lease);
    await b.next('error', 'B to report the deletion');

    // The observation window is this test's input, not a wait for a result.
    const windowMs = 10000;
    const until = performance.now() + windowMs;
    while (performance.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.deepEqual(await kv(key), settled, 'the key changed: flapping');
    }
    // One write after the deletion, never rewritten.
    assert.equal(settled.version, 1);
    assert.equal(settled.modRevision, settled.createRevision);
    t.diagnostic(
      `holder: ${settled.lease === aLease ? 'A' : 'B'}; A said ` +
        a.lines.map((l: Line) => `${l.event}:${l.name ?? l.lease ?? ''}`).join(', ') +
        '; B said ' +
        b.lines.map((l: Line) => `${l.event}:${l.name ?? l.lease ?? ''}`).join(', '),
    );

    // The holder leaves (its lease is revoked): the waiter takes the key back at once.
    const [holder, waiter, waiterLease]: [Owner, Owner, string | undefined] =
      settled.lease === aLease ? [a, b, bLease] : [b, a, aLease];
    holder.child.stdin?.end();
    assert.equal(await withTimeout(holder.exited, testTimeout(10000), 'the holder to exit'), 0);
    const back = await restored(
      key,
      waiter === a ? 'A' : 'B',
      () => waiterLease,
      settled.modRevision,
      'the waiter to take the key back',
    );
    t.diagnostic(`taken back ${back.tookMs.toFixed(0)} ms after the holder exited`);
    waiter.child.stdin?.end();
    assert.equal(await withTimeout(waiter.exited, testTimeout(10000), 'the waiter to exit'), 0);
    assert.equal(await kv(key), undefined);
  });

  void test('our lease revoked behind our back: SessionLostError (not a deletion), back under a new lease', async (t) => {
    const conn = connect(uniqueName('heal'));
    t.after(() => conn.close());
    const eph = conn.newEphemeralKey(conn.constructPath('k'));
    const errors = new Log(await eph.create('v', 5));
    const first = eph.leaseId;
    assert.ok(first !== undefined);
    // The watch sees the deletion at once; the put-back learns from etcd that the lease is gone.
    await etcdctl('lease', 'revoke', first);
    await errors.until(isLost, 'the loss report');
    const back = await waitFor(
      async () => {
        const now = await kv(eph.key);
        return now !== undefined && now.lease !== first && now.lease === eph.leaseId
          ? now
          : undefined;
      },
      { timeoutMs: testTimeout(10000), message: 'the key back under a new lease' },
    );
    assert.equal(back.value, 'v');
    await waitFor(() => eph.state === 'live', { timeoutMs: testTimeout(5000) });
    assert.deepEqual(
      errors.items.map((e) => e.name),
      ['SessionLostError'],
    );
    await eph.delete();
  });

  void test('a key on an explicit session is put back under that session; it ends with it', async (t) => {
    const conn = connect(uniqueName('heal'));
    t.after(() => conn.close());
    const session = await conn.session({ ttl: 5 });
    const eph = conn.newEphemeralKey(conn.constructPath('k'));
    const errors = new Log(await eph.create('v', 5, { session }));
    assert.equal(eph.leaseId, session.leaseId);

    const deleted = revisionOf(await etcdctl('del', eph.key, '-w', 'json'));
    await restored(eph.key, 'v', () => session.leaseId, deleted, 'back under the session');
    assert.equal((await errors.until(isChange, 'the report')).change, 'deleted');

    // The session's lease ends: the key ends with it, not put back elsewhere.
    await etcdctl('lease', 'revoke', session.leaseId);
    await withTimeout(errors.done, testTimeout(10000), 'the error stream to end');
    assert.deepEqual(
      errors.items.map((e) => e.name),
      ['KeyChangedError', 'SessionLostError'],
    );
    await waitFor(() => eph.state === 'idle', { timeoutMs: testTimeout(5000) });
    assert.equal(await kv(eph.key), undefined);
    await session.close();
  });

  void test('delete() racing a put-back leaves nothing behind', async (t) => {
    const ns = uniqueName('heal');
    const conn = connect(ns);
    t.after(() => conn.close());
    const eph = conn.newEphemeralKey(conn.constructPath('k'));
    for (let i = 0; i < 12; i++) {
      const errors = new Log(await eph.create(`v${i}`, 5));
      const removed = suite.client.delete().key(eph.key).exec();
      if (i % 3 === 1) await removed;
      if (i % 3 === 2) {
        await removed;
        // The watch saw it: the put-back is under way or done.
        await waitFor(() => eph.state === 'recovering' || errors.items.length > 0, {
          timeoutMs: testTimeout(5000),
          intervalMs: 1,
        });
      }
      await eph.delete();
      await removed;
      await errors.done;
      assert.equal(eph.state, 'idle');
      assert.equal(await kv(eph.key), undefined, `iteration ${i}`);
    }
    // Nothing of ours writes it later either.
    await conn.close();
    assert.equal(await kv(eph.key), undefined);
  });

  void test('the same key twice in one connector: the second create gets KeyExistsError', async (t) => {
    const conn = connect(uniqueName('heal'));
    t.after(() => conn.close());
    const path = conn.constructPath('k');
    const first = conn.newEphemeralKey(path);
    const twin = conn.newEphemeralKey(path);
    await first.create('first', 5);
    // Same TTL (one lease) or another: two keys of one connector would overwrite each other.
    await assert.rejects(twin.create('twin', 5), KeyExistsError);
    await assert.rejects(twin.create('twin', 7), KeyExistsError);
    assert.equal(twin.state, 'idle');
    assert.equal((await kv(path))?.value, 'first');
    await first.delete();
    await twin.create('twin', 5);
    assert.equal((await kv(path))?.value, 'twin');
    await twin.delete();
  });

  void test('history compacted while cut off: the key reads itself again and puts itself back', async (t) => {
    const ns = uniqueName('heal');
    const target = suite.etcd.endpoints[0];
    assert.ok(target !== undefined);
    const proxy = await startProxy(target);
    const conn = connect(ns, [proxy.endpoint]);
    t.after(async () => {
      proxy.pass();
      await conn.close();
      await proxy.close();
    });
    const eph = conn.newEphemeralKey(conn.constructPath('svc', 'k'));
    const errors = new Log(await eph.create('ours', 10));
    // A tracker on the same connection tells when the shared watch stream noticed the cut.
    const maps = new Log<ServiceData>(conn.newServiceTracker(conn.constructPath('svc')).start());
    await maps.until((d): d is ServiceData => d.services.get('k') === 'ours', 'the tracker');

    proxy.blackhole();
    await etcdctl('put', eph.key, 'theirs', '-w', 'json');
    const put = revisionOf(await etcdctl('put', eph.key, 'theirs 2', '-w', 'json'));
    // Compacted past the first put: our watch cannot resume where it stopped.
    await etcdctl('compact', String(put), '--physical');
    await maps.until(
      (d): d is ServiceData => d.error instanceof UnavailableError,
      'the cut to be noticed',
    );
    proxy.pass();
    await restored(eph.key, 'ours', () => eph.leaseId, put, 'the key back', 10000);
    // The read stands for the changes missed: reported as one, at the revision read.
    const report = await errors.until(isChange, 'the report');
    assert.deepEqual([report.change, report.revision], ['lease', put]);
    await waitFor(() => eph.state === 'live', { timeoutMs: testTimeout(5000) });
    assert.equal(errors.items.length, 1, errors.items.map(String).join('; '));
    await eph.delete();
  });
});
