/**
 * Election handover after a clean stop: the leader steps down, how long until the next participant
 * knows it leads. Ours (`stop()` -> the next elector's stream says leader) against etcd3's Election
 * (`resign()` -> `elected`) and `etcdctl elect` (SIGINT -> the next etcdctl prints its key).
 *
 * The leaving leader runs in its own process on every side (a bench child for ours and etcd3, an
 * etcdctl for etcdctl), told to step down over a pipe or by a signal; the waiter runs here, except
 * for etcdctl, whose waiter prints to a pipe. Every repetition runs the three sides one after the
 * other on fresh election names. A separate watcher sees the old leader key's delete, which splits
 * each figure into the leaving side's part (stop -> delete seen) and the waiter's part.
 */
import type { Campaign, Etcd3 } from 'etcd3';
import { uniqueName, withTimeout } from '../../src/testing/index.js';
import type { BenchCase } from '../case.js';
import { childScript, deferred, LineProcess, pause, type BenchEnv, type Ours } from '../env.js';
import { fmt, median, now, summarize } from '../stats.js';
import { StreamReader } from '../streams.js';
import { ratioRow, type Row } from '../table.js';

const TTL = 10;
/**
 * How long the waiter has been queued when the leader steps down (all sides): 150 ms is steady
 * state; 20 ms is "stop the old instance right after the new one joined" (a rolling deploy), where
 * a watch started at or below etcd's current revision is still served by etcd 3.4's 100 ms
 * catch-up loop.
 */
const SETTLE_STEADY_MS = 150;
const SETTLE_PROMPT_MS = 20;
const WAIT_MS = 15000;

interface Sample {
  /** Stop -> next participant reports leader. */
  total: number;
  /** Stop -> the old key's delete seen by a separate watcher. */
  toDelete: number;
}

/** Watches `prefix` for its first delete; resolves with the time it was seen. */
async function firstDelete(
  watcher: Etcd3,
  prefix: string,
): Promise<{ at: Promise<number>; cancel: () => Promise<void> }> {
  const w = await watcher.watch().prefix(prefix).create();
  const d = deferred<number>();
  w.on('delete', () => {
    d.resolve(now());
  });
  return { at: withTimeout(d.promise, WAIT_MS, 'leader key delete'), cancel: () => w.cancel() };
}

/** Makes the child leader of `name` (an election name or path) and waits until it says so. */
async function childLeads(child: LineProcess, name: string): Promise<void> {
  child.send(JSON.stringify({ op: 'campaign', name, ttl: TTL }));
  await child.waitEvent('leader', WAIT_MS);
}

async function etcd3Once(
  child: LineProcess,
  b: Etcd3,
  watcher: Etcd3,
  settleMs: number,
): Promise<Sample> {
  const name = uniqueName('handover');
  let campaign: Campaign | undefined;
  try {
    await childLeads(child, name);
    const second = b.election(name, TTL).campaign('b');
    campaign = second;
    const errors: unknown[] = [];
    second.on('error', (err) => errors.push(err));
    // '_isWaiting' is etcd3's own test hook: B found its predecessor and is about to watch it.
    await withTimeout(
      new Promise((resolve) => second.once('_isWaiting', resolve)),
      WAIT_MS,
      'etcd3 second candidate waiting',
    );
    await pause(settleMs);
    const del = await firstDelete(watcher, `election/${name}/`);
    const elected = new Promise<number>((resolve) =>
      second.once('elected', () => {
        resolve(now());
      }),
    );
    const t0 = now();
    child.send(JSON.stringify({ op: 'resign' }));
    const [t1, deletedAt] = await withTimeout(Promise.all([elected, del.at]), WAIT_MS, 'etcd3');
    await Promise.all([child.waitEvent('resigned', WAIT_MS), del.cancel()]);
    if (errors.length > 0) throw new Error(`etcd3 campaign error: ${String(errors[0])}`);
    return { total: t1 - t0, toDelete: deletedAt - t0 };
  } finally {
    await campaign?.resign().catch(() => undefined);
  }
}

async function etcdctlOnce(env: BenchEnv, watcher: Etcd3, settleMs: number): Promise<Sample> {
  const name = `${env.prefix('handover-ctl')}/elect`;
  const args = (who: string): string[] => [
    `--endpoints=${env.endpoints.join(',')}`,
    'elect',
    name,
    who,
  ];
  const isKey = (line: string): boolean => line.startsWith(`${name}/`);
  const a = new LineProcess(env.etcdctl, args('a'));
  let b: LineProcess | undefined;
  try {
    await a.waitLine(isKey, WAIT_MS, 'etcdctl a elected');
    b = new LineProcess(env.etcdctl, args('b'));
    // B is queued once its key exists; then give it the same settle time as the others.
    const deadline = now() + WAIT_MS;
    while ((await watcher.getAll().prefix(`${name}/`).count()) < 2) {
      if (now() > deadline) throw new Error('etcdctl b never queued');
      await pause(5);
    }
    await pause(settleMs);
    const del = await firstDelete(watcher, `${name}/`);
    const t0 = now();
    a.kill('SIGINT');
    const line = await b.waitLine(isKey, WAIT_MS, 'etcdctl b elected');
    const deletedAt = await del.at;
    await del.cancel();
    return { total: line.at - t0, toDelete: deletedAt - t0 };
  } finally {
    b?.kill('SIGINT');
    await Promise.all([a.stop(3000), b?.stop(3000)]);
  }
}

type Connector = InstanceType<Ours['EtcdConnector']>;

async function oursOnce(
  ours: Ours,
  child: LineProcess,
  conn: Connector,
  watcher: Etcd3,
  settleMs: number,
): Promise<Sample> {
  const path = conn.constructPath(uniqueName('handover'));
  await childLeads(child, path);
  const b = conn.newLeaderElector(path, 'b', TTL);
  const reader = new StreamReader(b.start());
  try {
    await reader.until((e) => e.status === ours.LEStatus.Follower, WAIT_MS, 'ours follower');
    await pause(settleMs);
    const del = await firstDelete(watcher, `${path}/`);
    const t0 = now();
    child.send(JSON.stringify({ op: 'resign' }));
    const elected = await reader.until((e) => e.status === ours.LEStatus.Leader, WAIT_MS, 'ours');
    const deletedAt = await del.at;
    await Promise.all([child.waitEvent('resigned', WAIT_MS), del.cancel()]);
    return { total: elected.at - t0, toDelete: deletedAt - t0 };
  } finally {
    await b.stop();
    await reader.close();
  }
}

type Side = 'ours' | 'etcd3' | 'etcdctl';

function spawnLeader(env: BenchEnv, mode: 'ours' | 'etcd3'): LineProcess {
  return new LineProcess(process.execPath, [
    childScript('elect-child'),
    mode,
    env.endpoints.join(','),
  ]);
}

export const handoverCase: BenchCase = {
  name: 'handover',
  title: 'election handover after a clean stop (ours vs etcd3 Election vs etcdctl elect)',
  async run(env) {
    const reps = env.reps(3, 25);
    const rawB = env.rawClient();
    const watcher = env.rawClient();
    const ours = await env.ours();
    const conn = ours === undefined ? undefined : new ours.EtcdConnector(env.endpoints, 'bench');
    const oursChild = ours === undefined ? undefined : spawnLeader(env, 'ours');
    const etcd3Child = spawnLeader(env, 'etcd3');
    const samples = new Map<number, Record<Side, Sample[]>>();
    for (const settle of [SETTLE_STEADY_MS, SETTLE_PROMPT_MS]) {
      samples.set(settle, { ours: [], etcd3: [], etcdctl: [] });
    }
    try {
      await etcd3Child.waitEvent('ready', WAIT_MS);
      await oursChild?.waitEvent('ready', WAIT_MS);
      for (let i = 0; i < reps; i++) {
        for (const [settle, s] of samples) {
          if (ours !== undefined && oursChild !== undefined && conn !== undefined) {
            const o = await env.guard('handover', () =>
              oursOnce(ours, oursChild, conn, watcher, settle),
            );
            if (o !== undefined) s.ours.push(o);
          }
          s.etcd3.push(await etcd3Once(etcd3Child, rawB, watcher, settle));
          s.etcdctl.push(await etcdctlOnce(env, watcher, settle));
        }
      }
    } finally {
      await Promise.all([oursChild?.stop(5000), etcd3Child.stop(5000), conn?.close()]);
    }
    const rows: Row[] = [];
    for (const [settle, s] of samples) {
      const sum = (side: Side): ReturnType<typeof summarize> | undefined =>
        s[side].length === 0 ? undefined : summarize(s[side].map((x) => x.total));
      const split = (side: Side): string => {
        const toDelete = median(s[side].map((x) => x.toDelete));
        const rest = median(s[side].map((x) => x.total - x.toDelete));
        return `${side} ${fmt(toDelete)} + ${fmt(rest)}`;
      };
      env.note(
        `handover, waiter queued ${settle} ms: median split stop -> key delete seen + rest ` +
          `(ms): ${split('ours')}; ${split('etcd3')}; ${split('etcdctl')}`,
      );
      const [o, e, c] = [sum('ours'), sum('etcd3'), sum('etcdctl')];
      const label = `handover, queued ${settle} ms`;
      rows.push(
        ratioRow(`${label}, p50 (ms)`, o?.p50, 'etcd3 Election', e?.p50, 'lower', 0.5),
        ratioRow(`${label}, p50 (ms)`, o?.p50, 'etcdctl elect', c?.p50, 'lower', 1.0),
        ratioRow(`${label}, p99 (ms)`, o?.p99, 'etcd3 Election', e?.p99, 'lower'),
        ratioRow(`${label}, p99 (ms)`, o?.p99, 'etcdctl elect', c?.p99, 'lower'),
      );
    }
    env.note(
      `handover: ${reps} repetitions per side and settle time; the leaving leader is told to stop ` +
        `over a pipe (ours, etcd3) or by SIGINT (etcdctl)`,
    );
    return rows;
  },
};
