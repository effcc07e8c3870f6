/**
 * Scale: what idle watchers and electors cost. Each side runs in a fresh child process.
 *
 * - 10,000 idle observers (ours) against 10,000 etcd3 watchers: RSS growth, idle CPU, the Watch
 *   streams open at etcd (etcd's own gRPC metrics), and the time until one put to each key was
 *   delivered (first put sent by this process → last event in the child).
 * - 1,000 leaders on one connector + 1,000 followers on another (ours): RSS growth, idle CPU, and
 *   the time from the leaders' connector's close() until every follower leads.
 *
 * - 1,000 held locks (ours: Mutexes on one connector; etcd3: its Lock, a lease each): RSS and
 *   heap growth, idle CPU, the leases kept at etcd, and the time to acquire them all.
 *
 * RSS growth twice: right after the idle window (after a forced GC), and settled — a minute later
 * with no forced GC, once V8's memory reducer gave back what the start-up burst left (a freshly
 * collected heap still holds pages V8 returns only later, from a background thread).
 */
import type { Etcd3 } from 'etcd3';
import { uniqueName } from '../../src/testing/index.js';
import type { BenchCase } from '../case.js';
import { childScript, LineProcess, type BenchEnv } from '../env.js';
import { leaseCount, openStreams } from '../etcd-counts.js';
import { fmt, median } from '../stats.js';
import { ratioRow, type Row } from '../table.js';

const WAIT_MS = 300_000;
/** Rounds of one put per key, per side (a single round moves with the machine's load). */
const DELIVERY_ROUNDS = 3;
const MB = 1024 * 1024;

function num(v: unknown): number {
  return typeof v === 'number' ? v : NaN;
}

/** RSS growth after the settle time with no forced GC, and how long after the idle window. */
interface Settled {
  settledRssMb: number;
  settledAfterS: number;
}

function settledOf(ev: { data: Record<string, unknown> }): Settled {
  return { settledRssMb: num(ev.data.rss) / MB, settledAfterS: num(ev.data.afterMs) / 1000 };
}

/** How many recipes a side starts, how long it idles, and how long more until "settled". */
interface Sizes {
  count: number;
  idleMs: number;
  settleMs: number;
}

/** A fresh scale child (see bench/children/scale-child.ts) of `kind` and `mode`. */
function scaleChild(
  env: BenchEnv,
  kind: 'observers' | 'electors' | 'locks',
  mode: 'ours' | 'etcd3',
  prefix: string,
  sizes: Sizes,
): LineProcess {
  return new LineProcess(process.execPath, [
    '--expose-gc',
    childScript('scale-child'),
    kind,
    mode,
    env.endpoints.join(','),
    prefix,
    String(sizes.count),
    String(sizes.idleMs),
    String(sizes.settleMs),
  ]);
}

interface ObserverResult extends Settled {
  rssMb: number;
  heapMb: number;
  cpu: number;
  streams: number;
  deliverMs: number;
  setupMs: number;
}

async function observers(
  env: BenchEnv,
  raw: Etcd3,
  mode: 'ours' | 'etcd3',
  sizes: Sizes,
): Promise<ObserverResult> {
  const { count } = sizes;
  const endpoint = env.endpoints[0] ?? '';
  const prefix = `/bench/${uniqueName(`scale-${mode}`)}`;
  const streams0 = await openStreams(endpoint, 'Watch');
  const child = scaleChild(env, 'observers', mode, prefix, sizes);
  try {
    const ready = await child.waitEvent('ready', WAIT_MS);
    const idle = await child.waitEvent('idle', WAIT_MS);
    const streams = (await openStreams(endpoint, 'Watch')) - streams0;
    const settled = settledOf(await child.waitEvent('settled', WAIT_MS));
    // One put to each key, 64 in flight, from this process; the median of DELIVERY_ROUNDS.
    const rounds: number[] = [];
    for (let round = 0; round < DELIVERY_ROUNDS; round++) {
      child.send(JSON.stringify({ cmd: 'go' }));
      const t0 = performance.timeOrigin + performance.now();
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < count) await raw.put(`${prefix}/k${next++}`).value(String(round));
      };
      await Promise.all(Array.from({ length: 64 }, worker));
      const delivered = await child.waitEvent('delivered', WAIT_MS);
      rounds.push(num(delivered.data.lastAt) - t0);
    }
    return {
      rssMb: num(idle.data.rss) / MB,
      heapMb: num(idle.data.heap) / MB,
      cpu: num(idle.data.cpu),
      streams,
      deliverMs: median(rounds),
      setupMs: num(ready.data.setupMs),
      ...settled,
    };
  } finally {
    await child.stop(5000);
    // etcd counts a stream as handled only once it notices the client went: wait for that, or
    // the next side's baseline would include this side's stream (and hide its own).
    const until = performance.now() + 10_000;
    while ((await openStreams(endpoint, 'Watch')) > streams0 && performance.now() < until) {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

interface ElectorResult extends Settled {
  rssMb: number;
  cpu: number;
  handoverMs: number;
  closeMs: number;
}

async function electors(env: BenchEnv, sizes: Sizes): Promise<ElectorResult> {
  const child = scaleChild(env, 'electors', 'ours', `/bench/${uniqueName('scale-el')}`, sizes);
  try {
    await child.waitEvent('ready', WAIT_MS);
    const idle = await child.waitEvent('idle', WAIT_MS);
    const settled = settledOf(await child.waitEvent('settled', WAIT_MS));
    child.send(JSON.stringify({ cmd: 'handover' }));
    const done = await child.waitEvent('handedOver', WAIT_MS);
    return {
      rssMb: num(idle.data.rss) / MB,
      cpu: num(idle.data.cpu),
      handoverMs: num(done.data.ms),
      closeMs: num(done.data.closeMs),
      ...settled,
    };
  } finally {
    await child.stop(5000);
  }
}

interface LocksResult extends Settled {
  rssMb: number;
  heapMb: number;
  cpu: number;
  leases: number;
  acquireMs: number;
  releaseMs: number;
}

async function heldLocks(
  env: BenchEnv,
  raw: Etcd3,
  mode: 'ours' | 'etcd3',
  sizes: Sizes,
): Promise<LocksResult> {
  const leases0 = await leaseCount(raw);
  const prefix = `/bench/${uniqueName(`scale-locks-${mode}`)}`;
  const child = scaleChild(env, 'locks', mode, prefix, sizes);
  try {
    const ready = await child.waitEvent('ready', WAIT_MS);
    const leases = (await leaseCount(raw)) - leases0;
    const idle = await child.waitEvent('idle', WAIT_MS);
    const settled = settledOf(await child.waitEvent('settled', WAIT_MS));
    child.send(JSON.stringify({ cmd: 'release' }));
    const released = await child.waitEvent('released', WAIT_MS);
    return {
      rssMb: num(idle.data.rss) / MB,
      heapMb: num(idle.data.heap) / MB,
      cpu: num(idle.data.cpu),
      leases,
      acquireMs: num(ready.data.acquireMs),
      releaseMs: num(released.data.ms),
      ...settled,
    };
  } finally {
    await child.stop(5000);
  }
}

export const scaleCase: BenchCase = {
  name: 'scale',
  title: 'idle observers, electors and held locks at scale (each side in its own process)',
  async run(env) {
    const raw = env.rawClient();
    const n = env.reps(2000, 10_000);
    const electorsN = env.reps(200, 1000);
    const electorsRssMb = electorsN === 1000 ? 60 : 12;
    const idleMs = env.reps(3000, 10_000);
    // Long enough for V8's memory reducer to have run (10-30 s of idleness here).
    const settleMs = env.reps(5000, 60_000);
    const locksN = env.reps(200, 1000);
    const ours = await env.ours();
    /** Our side of a figure, unless the library could not be loaded or the side failed. */
    const oursSide = <T>(what: string, run: () => Promise<T>): Promise<T | undefined> =>
      ours === undefined ? Promise.resolve(undefined) : env.guard(what, run);
    const o = await oursSide('scale observers', () =>
      observers(env, raw, 'ours', { count: n, idleMs, settleMs }),
    );
    const p = await observers(env, raw, 'etcd3', { count: n, idleMs, settleMs });
    const e = await oursSide('scale electors', () =>
      electors(env, { count: electorsN, idleMs, settleMs }),
    );
    const lo = await oursSide('scale locks', () =>
      heldLocks(env, raw, 'ours', { count: locksN, idleMs, settleMs }),
    );
    const lp = await heldLocks(env, raw, 'etcd3', { count: locksN, idleMs, settleMs });
    env.note(
      `scale: ${locksN} held locks (ours: Mutexes on one connector; etcd3: its Lock, ` +
        `acquired 100 at a time): heap growth ${fmt(lo?.heapMb)} MB ours, ${fmt(lp.heapMb)} MB ` +
        `etcd3; release all ${fmt(lo?.releaseMs)} ms ours, ${fmt(lp.releaseMs)} ms etcd3`,
    );
    env.note(
      `scale: ${n} observers on ${n} keys, idle CPU over ${idleMs / 1000} s; RSS growth right ` +
        `after that window (after a forced gc) and settled (${fmt(o?.settledAfterS)} s more idle, ` +
        `no forced gc: V8's memory reducer gave back what the start-up burst left); heap growth ` +
        `${fmt(o?.heapMb)} MB ours, ${fmt(p.heapMb)} MB etcd3; setup (start all, one warm-up put ` +
        `each delivered) ${fmt(o?.setupMs)} ms ours, ${fmt(p.setupMs)} ms etcd3; one put each ` +
        `delivered: median of ${DELIVERY_ROUNDS} rounds per side; ${electorsN} ` +
        `leaders + ${electorsN} followers: the leaders' close() took ${fmt(e?.closeMs)} ms of the ` +
        `handover`,
    );
    const rows: Row[] = [
      {
        ...ratioRow(
          `${n} observers: RSS growth, after idle window (MB)`,
          o?.rssMb,
          `etcd3 watchers`,
          p.rssMb,
          'lower',
        ),
        target: 'ratio <= 1.0',
        met: o === undefined ? undefined : o.rssMb <= p.rssMb,
      },
      {
        ...ratioRow(
          `${n} observers: RSS growth, settled (MB)`,
          o?.settledRssMb,
          `etcd3 watchers`,
          p.settledRssMb,
          'lower',
        ),
        target: 'ratio <= 1.0',
        met: o === undefined ? undefined : o.settledRssMb <= p.settledRssMb,
      },
      {
        ...ratioRow(`${n} observers: idle CPU (% core)`, o?.cpu, `etcd3 watchers`, p.cpu, 'lower'),
        target: 'ours <= 1 %',
        met: o === undefined ? undefined : o.cpu <= 1,
      },
      {
        ...ratioRow(
          `${n} observers: Watch streams at etcd`,
          o?.streams,
          `etcd3 watchers`,
          p.streams,
          'lower',
        ),
        target: 'ours <= 3',
        met: o === undefined ? undefined : o.streams <= 3,
      },
      {
        ...ratioRow(
          `${n} observers: one put each delivered (ms)`,
          o?.deliverMs,
          `etcd3 watchers`,
          p.deliverMs,
          'lower',
        ),
        target: 'ratio <= 1.2',
        met: o === undefined ? undefined : o.deliverMs <= 1.2 * p.deliverMs,
      },
      {
        ...ratioRow(
          `${electorsN}+${electorsN} electors: RSS growth, after idle window (MB)`,
          e?.rssMb,
          '—',
          undefined,
          'lower',
        ),
        target: `<= ${electorsRssMb} MB`,
        met: e === undefined ? undefined : e.rssMb <= electorsRssMb,
      },
      {
        ...ratioRow(
          `${electorsN}+${electorsN} electors: RSS growth, settled (MB)`,
          e?.settledRssMb,
          '—',
          undefined,
          'lower',
        ),
        target: `<= ${electorsRssMb} MB`,
        met: e === undefined ? undefined : e.settledRssMb <= electorsRssMb,
      },
      {
        ...ratioRow(
          `${electorsN}+${electorsN} electors: idle CPU (% core)`,
          e?.cpu,
          '—',
          undefined,
          'lower',
        ),
        target: '<= 1 %',
        met: e === undefined ? undefined : e.cpu <= 1,
      },
      {
        ...ratioRow(
          `${electorsN} handovers after close (ms)`,
          e?.handoverMs,
          '—',
          undefined,
          'lower',
        ),
        target: '<= 1000 ms',
        met: e === undefined ? undefined : e.handoverMs <= 1000,
      },
      ratioRow(
        `${locksN} held locks: RSS growth, settled (MB)`,
        lo?.settledRssMb,
        'etcd3 Lock',
        lp.settledRssMb,
        'lower',
      ),
      ratioRow(`${locksN} held locks: idle CPU (% core)`, lo?.cpu, 'etcd3 Lock', lp.cpu, 'lower'),
      ratioRow(
        `${locksN} held locks: leases at etcd`,
        lo?.leases,
        'etcd3 Lock',
        lp.leases,
        'lower',
      ),
      ratioRow(
        `${locksN} held locks: acquire all, 100 at a time (ms)`,
        lo?.acquireMs,
        'etcd3 Lock',
        lp.acquireMs,
        'lower',
      ),
    ];
    return rows;
  },
};
