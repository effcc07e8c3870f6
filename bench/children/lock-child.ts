/**
 * Lock users in their own process, for the lock cases: ours (one connector per process, shared
 * by its contenders, as an application would), etcd3's Lock (try-only, retried with backoff) and
 * etcd's lock service (v3lock API, one lease per contender, as etcdctl-style clients).
 *
 * Args: <ours|etcd3|v3lock> <endpoints,comma-separated>
 * Commands:
 * - {"op":"contend","name":n,"contenders":k,"durationMs":d,"startAt":wallMs,"ttl":s} -> k loops of
 *   lock/unlock from `startAt` for `durationMs`; replies `contended` with one record per cycle
 *   (contender, request/grant/release wall times in ms, key, token when known).
 * - {"op":"latency","name":n,"n":count,"ttl":s} -> `latency` with `samples` (lock+unlock, ms),
 *   uncontended, in this process.
 * - {"op":"lock","name":n,"ttl":s} -> `locked`; {"op":"unlock"} -> `unlocked` (driven over the pipe).
 * - {"op":"writes","name":n,"n":count,"awake":bool} -> `writes` with `samples` (ms): a put and a
 *   delete of key `n` through the side's plain etcd3 client (etcd3 and v3lock sides), the
 *   transport's floor for a lock cycle (two writes); `awake` keeps the event loop busy meanwhile
 *   (setImmediate), so the process is never asleep in epoll when the answer comes.
 */
import { Etcd3, EtcdLockFailedError, type Lock as Etcd3Lock } from 'etcd3';
import { ExponentialBackoff, handleType, retry } from 'cockatiel';
import type { Lock } from '../../src/index.js';
import { V3LockClient } from '../v3lock.js';
import { fail, send, serve } from './protocol.js';

const [mode = 'ours', endpointList = ''] = process.argv.slice(2);
const endpoints = endpointList.split(',');

/** Wall-clock ms with sub-ms precision: comparable across the bench's processes. */
const wall = (): number => performance.timeOrigin + performance.now();

interface CycleRecord {
  c: number;
  req: number;
  grant: number;
  rel: number;
  key: string;
  token?: string;
}

/** One side: how to take and give back the lock named `name`. */
interface Side {
  /** A contender's lock function (per contender state, e.g. its own lease). */
  contender(
    name: string,
    ttl: number,
  ): Promise<{
    lock(): Promise<{ key: string; token?: string; release(): Promise<void> }>;
    close(): Promise<void>;
  }>;
  close(): Promise<void>;
  /** The side's plain etcd3 client (etcd3 and v3lock sides), for `writes`. */
  readonly plain?: Etcd3;
}

async function oursSide(): Promise<Side> {
  const { EtcdConnector } = await import('../../src/index.js');
  const conn = new EtcdConnector(endpoints, 'bench');
  // The process keeps its session for the TTL (as a service's connector does, and as Go's Mutex
  // runs on a Session made once): the figures are the lock's, not a lease grant's.
  const kept = new Map<number, Promise<unknown>>();
  return {
    async contender(name, ttl) {
      if (!kept.has(ttl)) kept.set(ttl, conn.session({ ttl }));
      await kept.get(ttl);
      const m = conn.newMutex(name, { ttl });
      return Promise.resolve({
        async lock() {
          const l: Lock = await m.lock();
          return { key: l.key, token: l.token.revision, release: () => l.unlock() };
        },
        close: () => Promise.resolve(),
      });
    },
    close: () => conn.close(),
  };
}

function etcd3Side(): Side {
  const client = new Etcd3({ hosts: endpoints });
  // etcd3's Lock is try-only: a failed attempt is retried with exponential backoff (10-100 ms).
  const policy = retry(handleType(EtcdLockFailedError), {
    maxAttempts: Number.MAX_SAFE_INTEGER,
    backoff: new ExponentialBackoff({ initialDelay: 10, maxDelay: 100 }),
  });
  return {
    plain: client,
    contender(name, ttl) {
      return Promise.resolve({
        async lock() {
          const l: Etcd3Lock = await policy.execute(() => client.lock(name).ttl(ttl).acquire());
          return { key: name, release: () => l.release() };
        },
        close: () => Promise.resolve(),
      });
    },
    close: () => {
      client.close();
      return Promise.resolve();
    },
  };
}

function v3lockSide(): Side {
  const client = new Etcd3({ hosts: endpoints });
  const locks = new V3LockClient(endpoints[0] ?? '');
  return {
    plain: client,
    async contender(name, ttl) {
      // One lease per contender (the server's Mutex key is name/<lease hex>), long enough for
      // the run: no keepalive needed.
      const lease = client.lease(Math.max(ttl, 120), { autoKeepAlive: false });
      const id = await lease.grant();
      return {
        async lock() {
          const key = await locks.lock(name, id);
          return { key, release: () => locks.unlock(key) };
        },
        close: () => lease.revoke(),
      };
    },
    close: () => {
      locks.close();
      client.close();
      return Promise.resolve();
    },
  };
}

async function contend(side: Side, cmd: Record<string, unknown>): Promise<void> {
  const name = String(cmd.name);
  const ttl = Number(cmd.ttl ?? 10);
  const k = Number(cmd.contenders);
  const startAt = Number(cmd.startAt);
  const endAt = startAt + Number(cmd.durationMs);
  const contenders = await Promise.all(Array.from({ length: k }, () => side.contender(name, ttl)));
  const records: CycleRecord[] = [];
  const errors: string[] = [];
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, startAt - wall())));
  const cpu0 = process.cpuUsage();
  await Promise.all(
    contenders.map(async (ct, c) => {
      while (wall() < endAt) {
        const req = wall();
        try {
          const held = await ct.lock();
          const grant = wall();
          await held.release();
          records.push({
            c,
            req,
            grant,
            rel: wall(),
            key: held.key,
            ...(held.token === undefined ? {} : { token: held.token }),
          });
        } catch (err) {
          errors.push(err instanceof Error ? err.message : String(err));
          if (errors.length > 100) return;
        }
      }
    }),
  );
  const cpu = process.cpuUsage(cpu0);
  await Promise.all(contenders.map((ct) => ct.close()));
  send('contended', {
    records,
    errors: errors.slice(0, 5),
    errorCount: errors.length,
    cpuMs: (cpu.user + cpu.system) / 1000,
  });
}

async function latency(side: Side, cmd: Record<string, unknown>): Promise<void> {
  const name = String(cmd.name);
  const ttl = Number(cmd.ttl ?? 10);
  const ct = await side.contender(name, ttl);
  const samples: number[] = [];
  for (let i = 0; i < Number(cmd.n); i++) {
    const t0 = performance.now();
    const held = await ct.lock();
    await held.release();
    samples.push(performance.now() - t0);
  }
  await ct.close();
  send('latency', { samples });
}

async function writes(side: Side, cmd: Record<string, unknown>): Promise<void> {
  const { plain } = side;
  if (plain === undefined) throw new Error(`writes: the ${mode} side has no plain etcd3 client`);
  const key = String(cmd.name);
  let awake = cmd.awake === true;
  const spin = (): void => {
    if (awake) setImmediate(spin);
  };
  spin();
  const samples: number[] = [];
  try {
    for (let i = 0; i < Number(cmd.n); i++) {
      const t0 = performance.now();
      await plain.put(key).value('');
      await plain.delete().key(key);
      samples.push(performance.now() - t0);
    }
  } finally {
    awake = false;
  }
  send('writes', { samples });
}

async function main(): Promise<void> {
  let side: Side;
  if (mode === 'ours') side = await oursSide();
  else if (mode === 'etcd3') side = etcd3Side();
  else side = v3lockSide();
  let held: { release(): Promise<void> } | undefined;
  let driven: Awaited<ReturnType<Side['contender']>> | undefined;
  serve(
    async (cmd) => {
      if (cmd.op === 'contend') await contend(side, cmd);
      else if (cmd.op === 'latency') await latency(side, cmd);
      else if (cmd.op === 'writes') await writes(side, cmd);
      else if (cmd.op === 'lock') {
        driven ??= await side.contender(String(cmd.name), Number(cmd.ttl ?? 10));
        held = await driven.lock();
        send('locked');
      } else if (cmd.op === 'unlock') {
        const receivedAt = wall();
        await held?.release();
        held = undefined;
        send('unlocked', { receivedAt, releasedAt: wall() });
      } else if (cmd.op === 'forget') {
        await driven?.close();
        driven = undefined;
        send('forgot');
      }
    },
    async () => {
      await held?.release().catch(() => undefined);
      await side.close();
    },
  );
  send('ready');
}

main().catch(fail);
