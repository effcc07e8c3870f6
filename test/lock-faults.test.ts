/**
 * Locks under faults, with holders in their own processes (test/fixtures/lock-holder.ts) on a
 * 3-member cluster: a holder paused past its TTL, and a fenced counter incremented under the lock
 * by 4 processes while holders are paused and members killed.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, SessionLostError } from '../src/index.js';
import { startProxy, testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { Child, type Line } from './fixtures/elector-harness.js';
import { waitQueueLength } from './fixtures/lock-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

const TTL_S = 2;

/** The holder fixture prints more fields than the elector's Line names. */
type Out = Line & Record<string, unknown>;
const out = (l: Line): Out => l as Out;

void describe('locks under faults', () => {
  const suite = etcdSuite({ members: 3 });

  function holder(ns: string, id: string, path: string, mode: string, target: string): Child {
    const args = [suite.etcd.endpoints.join(','), ns, path, id, String(TTL_S), mode, target, '150'];
    const child = new Child(id, 'lock-holder', args);
    suite.defer(() => child.kill());
    return child;
  }

  test('a short blackhole: the holder is suspended (signal not aborted), then held again', async () => {
    const ns = uniqueName('lf');
    const endpoint = suite.etcd.endpoints[0];
    assert.ok(endpoint !== undefined);
    const proxy = await startProxy(endpoint);
    suite.defer(() => proxy.close());
    // TTL 5: suspended after ~1.25 s of silence, lost only at 5 s; room for a loaded machine.
    const conn = suite.connect(ns, { endpoints: [proxy.endpoint] });
    const lock = await conn.newMutex(`/${ns}/locks/short`, { ttl: 5 }).lock();
    const states: string[] = [];
    const reading = (async () => {
      for await (const st of lock.status()) states.push(st);
    })();
    proxy.blackhole();
    await waitFor(() => lock.suspended, {
      timeoutMs: testTimeout(5000),
      intervalMs: 10,
      message: 'suspended',
    });
    assert.equal(lock.signal.aborted, false, 'suspended is not lost');
    proxy.pass();
    await waitFor(() => lock.state === 'held', {
      timeoutMs: testTimeout(10000),
      intervalMs: 10,
      message: 'held again after a re-check',
    });
    assert.equal(lock.signal.aborted, false);
    await lock.fencedTxn([conn.client.put(`/${ns}/after`).value('1')]);
    await lock.unlock();
    await reading;
    assert.deepEqual(states, ['held', 'suspended', 'held', 'released']);
  });

  test('a blackhole past the TTL: lost by its own deadline, before the next waiter holds', async () => {
    const ns = uniqueName('lf');
    const path = `/${ns}/locks/blackhole`;
    const endpoint = suite.etcd.endpoints[0];
    assert.ok(endpoint !== undefined);
    const proxy = await startProxy(endpoint);
    suite.defer(() => proxy.close());
    const a = suite.connect(ns, { endpoints: [proxy.endpoint] });
    const b = suite.connect(ns);
    const held = await a.newMutex(path, { ttl: TTL_S }).lock();
    const session = await a.session({ ttl: TTL_S });
    const order: string[] = [];
    let lostAt = 0;
    let deadline = 0;
    held.signal.addEventListener('abort', () => {
      lostAt = performance.now();
      deadline = session.deadline;
      order.push('a lost');
    });
    const next = b
      .newMutex(path, { ttl: TTL_S })
      .lock()
      .then((l) => (order.push('b holds'), l));
    await waitQueueLength(suite.client, `${path}/`, 2);
    proxy.blackhole();
    const bl = await withTimeout(next, testTimeout(15000), 'b holds');
    assert.deepEqual(order, ['a lost', 'b holds'], 'never two holders');
    assert.ok(held.signal.reason instanceof SessionLostError, String(held.signal.reason));
    // Lost at the local deadline (send time of the last acknowledged keepalive + TTL).
    const late = lostAt - deadline;
    assert.ok(
      late >= 0 && late <= testTimeout(250),
      `lost ${late.toFixed(0)} ms after the deadline`,
    );
    proxy.pass();
    await bl.unlock();
  });

  test('holder SIGSTOPped past its TTL: the next holds within TTL + 1.5 s; the resumed one is lost first, its writes fail', async () => {
    const ns = uniqueName('lf');
    const path = `/${ns}/locks/pause`;
    const log = `/${ns}/log`;
    const a = holder(ns, 'A', path, 'hold', log);
    const heldA = out((await a.waitLine((l) => l.event === 'held', 'A holds')).line);
    await a.waitLine((l) => l.event === 'work' && l.ok === true, 'A works');
    const b = holder(ns, 'B', path, 'hold', log);
    await waitQueueLength(suite.client, `${path}/`, 2);

    const stoppedAt = Date.now();
    a.child.kill('SIGSTOP');
    const heldB = out((await b.waitLine((l) => l.event === 'held', 'B holds')).line);
    const took = Number(heldB.at) - stoppedAt;
    assert.ok(took <= TTL_S * 1000 + 1500, `B held ${took} ms after A stopped (TTL ${TTL_S} s)`);
    assert.ok(BigInt(heldB.token ?? 0) > BigInt(heldA.token ?? 0), 'tokens strictly increase');
    await b.waitLine((l) => l.event === 'work' && l.ok === true, 'B works');

    // Still stopped well past its TTL; then resume.
    const resumedAt = Date.now();
    a.child.kill('SIGCONT');
    await a.waitLine((l) => l.event === 'lost-seen', 'A sees the loss');
    // A write A sent just before the stop may report its (successful) reply after the resume;
    // anything else A does after the resume comes after the loss.
    const afterResume = a.lines.map(out).filter((l) => Number(l.at) >= resumedAt);
    const first = afterResume.find((l) => l.event !== 'work');
    assert.equal(first?.event, 'lost', `A after SIGCONT: ${JSON.stringify(afterResume)}`);
    // Its own deadline passed (SessionLostError), or the watch told it first, on the same wake-up,
    // that the lease's expiry deleted its key (NotLockedError): lost either way.
    assert.ok(
      ([ErrorCode.SessionLost, ErrorCode.NotLocked] as string[]).includes(String(first.reason)),
      String(first.reason),
    );
    assert.ok(
      !afterResume.some((l) => l.event === 'work-start'),
      'no work started after the resume',
    );
    a.send('token-write stale');
    const stale = (await a.waitLine((l) => l.event === 'token-write', 'stale write')).line;
    assert.equal(stale.succeeded, false, "etcd refuses the paused holder's token");
    assert.equal(await suite.client.get(`${log}/stale`).string(), null);

    // In etcd's history, every write of A precedes every write of B.
    const writes = (await suite.client.getAll().prefix(`${log}/`).exec()).kvs.map((kv) => ({
      who: kv.key.toString().slice(log.length + 1, log.length + 2),
      rev: BigInt(kv.mod_revision),
    }));
    const lastA = writes.filter((w) => w.who === 'A').reduce((m, w) => (w.rev > m ? w.rev : m), 0n);
    const firstB = writes
      .filter((w) => w.who === 'B')
      .reduce((m, w) => (w.rev < m ? w.rev : m), BigInt(Number.MAX_SAFE_INTEGER));
    assert.ok(lastA < firstB, `A wrote at ${lastA}, B from ${firstB}`);
    for (const p of [a, b]) p.send('stop');
    await Promise.all([a, b].map((p) => withTimeout(p.exited, testTimeout(10000), p.id)));
  });

  test('a fenced counter under the lock: 4 processes, paused holders, killed members: count = acknowledged increments', async (t) => {
    const ns = uniqueName('lf');
    const path = `/${ns}/locks/counter`;
    const counter = `/${ns}/counter`;
    const ids = ['P0', 'P1', 'P2', 'P3'];
    const procs = ids.map((id) => holder(ns, id, path, 'counter', counter));
    // A holder between its read of the counter and its write: where a pause loses updates.
    const holding = (): Child | undefined => procs.find((p) => p.lines.at(-1)?.event === 'read');
    const incs = (): number =>
      procs.reduce((n, p) => n + p.lines.filter((l) => l.event === 'inc').length, 0);
    const progress = async (n: number, what: string): Promise<void> => {
      const from = incs();
      await waitFor(() => incs() >= from + n, {
        timeoutMs: testTimeout(30000),
        intervalMs: 20,
        message: what,
      });
    };
    await progress(4, 'first increments');
    const faults: string[] = [];
    for (let round = 0; round < 3; round++) {
      // A holder paused past its TTL.
      const h = await waitFor(holding, {
        timeoutMs: testTimeout(10000),
        intervalMs: 2,
        message: 'a holder',
      });
      h.child.kill('SIGSTOP');
      await sleep(TTL_S * 1000 + 1000); // the fault's duration
      h.child.kill('SIGCONT');
      faults.push(`paused ${h.id}`);
      await progress(2, `increments after pausing ${h.id}`);
      // An etcd member killed (the raft leader in odd rounds), then restarted.
      const victim =
        round % 2 === 1
          ? await suite.etcd.leader()
          : suite.etcd.members[round % suite.etcd.members.length];
      assert.ok(victim !== undefined);
      await victim.kill();
      faults.push(`killed ${victim.name}`);
      await progress(2, `increments with ${victim.name} down`);
      await victim.restart();
      await progress(2, `increments after restarting ${victim.name}`);
    }
    for (const p of procs) p.send('stop');
    await Promise.all(procs.map((p) => withTimeout(p.exited, testTimeout(30000), `${p.id} exit`)));

    const acked = procs.flatMap((p) =>
      p.lines.map(out).filter((l) => l.event === 'inc' && l.landed === true),
    );
    const tried = procs.flatMap((p) => p.lines.map(out).filter((l) => l.event === 'inc'));
    const value = (await suite.client.get(counter).string()) ?? '0:';
    const count = Number(value.split(':')[0]);
    t.diagnostic(
      `faults: ${faults.join(', ')}; ${tried.length} increments tried, ${acked.length} ` +
        `acknowledged (${acked.filter((l) => l.resolved === true).length} resolved after a ` +
        `timeout), counter ${count}; not landed: ` +
        JSON.stringify(tried.filter((l) => l.landed !== true).map((l) => [l.id, l.error])),
    );
    assert.equal(count, acked.length, 'counter = acknowledged increments');
    assert.ok(
      tried.some((l) => l.landed === false && (l.error as unknown) === ErrorCode.NotLocked),
      'a paused holder tried to write after its lock was gone, and was refused',
    );
    const ops = await suite.client.getAll().prefix(`${counter}-ops/`).keys();
    assert.equal(ops.length, acked.length, 'one op record per acknowledged increment');

    // etcd's history of the counter: +1 each time, fencing tokens strictly increasing.
    const history: { count: number; token: bigint }[] = [];
    const latest = (await suite.client.get(counter).exec()).kvs[0];
    assert.ok(latest !== undefined);
    const watcher = await suite.client.watch().key(counter).startRevision('1').create();
    await withTimeout(
      new Promise<void>((resolve) => {
        watcher.on('put', (kv) => {
          const [c, , token] = kv.value.toString().split(':');
          history.push({ count: Number(c), token: BigInt(token ?? 0) });
          if (kv.mod_revision === latest.mod_revision) resolve();
        });
      }),
      testTimeout(10000),
      'counter history',
    );
    await watcher.cancel();
    history.forEach((h, i) => {
      assert.equal(h.count, i + 1, `write ${i} of the counter`);
      if (i > 0) assert.ok(h.token > (history[i - 1]?.token ?? 0n), `token of write ${i}`);
    });
  });

  test('semaphore and RWMutex holders in 6 processes, paused and a member killed: never more holders than allowed', async (t) => {
    const ns = uniqueName('lf');
    const markers = `/${ns}/markers`;
    const spawnHolder = (id: string, path: string, kind: string): Child => {
      const endpoints = suite.etcd.endpoints.join(',');
      const args = [endpoints, ns, path, id, String(TTL_S), kind, markers, '80'];
      const child = new Child(id, 'permit-holder', args);
      suite.defer(() => child.kill());
      return child;
    };
    const procs = [
      spawnHolder('S0', `/${ns}/sem`, 'sem:2'),
      spawnHolder('S1', `/${ns}/sem`, 'sem:2'),
      spawnHolder('S2', `/${ns}/sem`, 'sem:2'),
      spawnHolder('R0', `/${ns}/rw`, 'read'),
      spawnHolder('R1', `/${ns}/rw`, 'read'),
      spawnHolder('W0', `/${ns}/rw`, 'write'),
    ];
    const helds = (): number =>
      procs.reduce((n, p) => n + p.lines.filter((l) => l.event === 'held').length, 0);
    const progress = async (n: number, what: string): Promise<void> => {
      const from = helds();
      await waitFor(() => helds() >= from + n, {
        timeoutMs: testTimeout(30000),
        intervalMs: 20,
        message: what,
      });
    };
    await progress(6, 'first holds');
    const faults: string[] = [];
    for (const round of [0, 1]) {
      const h = await waitFor(() => procs.find((p) => p.lines.at(-1)?.event === 'held'), {
        timeoutMs: testTimeout(10000),
        intervalMs: 2,
        message: 'a holder',
      });
      h.child.kill('SIGSTOP');
      await sleep(TTL_S * 1000 + 1000); // the fault's duration
      h.child.kill('SIGCONT');
      faults.push(`paused ${h.id}`);
      await progress(4, `holds after pausing ${h.id}`);
      const victim = round === 0 ? await suite.etcd.leader() : suite.etcd.members[2];
      assert.ok(victim !== undefined);
      await victim.kill();
      faults.push(`killed ${victim.name}`);
      await progress(2, `holds with ${victim.name} down`);
      await victim.restart();
    }
    for (const p of procs) p.send('stop');
    await Promise.all(procs.map((p) => withTimeout(p.exited, testTimeout(30000), `${p.id} exit`)));

    // etcd's history of the markers: who held, revision by revision.
    const end = (await suite.client.get(`/${ns}/none`).exec()).header.revision;
    const events: { type: 'put' | 'delete'; key: string; rev: bigint }[] = [];
    const watcher = await suite.client.watch().prefix(`${markers}/`).startRevision('1').create();
    const done = new Promise<void>((resolve) => {
      watcher.on('data', (res) => {
        for (const e of res.events) {
          events.push({
            type: e.type === 'Put' ? 'put' : 'delete',
            key: e.kv.key.toString(),
            rev: BigInt(e.kv.mod_revision),
          });
        }
        if (BigInt(res.header.revision) >= BigInt(end)) resolve();
      });
    });
    await suite.client.put(`/${ns}/end`).value('x'); // a revision after the last marker event
    await withTimeout(done, testTimeout(10000), 'markers history');
    await watcher.cancel();
    const present = new Set<string>();
    let maxSem = 0;
    let maxReaders = 0;
    let writerBeside = 0;
    for (let i = 0; i < events.length; i++) {
      const e = events[i];
      if (e === undefined) continue;
      if (e.type === 'put') present.add(e.key);
      else present.delete(e.key);
      if (events[i + 1]?.rev === e.rev) continue; // one revision at a time
      const names = [...present].map((k) => k.slice(markers.length + 1));
      const sem = names.filter((n) => n.startsWith('s-')).length;
      if (sem > 2) t.diagnostic(`revision ${e.rev}: ${names.join(', ')}`);
      maxSem = Math.max(maxSem, sem);
      const readers = names.filter((n) => n.startsWith('r-')).length;
      const writers = names.filter((n) => n.startsWith('w-')).length;
      maxReaders = Math.max(maxReaders, readers);
      if (writers > 1 || (writers === 1 && readers > 0)) {
        writerBeside++;
        t.diagnostic(`revision ${e.rev}: ${names.join(', ')}`);
      }
    }
    t.diagnostic(
      `faults: ${faults.join(', ')}; ${events.length} marker events; at most ${maxSem} ` +
        `semaphore holders, ${maxReaders} readers together`,
    );
    assert.ok(events.length > 20, `${events.length} marker events`);
    assert.ok(maxSem <= 2, `at most 2 semaphore holders, saw ${maxSem}`);
    assert.equal(writerBeside, 0, 'never a writer beside anyone');
  });
});
