import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ClosedError,
  ErrorCode,
  InvalidArgumentError,
  InvalidStateError,
  LEStatus,
  NotLeaderError,
  type DiagnosticMessages,
  type LeaderEvent,
  type LeaderInfo,
} from '../src/index.js';
import {
  findEtcdBinary,
  startProxy,
  testTimeout,
  uniqueName,
  waitFor,
  withTimeout,
  type FaultProxy,
} from '../src/testing/index.js';
import { Child, Etcdctl } from './fixtures/elector-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

/** Reads a state stream in the background; `next(match)` waits for a matching item. */
class Reader<T> {
  readonly items: T[] = [];
  readonly done: Promise<void>;

  constructor(stream: AsyncIterable<T>) {
    this.done = (async () => {
      for await (const item of stream) this.items.push(item);
    })();
  }

  /** The first item at index >= `from` that matches; waits for it. */
  async next(match: (item: T) => boolean, what: string, from = 0, ms = 10000): Promise<T> {
    const found = await waitFor(
      () => {
        const i = this.items.findIndex((item, idx) => idx >= from && match(item));
        return i === -1 ? undefined : { item: this.items[i] };
      },
      { timeoutMs: testTimeout(ms), intervalMs: 5, message: what },
    );
    assert.ok(found.item !== undefined);
    return found.item;
  }
}

const isLeader = (e: LeaderEvent): boolean => e.status === LEStatus.Leader;

void describe('LeaderElector', () => {
  const suite = etcdSuite({ members: 3 });

  function participant(ns: string, id: string, path: string, log: string): Child {
    const args = [suite.etcd.endpoints.join(','), ns, path, id, '2', log];
    const child = new Child(id, 'elector-participant', args);
    suite.defer(() => child.kill());
    return child;
  }

  /** p1 leading (its token `t1`) and p2 following it, on one election with a log for writes. */
  async function leaderAndFollower(): Promise<{
    log: string;
    p1: Child;
    p2: Child;
    t1: string | undefined;
  }> {
    const ns = uniqueName('el');
    const path = `/${ns}/e`;
    const log = `/${ns}/log`;
    const p1 = participant(ns, 'p1', path, log);
    const t1 = (await p1.waitLine((l) => l.status === 'leader', 'p1 leads')).line.token;
    const p2 = participant(ns, 'p2', path, log);
    await p2.waitLine((l) => l.status === 'follower' && l.leader === 'p1', 'p2 follows');
    return { log, p1, p2, t1 };
  }

  test('bad input is refused before any I/O; start twice, stop twice, calls after stop', async () => {
    const ns = uniqueName('el');
    // Nothing listens there: any I/O would fail differently.
    const conn = suite.connect(ns, { endpoints: ['http://127.0.0.1:9'] });
    const path = conn.constructPath('e');
    for (const p of ['', 'rel/x', '/elsewhere/x', `/${ns}/a/../b`, `/${ns}/a\0b`, `/${ns}/a/`]) {
      assert.throws(() => conn.newLeaderElector(p, 'a', 2), InvalidArgumentError, p);
    }
    for (const ttl of [0, -1, 1.5, NaN, Infinity]) {
      assert.throws(() => conn.newLeaderElector(path, 'a', ttl), InvalidArgumentError);
    }
    assert.throws(
      () => conn.newLeaderElector(path, 7 as unknown as string, 2),
      InvalidArgumentError,
    );
    assert.throws(
      () => conn.newLeaderElector(path, 'x'.repeat(2 * 1024 * 1024), 2),
      InvalidArgumentError,
    );
    assert.throws(
      () => conn.newLeaderElector(path, 'a', 2, { followLeader: 1 as unknown as boolean }),
      InvalidArgumentError,
    );
    assert.throws(() => conn.newLeaderObserver('relative'), InvalidArgumentError);

    const e = conn.newLeaderElector(path, 'a', 2);
    const stream = e.start();
    assert.throws(() => e.start(), InvalidStateError);
    // Same connector, TTL and path would share a lease and so one key.
    const twin = conn.newLeaderElector(path, 'b', 2);
    assert.throws(() => twin.start(), InvalidStateError);
    await assert.rejects(e.proclaim('x'), NotLeaderError);
    await assert.rejects(e.fencedTxn([]), NotLeaderError);
    await withTimeout(e.stop(), testTimeout(5000), 'stop while etcd is unreachable');
    await e.stop();
    await e[Symbol.asyncDispose]();
    // Nothing listens: at most reports that etcd cannot be reached, never a leader.
    for await (const ev of stream) {
      assert.equal(ev.status, LEStatus.Follower);
      assert.equal((ev.error as { code?: string } | undefined)?.code, ErrorCode.Unavailable);
    }
    assert.throws(() => e.start(), ClosedError);
    await assert.rejects(e.getLeader(), ClosedError);
    await assert.rejects(e.proclaim('x'), ClosedError);
    assert.equal(e.isLeader, false);
    // The slot is free again.
    twin.start();
    await twin.stop();
    await conn.close();
    assert.throws(() => conn.newLeaderElector(path, 'a', 2), ClosedError);
  });

  test('a lone candidate leads with a fencing token; fenced writes, proclaim, deleted key', async () => {
    const ns = uniqueName('el');
    const conn = suite.connect(ns);
    const path = conn.constructPath('elections', 'solo');
    const e = conn.newLeaderElector(path, 'node-a', 2);
    assert.equal(await e.getLeader(), undefined, 'nobody campaigns yet');
    const r = new Reader(e.start());
    const first = await r.next(isLeader, 'leader');
    const token = first.token;
    assert.ok(token !== undefined);
    assert.equal(first.leader, 'node-a');
    assert.equal(first.suspended, false);
    assert.equal(e.isLeader, true);
    // Go's layout: path/<lease id in hex>, value = identity, under that lease.
    const kv = (await suite.client.get(token.key).exec()).kvs[0];
    assert.ok(kv !== undefined);
    assert.equal(token.key, `${path}/${BigInt(kv.lease).toString(16)}`);
    assert.equal(kv.create_revision, token.revision);
    assert.equal(await e.getLeader(), 'node-a');

    const res = await e.fencedTxn([conn.client.put(`/${ns}/data`).value('1')]);
    assert.equal(res.succeeded, true);
    // With a read: etcd 3.4 answers a transaction of compares only from the member asked, and a
    // follower may not have applied the write yet (test/fenced-reads.test.ts).
    const own = await token
      .compare(suite.client.if(`/${ns}/data`, 'Value', '==', '1'))
      .then(suite.client.get(`/${ns}/data`))
      .commit();
    assert.equal(own.succeeded, true, 'the token composes into a user transaction');
    await e.proclaim('node-a2');
    assert.equal(await e.getLeader(), 'node-a2');
    await r.next((ev) => isLeader(ev) && ev.leader === 'node-a2', 'proclaimed value');

    // Someone deletes our key (etcdctl del): we say so, then campaign again with a newer token.
    const from = r.items.length;
    await suite.client.delete().key(token.key);
    const lost = await r.next((ev) => !isLeader(ev), 'step down', from);
    assert.ok(lost.error instanceof NotLeaderError);
    const again = await r.next(isLeader, 're-elected', from);
    assert.ok(BigInt(again.token?.revision ?? 0) > BigInt(token.revision));
    const stale = await token
      .txn(suite.client)
      .then(suite.client.put(`/${ns}/data`).value('stale'))
      .commit();
    assert.equal(stale.succeeded, false, 'the old token is refused');
    assert.equal(await suite.client.get(`/${ns}/data`).string(), '1');

    // stop() resigns: the key goes at once, the stream ends.
    await e.stop();
    await r.done;
    assert.deepEqual(
      await suite.client
        .getAll()
        .prefix(path + '/')
        .keys(),
      [],
    );
  });

  test('clean stop of the leader: the next candidate leads within ~1 RTT', async () => {
    const ns = uniqueName('el');
    const path = `/${ns}/e`;
    const a = suite.connect(ns).newLeaderElector(path, 'A', 2);
    const b = suite.connect(ns).newLeaderElector(path, 'B', 2);
    const ra = new Reader(a.start());
    await ra.next(isLeader, 'A leads');
    const rb = new Reader(b.start());
    await rb.next((ev) => ev.status === LEStatus.Follower && ev.leader === 'A', 'B follows A');
    const t0 = performance.now();
    await a.stop();
    await rb.next(isLeader, 'B leads');
    const took = performance.now() - t0;
    assert.ok(took < testTimeout(1000), `handover took ${took.toFixed(0)} ms`);
    await ra.done;

    await b.stop();
    await rb.done;
    assert.equal(await a.getLeader().catch((e: unknown) => e instanceof ClosedError), true);
    assert.equal(await suite.connect(ns).newLeaderElector(path, 'C', 2).getLeader(), undefined);
  });

  test("a leader event's revision: the read that found it first, after the last leader's last write", async (t) => {
    const ns = uniqueName('el');
    const path = `/${ns}/e`;
    const gained: DiagnosticMessages['etcd-connector:leadership.gained'][] = [];
    const onGained = (m: unknown): void => {
      const msg = m as DiagnosticMessages['etcd-connector:leadership.gained'];
      if (msg.path === path) gained.push(msg);
    };
    subscribe('etcd-connector:leadership.gained', onGained);
    t.after(() => unsubscribe('etcd-connector:leadership.gained', onGained));
    const a = suite.connect(ns).newLeaderElector(path, 'A', 5);
    const b = suite.connect(ns).newLeaderElector(path, 'B', 5);
    const ra = new Reader(a.start());
    const first = await ra.next(isLeader, 'A leads');
    assert.ok(first.revision !== undefined && first.revision >= Number(first.token?.revision));
    const rb = new Reader(b.start());
    await rb.next((ev) => ev.status === LEStatus.Follower && ev.leader === 'A', 'B follows A');
    assert.ok(
      rb.items.every((ev) => ev.revision === undefined),
      'no revision while following',
    );
    const last = await a.fencedTxn([suite.client.put(`/${ns}/x`).value('a')]);
    await a.stop();
    const led = await rb.next(isLeader, 'B leads');
    const written = Number(last.header.revision);
    assert.ok((led.revision ?? 0) > written, `${String(led.revision)} > ${written}`);
    // The leadership.gained diagnostic says the same.
    assert.equal(gained.find((m) => m.identity === 'B')?.revision, led.revision);
    await ra.done;
    await b.stop();
    await rb.done;
  });

  test('leaving the status loop stops the elector and deletes its key', async () => {
    const ns = uniqueName('el');
    const path = `/${ns}/e`;
    const e = suite.connect(ns).newLeaderElector(path, 'A', 2);
    for await (const ev of e.start()) {
      if (isLeader(ev)) break;
    }
    await waitFor(
      async () =>
        (
          await suite.client
            .getAll()
            .prefix(path + '/')
            .keys()
        ).length === 0,
      {
        timeoutMs: testTimeout(5000),
        message: 'key deleted after break',
      },
    );
    assert.throws(() => e.start(), ClosedError);
  });

  test('observe-only mode follows the leader without campaigning', async () => {
    const ns = uniqueName('el');
    const path = `/${ns}/e`;
    const conn = suite.connect(ns);
    const obs = conn.newLeaderObserver(path);
    const r = new Reader<LeaderInfo>(obs.start());
    await r.next((i) => i.leader === undefined, 'nobody');
    const a = suite.connect(ns).newLeaderElector(path, 'A', 2);
    const ra = new Reader(a.start());
    const ta = (await ra.next(isLeader, 'A leads')).token;
    await r.next((i) => i.leader === 'A' && i.revision === ta?.revision, 'observer sees A');
    const b = suite.connect(ns).newLeaderElector(path, 'B', 2);
    const rb = new Reader(b.start());
    await rb.next((ev) => ev.leader === 'A', 'B follows');
    await a.stop();
    const tb = (await rb.next(isLeader, 'B leads')).token;
    await r.next((i) => i.leader === 'B' && i.revision === tb?.revision, 'observer sees B');
    await b.proclaim('B2');
    await r.next((i) => i.leader === 'B2', 'observer sees the proclaimed value');
    await b.stop();
    await r.next((i) => i.leader === undefined && i.key === undefined, 'nobody again', 1);
    assert.equal(await b.getLeader().catch(() => 'closed'), 'closed');
    await obs.stop();
    await r.done;
    assert.ok(r.items.every((i) => i.error === undefined));
    // elector.observe() is the same thing, ended by its elector's stop().
    const c = suite.connect(ns).newLeaderElector(path, 'C', 2);
    const rc = new Reader(c.observe());
    await rc.next((i) => i.leader === undefined, 'observe() without start()');
    await c.stop();
    await rc.done;
  });

  test('interop: etcdctl elect and our electors take turns in arrival order', async () => {
    const ns = uniqueName('el');
    const path = `/${ns}/elections/x`;
    const etcdctl = findEtcdBinary('etcdctl');
    const a = new Etcdctl(etcdctl, suite.etcd.endpoints, path, 'idA');
    suite.defer(() => a.kill());
    await waitFor(() => a.elected, { timeoutMs: testTimeout(10000), message: 'etcdctl A elected' });
    assert.match(a.out[0] ?? '', new RegExp(`^${path}/[0-9a-f]+$`));
    const b = suite.connect(ns).newLeaderElector(path, 'idB', 2);
    const rb = new Reader(b.start());
    await rb.next((ev) => ev.status === LEStatus.Follower && ev.leader === 'idA', 'B queued');
    const c = new Etcdctl(etcdctl, suite.etcd.endpoints, path, 'idC');
    suite.defer(() => c.kill());
    await waitFor(
      async () =>
        (
          await suite.client
            .getAll()
            .prefix(path + '/')
            .keys()
        ).length === 3,
      {
        timeoutMs: testTimeout(10000),
        message: 'C queued',
      },
    );
    const d = suite.connect(ns).newLeaderElector(path, 'idD', 2);
    const rd = new Reader(d.start());
    await rd.next((ev) => ev.status === LEStatus.Follower && ev.leader === 'idA', 'D queued');

    a.child.kill('SIGINT'); // etcdctl resigns on SIGINT
    await a.exited;
    await rb.next(isLeader, 'B leads after A');
    assert.equal(c.elected, false, 'C is still waiting');
    assert.equal(rd.items.some(isLeader), false);
    await b.stop();
    await waitFor(() => c.elected, { timeoutMs: testTimeout(10000), message: 'C elected' });
    assert.equal(c.out[1], 'idC');
    assert.equal(rd.items.some(isLeader), false, 'D waits for C');
    await rd.next((ev) => ev.leader === 'idC', 'D sees C lead');
    c.child.kill('SIGINT');
    await c.exited;
    await rd.next(isLeader, 'D leads after C');
    await d.stop();
  });

  test('blackholed leader: suspended, then lost by its own deadline before anyone else leads', async () => {
    const ns = uniqueName('el');
    const path = `/${ns}/e`;
    const endpoint = suite.etcd.endpoints[0];
    assert.ok(endpoint !== undefined);
    const proxy: FaultProxy = await startProxy(endpoint);
    suite.defer(() => proxy.close());
    const order: string[] = [];
    const a = suite.connect(ns, { endpoints: [proxy.endpoint] }).newLeaderElector(path, 'A', 2);
    const ra = new Reader(a.start());
    const ta = (await ra.next(isLeader, 'A leads')).token;
    const b = suite.connect(ns).newLeaderElector(path, 'B', 2);
    const rb = new Reader(b.start());
    await rb.next((ev) => ev.leader === 'A', 'B follows A');
    void ra
      .next((ev) => ev.error?.name === 'SessionLostError', 'A lost', 0, 20000)
      .then(
        () => order.push('A lost'),
        () => undefined,
      );
    void rb.next(isLeader, 'B leads', 0, 20000).then(
      () => order.push('B leads'),
      () => undefined,
    );
    const from = ra.items.length;
    proxy.blackhole();
    const suspended = await ra.next((ev) => ev.suspended, 'A suspended', from);
    assert.equal(suspended.status, LEStatus.Follower);
    const lost = await ra.next((ev) => ev.error !== undefined, 'A lost', from);
    assert.equal((lost.error as { code?: string }).code, ErrorCode.SessionLost);
    assert.equal(a.isLeader, false);
    const tb = (await rb.next(isLeader, 'B leads')).token;
    await waitFor(() => order.length === 2, { timeoutMs: testTimeout(2000), message: 'order' });
    assert.deepEqual(order, ['A lost', 'B leads'], 'no overlap');
    assert.ok(BigInt(tb?.revision ?? 0) > BigInt(ta?.revision ?? 0));
    // A never claimed leadership after the blackhole began.
    assert.equal(ra.items.slice(from).some(isLeader), false);
    proxy.pass();
    await ra.next((ev) => ev.status === LEStatus.Follower && ev.leader === 'B', 'A rejoins', from);
    await Promise.all([a.stop(), b.stop()]);
  });

  test('a short blackhole suspends the leader; after a re-check it leads again with the same token', async () => {
    const ns = uniqueName('el');
    const path = `/${ns}/e`;
    const endpoint = suite.etcd.endpoints[0];
    assert.ok(endpoint !== undefined);
    const proxy = await startProxy(endpoint);
    suite.defer(() => proxy.close());
    // TTL 5: suspended after ~1.25 s of silence, lost only at 5 s; room for a loaded machine.
    const a = suite.connect(ns, { endpoints: [proxy.endpoint] }).newLeaderElector(path, 'A', 5);
    const ra = new Reader(a.start());
    const before = await ra.next(isLeader, 'A leads');
    const from = ra.items.length;
    proxy.blackhole();
    const suspended = await ra.next((ev) => ev.suspended, 'A suspended', from);
    assert.equal(suspended.status, LEStatus.Follower);
    assert.equal(a.isLeader, false, 'no leader work while suspended');
    await assert.rejects(a.fencedTxn([]), NotLeaderError);
    proxy.pass();
    const again = await ra.next(isLeader, 'A leads again', from);
    assert.equal(again.token?.revision, before.token?.revision, 'same term, same token');
    assert.equal(again.suspended, false);
    assert.ok(
      ra.items.slice(from).every((ev) => ev.error === undefined),
      'no loss reported',
    );
    assert.equal(a.isLeader, true);
    await a.stop();
  });

  test('kill -9 of the leader process: a follower leads within TTL + 2 s', async () => {
    const { p1, p2 } = await leaderAndFollower();
    const t0 = performance.now();
    await p1.kill();
    await p2.waitLine((l) => l.status === 'leader', 'p2 leads', 0, testTimeout(10000));
    const took = performance.now() - t0;
    assert.ok(took < testTimeout(4000), `takeover took ${took.toFixed(0)} ms (TTL 2 s)`);
    p2.send('stop');
    assert.equal(await withTimeout(p2.exited, testTimeout(10000), 'p2 exits by itself'), 0);
  });

  test('SIGSTOP of the leader for half its TTL: nothing changes, no false loss', async () => {
    const { p1, p2, t1 } = await leaderAndFollower();
    const from1 = p1.lines.length;
    const from2 = p2.lines.length;
    p1.child.kill('SIGSTOP');
    await sleep(1000); // the fault's duration (TTL 2 s)
    p1.child.kill('SIGCONT');
    p1.send('fenced-write after');
    const w = (await p1.waitLine((l) => l.event === 'write' && l.tag === 'after', 'write', from1))
      .line;
    assert.equal(w.ok, true, 'still the leader: its fenced write lands');
    // Past the longest time a lost lease could take to show (TTL 2 s from the pause's start).
    await sleep(1500);
    // No loss. A keepalive in flight as the pause began may be reported as a suspension (our
    // process heard nothing for the pause): still the leader, same term.
    const statuses = p1.lines.slice(from1).filter((l) => l.event === 'status');
    assert.ok(
      statuses.every((l) => l.status === 'leader' && l.token === t1 && l.error === undefined),
      `p1 stayed the leader of its term: ${JSON.stringify(statuses)}`,
    );
    assert.ok(
      p2.lines.slice(from2).every((l) => l.status !== 'leader'),
      'p2 never led meanwhile',
    );
    p1.send('fenced-write later');
    const later = await p1.waitLine((l) => l.event === 'write' && l.tag === 'later', 'write');
    assert.equal(later.line.ok, true);
    assert.equal(later.line.token, t1, 'the same term');
    for (const p of [p1, p2]) p.send('stop');
    await Promise.all([p1.exited, p2.exited]);
  });

  test('SIGSTOP of the leader past its TTL: another leads; on SIGCONT it says non-leader first, its fenced writes fail', async () => {
    const { log, p1, p2, t1 } = await leaderAndFollower();
    p1.send('fenced-write before');
    await p1.waitLine((l) => l.event === 'write' && l.tag === 'before' && l.ok === true, 'write');
    p1.child.kill('SIGSTOP');
    const t2 = (await p2.waitLine((l) => l.status === 'leader', 'p2 leads')).line.token;
    assert.ok(BigInt(t2 ?? 0) > BigInt(t1 ?? 0), 'tokens strictly increase');
    const from = p1.lines.length;
    p1.child.kill('SIGCONT');
    const first = (await p1.waitLine((l) => l.event === 'status', 'p1 status after resume', from))
      .line;
    assert.equal(first.status, 'follower', 'non-leader before anything else');
    assert.equal(first.error?.code, ErrorCode.SessionLost);
    p1.send('fenced-write after');
    const w = (await p1.waitLine((l) => l.event === 'write' && l.tag === 'after', 'write', from))
      .line;
    assert.equal(w.ok, false);
    assert.equal(w.error?.code, ErrorCode.NotLeader);
    p1.send('token-write stale');
    const s = (await p1.waitLine((l) => l.event === 'token-write', 'stale write', from)).line;
    assert.equal(s.succeeded, false, "etcd refuses the deposed leader's token");
    assert.equal(await suite.client.get(`${log}/stale`).string(), null);
    await p1.waitLine((l) => l.status === 'follower' && l.leader === 'p2', 'p1 queues again', from);
    for (const p of [p1, p2]) p.send('stop');
    await Promise.all([p1.exited, p2.exited]);
  });

  test('5 participants, 20 forced handovers (stops, kills, pauses): fenced writes never interleave', async () => {
    const ns = uniqueName('el');
    const path = `/${ns}/e`;
    const log = `/${ns}/log`;
    let n = 0;
    const spawnOne = (): Child => {
      const p = participant(ns, `p${n++}`, path, log);
      p.send('auto 20');
      return p;
    };
    let live: Child[] = Array.from({ length: 5 }, spawnOne);
    const leaderOf = (): { p: Child; token: bigint } | undefined => {
      let best: { p: Child; token: bigint } | undefined;
      for (const p of live) {
        const s = p.status;
        if (s?.status !== 'leader' || p.child.signalCode !== null) continue;
        const token = BigInt(s.token ?? 0);
        if (best === undefined || token > best.token) best = { p, token };
      }
      return best;
    };
    const nextLeader = (above: bigint): Promise<{ p: Child; token: bigint }> =>
      waitFor(
        () => {
          const l = leaderOf();
          return l !== undefined && l.token > above ? l : undefined;
        },
        { timeoutMs: testTimeout(15000), intervalMs: 10, message: 'a new leader' },
      );
    const wrote = (p: Child, token: bigint): Promise<unknown> =>
      waitFor(() => hasWrite(p, token), {
        timeoutMs: testTimeout(10000),
        intervalMs: 20,
        message: `${p.id} wrote`,
      });
    const hasWrite = async (p: Child, token: bigint): Promise<boolean> => {
      const keys = await suite.client.getAll().prefix(`${log}/${p.id}-`).strings();
      return Object.values(keys).some((v) => v === String(token));
    };
    let current = await nextLeader(0n);
    const plan: readonly ('stop' | 'kill' | 'pause')[] = ['stop', 'kill', 'pause', 'stop'];
    for (let i = 0; i < 20; i++) {
      await wrote(current.p, current.token);
      const action = plan[i % plan.length];
      const old = current;
      if (action === 'stop') {
        old.p.send('stop');
        live = live.filter((p) => p !== old.p).concat(spawnOne());
        current = await nextLeader(old.token);
        assert.equal(await withTimeout(old.p.exited, testTimeout(10000), 'exit'), 0);
      } else if (action === 'kill') {
        await old.p.kill();
        live = live.filter((p) => p !== old.p).concat(spawnOne());
        current = await nextLeader(old.token);
      } else {
        old.p.child.kill('SIGSTOP');
        current = await nextLeader(old.token);
        const from = old.p.lines.length;
        old.p.child.kill('SIGCONT');
        const first = await old.p.waitLine((l) => l.event === 'status', 'after SIGCONT', from);
        assert.equal(first.line.status, 'follower', `${old.p.id} says non-leader first`);
      }
    }
    await wrote(current.p, current.token);
    for (const p of live) p.send('stop');
    await Promise.all(live.map((p) => withTimeout(p.exited, testTimeout(15000), `${p.id} exit`)));

    // Every fenced write that etcd committed, in commit order: tokens never go back.
    const res = await suite.client.getAll().prefix(`${log}/`).exec();
    const writes = res.kvs
      .map((kv) => ({
        rev: BigInt(kv.mod_revision),
        token: BigInt(kv.value.toString()),
        who: kv.key
          .toString()
          .slice(log.length + 1)
          .split('-')[0],
      }))
      .sort((x, y) => (x.rev < y.rev ? -1 : 1));
    const owner = new Map<bigint, string | undefined>();
    let prev = 0n;
    for (const w of writes) {
      assert.ok(w.token >= prev, `token ${w.token} written after ${prev} at revision ${w.rev}`);
      prev = w.token;
      assert.equal(owner.get(w.token) ?? w.who, w.who, 'one participant per token');
      owner.set(w.token, w.who);
    }
    assert.ok(owner.size >= 21, `${owner.size} terms wrote`);
  });
});
