/**
 * Mutex latency: an uncontended lock + unlock, and the handover (the holder unlocks -> the next
 * waiter holds).
 *
 * - Uncontended, each side timed in its own process on a session made beforehand: ours (a bench
 *   child), Go's concurrency.Mutex — the code `etcdctl lock` runs — in the Go peer
 *   (test/go-peer, `mutex.cycles`), etcd's lock service (v3lock API: Lock + Unlock) and etcd3's
 *   Lock (which grants, puts and revokes per lock by design).
 * - The transport's floor beside it: the two writes of a lock cycle as plain calls (a put and a
 *   delete), through etcd3 in a child (also with its event loop kept busy) and through Go's
 *   clientv3 in the Go peer (`kv.cycles`). No lock over etcd3 can beat etcd3's own two writes.
 * - Handover: the holder in its own process unlocks, the waiter (queued 150 ms before) holds.
 *   Ours: the holder is a bench child told `unlock` over a pipe; the waiter's `lock()` resolves
 *   here. etcdctl: `etcdctl lock` holds until SIGINT; the waiting `etcdctl lock` prints its key.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Etcd3 } from 'etcd3';
import { withTimeout } from '../../src/testing/index.js';
import type { BenchCase } from '../case.js';
import { childScript, LineProcess, pause, type BenchEnv, type Ours } from '../env.js';
import { fmt, median, now, summarize } from '../stats.js';
import { ratioRow, type Row } from '../table.js';

const TTL = 10;
const WAIT_MS = 15000;
const SETTLE_MS = 150;

/**
 * Uncontended cycles are timed twice per side: right after 5 warm-up cycles (a process that
 * locks now and then: Node runs the code cold, Go compiled) and after {@link WARM_CYCLES} more
 * (a service that locks often: V8 has optimised the path). The target is on the warm figure.
 */
const WARM_CYCLES = 500;

/** One side's uncontended samples (ms): cold (after 5 cycles) and warm. */
interface Uncontended {
  cold: number[];
  warm: number[];
}

function goPeerBinary(): string {
  const root = fileURLToPath(new URL('../../../', import.meta.url));
  const dir =
    process.env.ETCDC_GO_PEER_CACHE ?? join(root, 'node_modules', '.cache', 'etcd-go-peer');
  return join(dir, 'go-peer');
}

function child(env: BenchEnv, mode: 'ours' | 'etcd3' | 'v3lock'): LineProcess {
  return new LineProcess(process.execPath, [
    childScript('lock-child'),
    mode,
    env.endpoints.join(','),
  ]);
}

/** `n` cycles right after 5 warm-up ones, then `n` more after `warmUp` untimed ones. */
async function coldAndWarm(
  cycles: (count: number) => Promise<number[]>,
  n: number,
  warmUp: number,
): Promise<Uncontended> {
  await cycles(5);
  const cold = await cycles(n);
  await cycles(warmUp);
  return { cold, warm: await cycles(n) };
}

/**
 * `n` cycles timed inside the Go peer, cold and warm: `mutex.cycles` (uncontended Lock+Unlock of
 * Go's Mutex) or `kv.cycles` (a plain put + delete).
 */
async function goCycles(
  env: BenchEnv,
  cmd: 'mutex.cycles' | 'kv.cycles',
  n: number,
  warmUp: number,
): Promise<Uncontended | undefined> {
  const bin = goPeerBinary();
  if (!existsSync(bin)) {
    env.note(`Go peer not built (${bin}; npm run bench runs bootstrap.sh): no Go Mutex figures`);
    return undefined;
  }
  const go = new LineProcess(bin, ['--endpoints', env.endpoints.join(','), '--ttl', String(TTL)]);
  try {
    await go.waitLine((l) => l.includes('"ready":true'), WAIT_MS, 'go peer ready');
    const path = `${env.prefix('lat-go')}/lock`;
    let id = 0;
    const cycles = async (count: number): Promise<number[]> => {
      const my = ++id;
      go.send(JSON.stringify({ id: my, cmd, path, count }));
      const line = await go.waitLine(
        (l) => l.includes(`"id":${my},`),
        WAIT_MS + count * 200,
        'cycles',
      );
      const r = JSON.parse(line.text) as { ok: boolean; samplesMs?: number[]; error?: string };
      if (!r.ok || r.samplesMs === undefined) throw new Error(`go peer: ${line.text}`);
      return r.samplesMs;
    };
    return await coldAndWarm(cycles, n, warmUp);
  } finally {
    await go.stop(3000);
  }
}

/**
 * In the child's own process, `n` times cold and `n` times warm: lock + unlock (`latency`), or a
 * plain put + delete through etcd3 (`writes`; `awake`: with the event loop kept busy).
 */
async function inProcess(
  env: BenchEnv,
  mode: 'ours' | 'etcd3' | 'v3lock',
  n: number,
  warmUp: number,
  op: 'latency' | 'writes' = 'latency',
  awake = false,
): Promise<Uncontended> {
  const c = child(env, mode);
  try {
    await c.waitEvent('ready', WAIT_MS);
    const name = `${env.prefix(`lat-${mode}`)}/lock`;
    const cycles = async (count: number): Promise<number[]> => {
      c.send(JSON.stringify({ op, name, n: count, ttl: TTL, awake }));
      const r = await c.waitEvent(op, WAIT_MS + count * 200);
      return r.data.samples as number[];
    };
    return await coldAndWarm(cycles, n, warmUp);
  } finally {
    await c.stop(3000);
  }
}

type Connector = InstanceType<Ours['EtcdConnector']>;

interface Handover {
  /** Unlock told -> the next holder holds. */
  total: number;
  /** Unlock told -> the old key's delete seen by a separate watcher. */
  toDelete: number;
}

/** Watches `prefix` for its first delete; resolves with the time it was seen. */
async function firstDelete(
  watcher: Etcd3,
  prefix: string,
): Promise<{ at: Promise<number>; cancel: () => Promise<void> }> {
  const w = await watcher.watch().prefix(prefix).create();
  const at = new Promise<number>((resolve) => {
    w.on('delete', () => {
      resolve(now());
    });
  });
  return { at: withTimeout(at, WAIT_MS, 'lock key delete'), cancel: () => w.cancel() };
}

/** Ours, leaving side: unlock told -> the child got it; the child's unlock() (ms). */
const pipeMs: number[] = [];
const releaseMs: number[] = [];

async function oursHandover(
  holder: LineProcess,
  conn: Connector,
  env: BenchEnv,
  watcher: Etcd3,
): Promise<Handover> {
  const name = `${env.prefix('handover-lock')}/lock`;
  holder.send(JSON.stringify({ op: 'lock', name, ttl: TTL }));
  await holder.waitEvent('locked', WAIT_MS);
  const waiting = conn.newMutex(name, { ttl: TTL }).lock();
  let held: { unlock(): Promise<void> } | undefined;
  try {
    await waitKeys(watcher, `${name}/`, 2);
    await pause(SETTLE_MS);
    const del = await firstDelete(watcher, `${name}/`);
    const t0 = now();
    holder.send(JSON.stringify({ op: 'unlock' }));
    held = await withTimeout(waiting, WAIT_MS, 'ours handover');
    const total = now() - t0;
    const deletedAt = await del.at;
    await del.cancel();
    const unlocked = await holder.waitEvent('unlocked', WAIT_MS);
    const received = Number(unlocked.data.receivedAt) - performance.timeOrigin - t0;
    const released = Number(unlocked.data.releasedAt) - performance.timeOrigin - t0;
    pipeMs.push(received);
    releaseMs.push(released - received);
    holder.send(JSON.stringify({ op: 'forget' }));
    await holder.waitEvent('forgot', WAIT_MS);
    return { total, toDelete: deletedAt - t0 };
  } finally {
    await held?.unlock();
  }
}

async function etcdctlHandover(env: BenchEnv, watcher: Etcd3): Promise<Handover> {
  const name = `${env.prefix('handover-ctl')}/lock`;
  const args = [`--endpoints=${env.endpoints.join(',')}`, 'lock', name, `--ttl=${TTL}`];
  const isKey = (line: string): boolean => line.startsWith(`${name}/`);
  const a = new LineProcess(env.etcdctl, args);
  let b: LineProcess | undefined;
  try {
    await a.waitLine(isKey, WAIT_MS, 'etcdctl a holds');
    b = new LineProcess(env.etcdctl, args);
    await waitKeys(watcher, `${name}/`, 2);
    await pause(SETTLE_MS);
    const del = await firstDelete(watcher, `${name}/`);
    const t0 = now();
    a.kill('SIGINT');
    const line = await b.waitLine(isKey, WAIT_MS, 'etcdctl b holds');
    const deletedAt = await del.at;
    await del.cancel();
    return { total: line.at - t0, toDelete: deletedAt - t0 };
  } finally {
    b?.kill('SIGINT');
    await Promise.all([a.stop(3000), b?.stop(3000)]);
  }
}

async function waitKeys(client: Etcd3, prefix: string, n: number): Promise<void> {
  const deadline = now() + WAIT_MS;
  while ((await client.getAll().prefix(prefix).count()) < n) {
    if (now() > deadline) throw new Error(`${prefix}: ${n} keys never appeared`);
    await pause(5);
  }
}

export const lockLatencyCase: BenchCase = {
  name: 'lock-latency',
  title: 'mutex: uncontended lock+unlock and handover (ours vs Go Mutex/etcdctl, v3lock, etcd3)',
  async run(env) {
    const n = env.reps(30, 200);
    const warmUp = env.reps(20, WARM_CYCLES);
    const reps = env.reps(5, 25);
    const ours = await env.ours();
    const rows: Row[] = [];

    const inOurs =
      ours === undefined
        ? undefined
        : await env.guard('lock-latency', () => inProcess(env, 'ours', n, warmUp));
    const inGo = await goCycles(env, 'mutex.cycles', n, warmUp);
    const inV3 = await inProcess(env, 'v3lock', n, warmUp);
    const inE3 = await inProcess(env, 'etcd3', n, warmUp);
    const sides = [inOurs, inGo, inV3, inE3];
    const [io, ig, iv, ie] = sides.map((x) => (x === undefined ? undefined : summarize(x.warm)));
    const [co, cg] = sides.map((x) => (x === undefined ? undefined : summarize(x.cold)));
    rows.push(
      ratioRow(
        'lock+unlock uncontended, warm, p50 (ms)',
        io?.p50,
        "Go Mutex (etcdctl's)",
        ig?.p50,
        'lower',
        1.2,
      ),
      ratioRow(
        'lock+unlock uncontended, warm, p99 (ms)',
        io?.p99,
        "Go Mutex (etcdctl's)",
        ig?.p99,
        'lower',
      ),
      ratioRow('lock+unlock uncontended, warm, p50 (ms)', io?.p50, 'v3lock API', iv?.p50, 'lower'),
      ratioRow('lock+unlock uncontended, warm, p50 (ms)', io?.p50, 'etcd3 Lock', ie?.p50, 'lower'),
      ratioRow(
        'lock+unlock uncontended, cold, p50 (ms)',
        co?.p50,
        "Go Mutex (etcdctl's)",
        cg?.p50,
        'lower',
      ),
    );
    // The transport's floor: the two writes of a lock cycle as plain calls, etcd3 against Go's
    // client, and etcd3 again with its event loop kept awake (never asleep in epoll meanwhile).
    const wGo = await goCycles(env, 'kv.cycles', n, warmUp);
    const wE3 = await inProcess(env, 'etcd3', n, warmUp, 'writes');
    const wAwake = await inProcess(env, 'etcd3', n, warmUp, 'writes', true);
    const [wg, we, wa] = [wGo, wE3, wAwake].map((x) =>
      x === undefined ? undefined : summarize(x.warm),
    );
    rows.push(
      ratioRow(
        'put + delete, plain client, warm, p50 (ms)',
        we?.p50,
        'Go clientv3',
        wg?.p50,
        'lower',
      ),
      ratioRow(
        'lock+unlock (ours) / put + delete (etcd3)',
        io?.p50,
        'etcd3 put+delete',
        we?.p50,
        'lower',
      ),
    );
    env.note(
      `lock-latency: the transport's floor, a plain put + delete, warm p50: etcd3 ${fmt(we?.p50)} ` +
        `ms, the same with its event loop kept awake ${fmt(wa?.p50)} ms, Go clientv3 ` +
        `${fmt(wg?.p50)} ms`,
    );

    const oursH: Handover[] = [];
    const ctlH: Handover[] = [];
    const holder = child(env, 'ours');
    const conn = ours === undefined ? undefined : new ours.EtcdConnector(env.endpoints, 'bench');
    const client = env.rawClient();
    try {
      await holder.waitEvent('ready', WAIT_MS);
      // The holder is a service that has locked before (its lock path warm, as in the warm
      // uncontended figure); the waiter's session exists before the first repetition.
      holder.send(
        JSON.stringify({ op: 'latency', name: `${env.prefix('warm')}/lock`, n: warmUp, ttl: TTL }),
      );
      await holder.waitEvent('latency', WAIT_MS + warmUp * 200);
      await conn?.session({ ttl: TTL });
      for (let i = 0; i < reps; i++) {
        if (conn !== undefined) {
          const t = await env.guard('lock handover', () => oursHandover(holder, conn, env, client));
          if (t !== undefined) oursH.push(t);
        }
        ctlH.push(await etcdctlHandover(env, client));
      }
    } finally {
      await Promise.all([holder.stop(3000), conn?.close()]);
    }
    const [oh, ch] = [oursH, ctlH].map((x) =>
      x.length === 0 ? undefined : summarize(x.map((h) => h.total)),
    );
    const split = (side: string, hs: Handover[]): string =>
      `${side} ${fmt(median(hs.map((h) => h.toDelete)))} + ` +
      fmt(median(hs.map((h) => h.total - h.toDelete)));
    env.note(
      `lock handover: median split unlock told -> key delete seen + rest (ms): ` +
        `${split('ours', oursH)}; ${split('etcdctl', ctlH)}; ours' leaving side: pipe to the ` +
        `child ${fmt(median(pipeMs))}, its unlock() ${fmt(median(releaseMs))}`,
    );
    rows.push(
      ratioRow(
        'lock handover, queued 150 ms, p50 (ms)',
        oh?.p50,
        'etcdctl lock',
        ch?.p50,
        'lower',
        1.0,
      ),
      ratioRow('lock handover, queued 150 ms, p99 (ms)', oh?.p99, 'etcdctl lock', ch?.p99, 'lower'),
    );
    env.note(
      `lock-latency: ${n} uncontended cycles per side timed cold (after 5 warm-up ones) and ` +
        `warm (after ${warmUp} more), each side timed in its own process (Go: in the Go peer) on ` +
        `a session made beforehand (etcd3's Lock grants and revokes a lease per lock by design); ` +
        `warm p99: ours ${fmt(io?.p99)}, Go ${fmt(ig?.p99)}, ` +
        `v3lock ${fmt(iv?.p99)}, etcd3 ${fmt(ie?.p99)} ms; handover: ${reps} repetitions per ` +
        'side; the leaving holder is told over a pipe (ours) or by SIGINT (etcdctl)',
    );
    return rows;
  },
};
