/**
 * Takeover after the leader's process is SIGKILLed: the leader runs in a child process, the next
 * participant here. The lease then expires on etcd's schedule (TTL after the last keepalive, plus
 * etcd's own expiry check interval), so the figure is the time *beyond* expiry: the new leader's
 * report minus the moment a separate watcher here saw the old leader key deleted.
 */
import type { Campaign, Etcd3, IKeyValue } from 'etcd3';
import { uniqueName, withTimeout } from '../../src/testing/index.js';
import type { BenchCase } from '../case.js';
import { childScript, deferred, LineProcess, pause, type BenchEnv, type Ours } from '../env.js';
import { fmt, median, now } from '../stats.js';
import { StreamReader } from '../streams.js';
import type { Row } from '../table.js';

const TTL = 2;
const WAIT_MS = 20000;
const SETTLE_MS = 150;
const TARGET_MS = 50;

interface Sample {
  /** New leader minus the old key's delete event. */
  beyond: number;
  /** New leader minus the kill. */
  total: number;
}

/** Watches `key` (the child's candidate key, the oldest under `prefix`) for its delete. */
async function watchLeaderKey(
  watcher: Etcd3,
  prefix: string,
): Promise<{ deleted: Promise<number>; cancel: () => Promise<void> }> {
  const res = await watcher.getAll().prefix(prefix).sort('Create', 'Ascend').limit(1).exec();
  const kv: IKeyValue | undefined = res.kvs[0];
  if (kv === undefined) throw new Error(`no candidate key under ${prefix}`);
  const w = await watcher
    .watch()
    .key(kv.key)
    .startRevision(String(Number(res.header.revision) + 1))
    .create();
  const d = deferred<number>();
  w.on('delete', () => {
    d.resolve(now());
  });
  return { deleted: d.promise, cancel: () => w.cancel() };
}

/** A leader of `name` in a child process (see elect-child.ts). */
function spawnLeader(env: BenchEnv, mode: 'ours' | 'etcd3', name: string): LineProcess {
  const child = new LineProcess(process.execPath, [
    childScript('elect-child'),
    mode,
    env.endpoints.join(','),
  ]);
  child.send(JSON.stringify({ op: 'campaign', name, ttl: TTL }));
  return child;
}

async function etcd3Once(env: BenchEnv, raw: Etcd3, watcher: Etcd3): Promise<Sample> {
  const name = uniqueName('takeover');
  const child = spawnLeader(env, 'etcd3', name);
  let campaign: Campaign | undefined;
  try {
    await child.waitEvent('leader', WAIT_MS);
    const parent = raw.election(name, TTL).campaign('parent');
    campaign = parent;
    parent.on('error', () => undefined);
    const elected = new Promise<number>((resolve) =>
      parent.once('elected', () => {
        resolve(now());
      }),
    );
    await withTimeout(
      new Promise((resolve) => parent.once('_isWaiting', resolve)),
      WAIT_MS,
      'etcd3 parent waiting',
    );
    await pause(SETTLE_MS);
    const key = await watchLeaderKey(watcher, `election/${name}/`);
    const killedAt = now();
    child.kill('SIGKILL');
    const [deletedAt, leaderAt] = await withTimeout(
      Promise.all([key.deleted, elected]),
      WAIT_MS,
      'etcd3 takeover',
    );
    await key.cancel();
    return { beyond: leaderAt - deletedAt, total: leaderAt - killedAt };
  } finally {
    await Promise.allSettled([campaign?.resign(), child.stop()]);
  }
}

async function oursOnce(env: BenchEnv, ours: Ours, watcher: Etcd3): Promise<Sample> {
  const conn = new ours.EtcdConnector(env.endpoints, 'bench');
  const path = conn.constructPath(uniqueName('takeover'));
  const child = spawnLeader(env, 'ours', path);
  const elector = conn.newLeaderElector(path, 'parent', TTL);
  let reader: StreamReader<{ status: string }> | undefined;
  try {
    await child.waitEvent('leader', WAIT_MS);
    reader = new StreamReader(elector.start());
    await reader.until((e) => e.status === ours.LEStatus.Follower, WAIT_MS, 'ours follower');
    await pause(SETTLE_MS);
    const key = await watchLeaderKey(watcher, `${path}/`);
    const killedAt = now();
    child.kill('SIGKILL');
    const led = reader.until((e) => e.status === ours.LEStatus.Leader, WAIT_MS, 'ours takeover');
    const [deletedAt, leader] = await Promise.all([key.deleted, led]);
    await key.cancel();
    return { beyond: leader.at - deletedAt, total: leader.at - killedAt };
  } finally {
    await Promise.allSettled([elector.stop(), child.stop()]);
    await reader?.close();
    await conn.close();
  }
}

export const takeoverCase: BenchCase = {
  name: 'takeover',
  title: `takeover after SIGKILL of the leader process (TTL ${TTL} s), beyond lease expiry`,
  async run(env) {
    const reps = env.reps(1, 4);
    const raw = env.rawClient();
    const watcher = env.rawClient();
    const ours = await env.ours();
    const oursSamples: Sample[] = [];
    const peerSamples: Sample[] = [];
    for (let i = 0; i < reps; i++) {
      if (ours !== undefined) {
        const s = await env.guard('takeover', () => oursOnce(env, ours, watcher));
        if (s !== undefined) oursSamples.push(s);
      }
      peerSamples.push(await etcd3Once(env, raw, watcher));
    }
    const o = oursSamples.length > 0 ? median(oursSamples.map((s) => s.beyond)) : undefined;
    const p = median(peerSamples.map((s) => s.beyond));
    env.note(
      `takeover: ${reps} repetitions per side; median kill -> new leader ` +
        `${fmt(median(oursSamples.map((s) => s.total)))} ms ours, ` +
        `${fmt(median(peerSamples.map((s) => s.total)))} ms etcd3 (TTL ${TTL} s; etcd checks ` +
        `expiry every 500 ms); worst beyond-expiry ours ` +
        `${fmt(Math.max(...oursSamples.map((s) => s.beyond)))} ms`,
    );
    const row: Row = {
      name: 'takeover beyond lease expiry, median (ms)',
      ours: o,
      peer: 'etcd3 Election',
      peerValue: p,
      better: 'lower',
      target: `ours <= expiry + ${TARGET_MS} ms`,
      met: o === undefined ? undefined : o <= TARGET_MS,
    };
    return [row];
  },
};
