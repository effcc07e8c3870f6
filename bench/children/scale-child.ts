/**
 * Many idle watchers (or electors) in one process, for memory, idle CPU and delivery figures.
 *
 * Args: observers <ours|etcd3> <endpoints> <key prefix> <count> <idle ms> <settle ms>
 *   Starts <count> observers (ours) or etcd3 watchers on keys <prefix>/k<i>, then `ready`; then,
 *   after <idle ms> of idleness, `idle` with RSS growth and CPU; then `settled` with the RSS growth
 *   <settle ms> later, with no forced GC (see settledRss); then waits for one put to each
 *   key (written by the parent after the `go` command) and reports `delivered` with the absolute
 *   time (performance.timeOrigin + now) of the last event.
 * Args: electors ours <endpoints> <path prefix> <count> <idle ms> <settle ms>
 *   1,000 leaders on one connector and 1,000 followers on a second; `idle`, `settled` as above; on
 *   the `handover` command closes the leaders' connector and reports how long until every follower
 *   leads.
 * Args: locks <ours|etcd3> <endpoints> <path prefix> <count> <idle ms> <settle ms>
 *   Holds <count> distinct locks (ours: Mutexes on one connector; etcd3: its Lock, one lease each),
 *   acquired 100 at a time; `ready` with the acquisition time; `idle`, `settled` as above; on the
 *   `release` command releases them all and reports `released` with the time it took.
 * Run with --expose-gc. Commands come as JSON lines on stdin; a closed stdin means exit.
 */
import { Etcd3 } from 'etcd3';
import { fail, send, serve } from './protocol.js';

const [
  kind,
  mode,
  endpointList = '',
  prefix = '',
  countText = '1000',
  idleText = '10000',
  settleText = '60000',
] = process.argv.slice(2);
const endpoints = endpointList.split(',');
const count = Number(countText);
const idleMs = Number(idleText);
/** Idleness after the idle window before the settled figure (V8's memory reducer ran by then). */
const settledAfterMs = Number(settleText);

function memory(): { rss: number; heap: number } {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed };
}

/**
 * RSS once the idle process has given memory back. A start-up burst grows V8's young generation to
 * tens of MB and leaves garbage in the old one; V8 gives that memory back only in GCs while little
 * is allocated — its memory reducer starts them on its own after some idle seconds (10-30 s here)
 * — and returns freed pages from a background thread after each GC, so RSS read right after a GC
 * still counts them. So: no forced GC here; RSS after settledAfterMs more of idleness (sampled,
 * so the process keeps a timer like any idle service).
 */
async function settledRss(): Promise<{ rss: number; afterMs: number }> {
  const t0 = performance.now();
  while (performance.now() - t0 < settledAfterMs) {
    await new Promise((resolve) => setTimeout(resolve, 2500));
  }
  return { rss: process.memoryUsage().rss, afterMs: performance.now() - t0 };
}

/**
 * Reports `idle` (CPU over the idle window, memory growth over `base` right after it) and then
 * `settled` (memory growth once settled).
 */
async function reportIdle(base: { rss: number; heap: number }): Promise<void> {
  const cpu = await idleCpu(idleMs);
  const m = memory();
  send('idle', { cpu, rss: m.rss - base.rss, heap: m.heap - base.heap });
  const s = await settledRss();
  send('settled', { rss: s.rss - base.rss, afterMs: s.afterMs });
}

/** Absolute time in ms, comparable across processes on one machine. */
function wallNow(): number {
  return performance.timeOrigin + performance.now();
}

/** Time for the setup's stragglers (last reads, watch creates) before idleness is measured. */
const SETTLE_MS = 3000;

/** CPU of this process over `ms` of idleness (after settling), as a percentage of one core. */
async function idleCpu(ms: number): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const c = process.cpuUsage(c0);
  return ((c.user + c.system) / 1000 / (performance.now() - t0)) * 100;
}

/** Resolves when `n` calls of the returned `tick` happened. */
function counter(n: number): { tick: () => void; done: Promise<void> } {
  let left = n;
  let resolve!: () => void;
  const done = new Promise<void>((r) => (resolve = r));
  if (n === 0) resolve();
  return {
    tick: () => {
      if (--left === 0) resolve();
    },
    done,
  };
}

async function observers(): Promise<void> {
  const base = memory();
  const keys = Array.from({ length: count }, (_x, i) => `${prefix}/k${i}`);
  let delivered = counter(count);
  let lastAt = 0;
  const onPut = (): void => {
    lastAt = wallNow();
    delivered.tick();
  };
  let close: () => Promise<void>;
  const t0 = performance.now();
  if (mode === 'ours') {
    const { EtcdConnector } = await import('../../src/index.js');
    const conn = new EtcdConnector(endpoints, 'bench');
    // A start revision makes each observer start watching at once (no read for "now").
    const from = Number((await conn.client.get(`${prefix}/none`).exec()).header.revision) + 1;
    // Ready = the warm-up put to every key was delivered: every watch is established.
    const warm = counter(count);
    for (const key of keys) {
      const obs = conn.newObserver(key);
      void (async () => {
        let first = true;
        for await (const ev of obs.start(from, false)) {
          if (ev.type !== 'put') continue;
          if (first) {
            first = false;
            warm.tick();
          } else onPut();
        }
      })();
    }
    send('created', { ms: performance.now() - t0 });
    await warmUp(keys, warm.done);
    close = () => conn.close();
  } else {
    const client = new Etcd3({ hosts: endpoints });
    const warm = counter(count);
    const watchers = await Promise.all(
      keys.map(async (key) => {
        const w = await client.watch().key(key).create();
        let first = true;
        w.on('put', () => {
          if (first) {
            first = false;
            warm.tick();
          } else onPut();
        });
        return w;
      }),
    );
    send('created', { ms: performance.now() - t0 });
    await warmUp(keys, warm.done);
    close = async () => {
      await Promise.all(watchers.map((w) => w.cancel()));
      client.close();
    };
  }
  send('ready', { setupMs: performance.now() - t0 });
  await reportIdle(base);
  serve(
    async (command) => {
      if (command.cmd !== 'go') return;
      delivered = counter(count);
      await delivered.done;
      send('delivered', { lastAt });
    },
    () => close(),
  );
}

/** Puts one value to every key from a separate client, until every watcher has seen its put. */
async function warmUp(keys: readonly string[], allSeen: Promise<void>): Promise<void> {
  const writer = new Etcd3({ hosts: endpoints });
  try {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < keys.length) await writer.put(keys[next++] ?? '').value('warm');
    };
    await Promise.all(Array.from({ length: 64 }, worker));
    await allSeen;
  } finally {
    writer.close();
  }
}

async function electors(): Promise<void> {
  const { EtcdConnector, LEStatus } = await import('../../src/index.js');
  const base = memory();
  const leadersConn = new EtcdConnector(endpoints, 'bench');
  const followersConn = new EtcdConnector(endpoints, 'bench');
  const paths = Array.from({ length: count }, (_x, i) => `${prefix}/e${i}`);
  const leading = counter(count);
  const following = counter(count);
  const takenOver = { value: counter(count) };
  // An object: set by the command handler while the loops below are suspended.
  const phase = { handing: false };
  for (const path of paths) {
    const leader = leadersConn.newLeaderElector(path, 'a', 10);
    void (async () => {
      let seen = false;
      for await (const ev of leader.start()) {
        if (!seen && ev.status === LEStatus.Leader) {
          seen = true;
          leading.tick();
        }
      }
    })();
  }
  await leading.done;
  for (const path of paths) {
    const follower = followersConn.newLeaderElector(path, 'b', 10);
    void (async () => {
      let followed = false;
      let led = false;
      for await (const ev of follower.start()) {
        if (!followed && ev.status === LEStatus.Follower && ev.leader === 'a') {
          followed = true;
          following.tick();
        }
        if (phase.handing && !led && ev.status === LEStatus.Leader) {
          led = true;
          takenOver.value.tick();
        }
      }
    })();
  }
  await following.done;
  send('ready', {});
  await reportIdle(base);
  serve(
    async (command) => {
      if (command.cmd !== 'handover') return;
      phase.handing = true;
      const t0 = performance.now();
      await leadersConn.close();
      const closedMs = performance.now() - t0;
      await takenOver.value.done;
      send('handedOver', { ms: performance.now() - t0, closeMs: closedMs });
    },
    () => followersConn.close(),
  );
}

/** Something held that `release()` lets go of. */
interface Held {
  release(): Promise<void>;
}

async function locks(): Promise<void> {
  // Loaded before the baseline, as etcd3 is: what the locks hold is measured, not the library.
  const { EtcdConnector } = await import('../../src/index.js');
  const base = memory();
  const paths = Array.from({ length: count }, (_x, i) => `${prefix}/l${i}`);
  let acquire: (path: string) => Promise<Held>;
  let close: () => Promise<void>;
  if (mode === 'ours') {
    const conn = new EtcdConnector(endpoints, 'bench');
    acquire = async (path) => {
      const lock = await conn.newMutex(path, { ttl: 10 }).lock();
      return { release: () => lock.unlock() };
    };
    close = () => conn.close();
  } else {
    const client = new Etcd3({ hosts: endpoints });
    acquire = async (path) => {
      const lock = await client.lock(path).ttl(10).acquire();
      return { release: () => lock.release() };
    };
    close = () => {
      client.close();
      return Promise.resolve();
    };
  }
  const t0 = performance.now();
  const held: Held[] = [];
  for (let i = 0; i < paths.length; i += 100) {
    held.push(...(await Promise.all(paths.slice(i, i + 100).map(acquire))));
  }
  send('ready', { acquireMs: performance.now() - t0 });
  await reportIdle(base);
  serve(
    async (command) => {
      if (command.cmd !== 'release') return;
      const t1 = performance.now();
      await Promise.all(held.map((h) => h.release()));
      send('released', { ms: performance.now() - t1 });
    },
    () => close(),
  );
}

const kinds: Record<string, () => Promise<void>> = { electors, locks, observers };
(kinds[kind ?? ''] ?? observers)().catch(fail);
