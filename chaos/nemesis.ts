/**
 * The nemesis: faults on a seeded random schedule, on two independent tracks — the cluster's
 * (members killed, paused, the whole cluster restarted, history compacted) and the clients'
 * (workers paused or killed, their connections reset, blackholed, delayed, flapping). Each track
 * has its own generator seeded from the run's seed, so a seed reproduces the schedule. Every
 * fault is healed before the next on its track, and the nemesis heals everything when it stops.
 * A third track, the vandal, deletes or overwrites ephemeral keys: it is no fault of the
 * connection, so it is written down apart (and the other tracks' schedules did not change).
 */
import { setTimeout as wait } from 'node:timers/promises';
import type { EtcdCluster, EtcdMember, FaultProxy } from '../src/testing/index.js';
import { Rng } from './rng.js';

/** What the nemesis needs from the controller. */
export interface Stage {
  cluster: EtcdCluster;
  /** The worker slots' names. */
  workers: readonly string[];
  /** A worker's proxies (one per member). */
  proxies(worker: string): readonly FaultProxy[];
  /** The worker's process id, if it runs now. */
  pid(worker: string): number | undefined;
  /** Kills the worker (SIGKILL). */
  kill(worker: string): Promise<void>;
  /** Starts a new incarnation of a killed worker. */
  restart(worker: string): Promise<void>;
  /** Compacts etcd's history at the current revision, once the recorder has read it. */
  compact(): Promise<boolean>;
  /** Writes one fault record. */
  record(fault: string, target: string, phase: 'start' | 'end', id: number): void;
  /**
   * The vandal: deletes the ephemeral key of `target` (a worker, or `shared`: the key every
   * worker wants), or writes a value over it without a lease; written down with its revision.
   */
  vandalize(target: string, act: 'delete' | 'overwrite'): Promise<void>;
  /** Session TTL of the workers, in seconds. */
  ttl: number;
}

type Fault = (rng: Rng, stop: AbortSignal) => Promise<void>;

/** Seeds the vandal's track apart from the two fault tracks (seed * 2 + 1, seed * 2 + 2). */
const VANDAL_SEED = 0x5eed_0000;

/** Waits `ms`, or less if `signal` fires. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return wait(ms, undefined, { signal }).catch(() => undefined);
}

export class Nemesis {
  private nextId = 1;
  private clusterRestarted = false;
  private readonly paused = new Set<number>();

  constructor(private readonly stage: Stage) {}

  /** Runs both tracks until `durationMs` passed; resolves once everything is healed. */
  async run(seed: number, durationMs: number): Promise<void> {
    const stop = new AbortController();
    const timer = setTimeout(() => {
      stop.abort();
    }, durationMs);
    try {
      await Promise.all([
        this.track(new Rng(seed * 2 + 1), stop.signal, this.clusterFaults()),
        this.track(new Rng(seed * 2 + 2), stop.signal, this.clientFaults()),
        this.track(new Rng(seed + VANDAL_SEED), stop.signal, this.vandal()),
      ]);
    } finally {
      clearTimeout(timer);
      await this.healAll();
    }
  }

  private async track(
    rng: Rng,
    stop: AbortSignal,
    faults: readonly (readonly [Fault, number])[],
  ): Promise<void> {
    // Let the workers settle first.
    await sleep(rng.between(1000, 2000), stop);
    while (!stop.aborted) {
      const fault = rng.weighted(faults);
      await fault(rng, stop);
      await sleep(rng.between(300, 1500), stop);
    }
  }

  /** Runs a fault between its start and end records. */
  private async fault(name: string, target: string, body: () => Promise<void>): Promise<void> {
    const id = this.nextId++;
    this.stage.record(name, target, 'start', id);
    try {
      await body();
    } finally {
      this.stage.record(name, target, 'end', id);
    }
  }

  private clusterFaults(): (readonly [Fault, number])[] {
    const { cluster } = this.stage;
    const member = (rng: Rng): EtcdMember => rng.pick(cluster.members);
    return [
      [
        async (rng) => {
          const m = member(rng);
          await this.fault('member-kill', m.name, async () => {
            await m.kill();
            await sleep(rng.between(500, 2500));
            await m.restart();
          });
        },
        3,
      ],
      [
        async (rng) => {
          const m = member(rng);
          await this.fault('member-pause-short', m.name, async () => {
            m.pause();
            await sleep(rng.between(200, 800));
            m.resume();
          });
        },
        3,
      ],
      [
        async (rng) => {
          const m = member(rng);
          // Past etcd's election timeout (1 s): a paused raft leader is replaced.
          await this.fault('member-pause-long', m.name, async () => {
            m.pause();
            await sleep(rng.between(1500, 3500));
            m.resume();
          });
        },
        2,
      ],
      [
        async () => {
          await this.fault('compaction', 'cluster', async () => {
            await this.stage.compact();
          });
        },
        2,
      ],
      [
        async (rng) => {
          // At most once a run: every member killed, then all restarted together.
          if (this.clusterRestarted) return;
          this.clusterRestarted = true;
          await this.fault('cluster-restart', 'cluster', async () => {
            await Promise.all(cluster.members.map((m) => m.kill()));
            await sleep(rng.between(500, 1500));
            await Promise.all(cluster.members.map((m) => m.restart()));
          });
        },
        1,
      ],
    ];
  }

  private clientFaults(): (readonly [Fault, number])[] {
    const { stage } = this;
    const ttlMs = stage.ttl * 1000;
    const worker = (rng: Rng): string => rng.pick(stage.workers);
    const pauseFor = async (name: string, w: string, ms: number): Promise<void> => {
      const pid = stage.pid(w);
      if (pid === undefined) return;
      await this.fault(name, w, async () => {
        this.signal(pid, 'SIGSTOP');
        this.paused.add(pid);
        await sleep(ms);
        this.paused.delete(pid);
        this.signal(pid, 'SIGCONT');
      });
    };
    const proxies = (w: string): readonly FaultProxy[] => stage.proxies(w);
    return [
      [async (rng) => pauseFor('worker-pause-short', worker(rng), rng.between(300, 1000)), 3],
      [
        async (rng) =>
          pauseFor('worker-pause-long', worker(rng), rng.between(ttlMs + 500, ttlMs + 2000)),
        2,
      ],
      [
        async (rng) => {
          const w = worker(rng);
          if (stage.pid(w) === undefined) return;
          await this.fault('worker-kill', w, async () => {
            await stage.kill(w);
            await sleep(rng.between(300, 2000));
            await stage.restart(w);
          });
        },
        2,
      ],
      [
        async (rng) => {
          const w = worker(rng);
          await this.fault('proxy-reset', w, () => {
            for (const p of proxies(w)) p.reset();
            return Promise.resolve();
          });
        },
        3,
      ],
      [
        async (rng) => {
          const w = worker(rng);
          await this.fault('proxy-blackhole-short', w, async () => {
            for (const p of proxies(w)) p.blackhole();
            await sleep(rng.between(200, ttlMs / 2));
            for (const p of proxies(w)) p.pass();
          });
        },
        2,
      ],
      [
        async (rng) => {
          const w = worker(rng);
          await this.fault('proxy-blackhole-long', w, async () => {
            for (const p of proxies(w)) p.blackhole();
            await sleep(rng.between(ttlMs + 500, ttlMs + 2000));
            for (const p of proxies(w)) p.pass();
          });
        },
        2,
      ],
      [
        async (rng) => {
          const w = worker(rng);
          await this.fault('proxy-delay', w, async () => {
            const ms = rng.between(30, 250);
            for (const p of proxies(w)) p.delay(ms);
            await sleep(rng.between(1000, 3000));
            for (const p of proxies(w)) p.pass();
          });
        },
        2,
      ],
      [
        async (rng) => {
          const w = worker(rng);
          await this.fault('proxy-flap', w, async () => {
            const until = performance.now() + rng.between(1500, 3000);
            while (performance.now() < until) {
              for (const p of proxies(w)) p.blackhole();
              await sleep(rng.between(100, 400));
              for (const p of proxies(w)) p.pass();
              await sleep(rng.between(100, 400));
            }
          });
        },
        2,
      ],
    ];
  }

  /** Now and then (1.3-4.5 s apart), one ephemeral key deleted or overwritten. */
  private vandal(): (readonly [Fault, number])[] {
    const { stage } = this;
    return [
      [
        async (rng, stop) => {
          await sleep(rng.between(1000, 3000), stop);
          if (stop.aborted) return;
          const target = rng.pick([...stage.workers, 'shared']);
          await stage.vandalize(target, rng.pick(['delete', 'overwrite'] as const));
        },
        1,
      ],
    ];
  }

  private signal(pid: number, sig: NodeJS.Signals): void {
    try {
      process.kill(pid, sig);
    } catch {
      // exited meanwhile
    }
  }

  /** Every member running, every worker resumed, every proxy passing. */
  private async healAll(): Promise<void> {
    for (const pid of this.paused) this.signal(pid, 'SIGCONT');
    this.paused.clear();
    for (const w of this.stage.workers) for (const p of this.stage.proxies(w)) p.pass();
    for (const m of this.stage.cluster.members) if (m.paused) m.resume();
    await Promise.all(this.stage.cluster.members.filter((m) => !m.running).map((m) => m.restart()));
    await Promise.all(
      this.stage.workers
        .filter((w) => this.stage.pid(w) === undefined)
        .map((w) => this.stage.restart(w)),
    );
  }
}
