/**
 * Queue throughput and herd: 4 producer and 4 consumer processes on one queue, ours (Queue, one
 * child process each) beside Go's own `recipe.Queue` (one Go peer process each, test/go-peer).
 *
 * - Burst: every producer enqueues its share back to back; items/s = items / (first enqueue sent
 *   -> last item dequeued). Each item is one enqueue and one dequeue. Latency = dequeue - enqueue.
 * - Trickle: the 4 consumers wait on an empty queue and items come one at a time (the next once
 *   the last was taken): etcd raft proposals per item — Go's consumers all wake and all race for
 *   each item (one proposal per failed claim), ours do not.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { startGoPeer, type GoPeer } from '../../test/fixtures/go-peer.js';
import type { BenchCase } from '../case.js';
import { childScript, LineProcess, type BenchEnv } from '../env.js';
import { median, now, percentile } from '../stats.js';
import { ratioRow, type Row } from '../table.js';

const PRODUCERS = 4;
const CONSUMERS = 4;
const WAIT_MS = 120000;

interface Burst {
  itemsPerSecond: number;
  latencies: number[];
  /** CPU time of every producer and consumer process per item, ms. */
  cpuMsPerItem: number;
}

let clockTicks: number | undefined;

/** CPU time (user + system) so far of the processes `pids`, in ms (from /proc). */
function cpuMs(pids: readonly number[]): number {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  let ticks = 0;
  for (const pid of pids) {
    try {
      // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone
    }
  }
  return (ticks * 1000) / clockTicks;
}

/** etcd's committed raft proposals so far (its /metrics). */
async function proposals(endpoint: string): Promise<number> {
  const res = await fetch(`${endpoint}/metrics`, { signal: AbortSignal.timeout(5000) });
  const m = /^etcd_server_proposals_committed_total (\S+)$/m.exec(await res.text());
  if (m?.[1] === undefined) throw new Error('etcd_server_proposals_committed_total not found');
  return Number(m[1]);
}

/** Our side: producer and consumer child processes. */
class OursSide {
  readonly producers: LineProcess[];
  readonly consumers: LineProcess[];
  private got = 0;
  private readonly latencies: number[] = [];
  private waiters: (() => void)[] = [];

  constructor(env: BenchEnv, path: string) {
    const spawn = (): LineProcess =>
      new LineProcess(process.execPath, [
        childScript('queue-child'),
        env.endpoints.join(','),
        path,
      ]);
    this.producers = Array.from({ length: PRODUCERS }, spawn);
    this.consumers = Array.from({ length: CONSUMERS }, spawn);
  }

  async start(): Promise<void> {
    await Promise.all(
      [...this.producers, ...this.consumers].map((c) => c.waitEvent('ready', WAIT_MS)),
    );
    for (const c of this.consumers) c.send(JSON.stringify({ op: 'consume' }));
    await Promise.all(this.consumers.map((c) => c.waitEvent('consuming', WAIT_MS)));
    // One reader per child from here on (a LineProcess has one cursor).
    for (const c of this.consumers) void this.count(c);
  }

  private async count(c: LineProcess): Promise<void> {
    for (;;) {
      const line = await c.waitEvent('got', 24 * 3600_000).catch(() => undefined);
      if (line === undefined) return;
      this.got += 1;
      if (typeof line.data.latencyMs === 'number') this.latencies.push(line.data.latencyMs);
      for (const w of this.waiters) w();
    }
  }

  async until(n: number): Promise<void> {
    const deadline = now() + WAIT_MS;
    while (this.got < n) {
      if (now() > deadline) throw new Error(`ours: ${this.got} of ${n} items dequeued`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 100);
      });
      this.waiters = [];
    }
  }

  private pids(): number[] {
    return [...this.producers, ...this.consumers].map((c) => c.proc.pid ?? -1);
  }

  async burst(perProducer: number): Promise<Burst> {
    const base = this.got;
    this.latencies.length = 0;
    const cpu0 = cpuMs(this.pids());
    const t0 = now();
    for (const p of this.producers) p.send(JSON.stringify({ op: 'produce', count: perProducer }));
    await this.until(base + perProducer * PRODUCERS);
    const seconds = (now() - t0) / 1000;
    await Promise.all(this.producers.map((p) => p.waitEvent('produced', WAIT_MS)));
    const items = perProducer * PRODUCERS;
    return {
      itemsPerSecond: items / seconds,
      latencies: [...this.latencies],
      cpuMsPerItem: (cpuMs(this.pids()) - cpu0) / items,
    };
  }

  async trickle(items: number, endpoint: string): Promise<number> {
    const producer = this.producers[0];
    if (producer === undefined) throw new Error('no producer');
    const before = await proposals(endpoint);
    for (let i = 0; i < items; i++) {
      const base = this.got;
      producer.send(JSON.stringify({ op: 'produce', count: 1 }));
      await producer.waitEvent('produced', WAIT_MS);
      await this.until(base + 1);
    }
    return ((await proposals(endpoint)) - before) / items;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.producers, ...this.consumers].map((c) => c.stop(5000)));
  }
}

/** Go's side: Go peer processes driven from here, one command at a time each. */
class GoSide {
  private producers: GoPeer[] = [];
  private consumers: GoPeer[] = [];
  private got = 0;
  private readonly latencies: number[] = [];
  private stopping = false;
  private loops: Promise<void>[] = [];

  constructor(
    private readonly env: BenchEnv,
    private readonly path: string,
  ) {}

  async start(): Promise<void> {
    const peer = (): Promise<GoPeer> => startGoPeer({ endpoints: this.env.endpoints, ttl: 10 });
    this.producers = await Promise.all(Array.from({ length: PRODUCERS }, peer));
    this.consumers = await Promise.all(Array.from({ length: CONSUMERS }, peer));
    this.loops = this.consumers.map(async (c) => {
      while (!this.stopping) {
        const res = await c
          .send({ cmd: 'queue.dequeue', path: this.path }, { deadlineMs: 24 * 3600_000 })
          .catch(() => undefined);
        if (res?.ok !== true) return;
        this.got += 1;
        this.latencies.push(Date.now() - Number(String(res.value).split(' ')[0]));
      }
    });
  }

  async until(n: number): Promise<void> {
    const deadline = now() + WAIT_MS;
    while (this.got < n) {
      if (now() > deadline) throw new Error(`go: ${this.got} of ${n} items dequeued`);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }

  private pids(): number[] {
    return [...this.producers, ...this.consumers].map((p) => p.pid);
  }

  async burst(perProducer: number): Promise<Burst> {
    const base = this.got;
    this.latencies.length = 0;
    const cpu0 = cpuMs(this.pids());
    const t0 = now();
    await Promise.all(
      this.producers.map(async (p) => {
        for (let i = 0; i < perProducer; i++) {
          await p.ok({ cmd: 'queue.enqueue', path: this.path, value: `${Date.now()} item ${i}` });
        }
      }),
    );
    await this.until(base + perProducer * PRODUCERS);
    const seconds = (now() - t0) / 1000;
    const items = perProducer * PRODUCERS;
    return {
      itemsPerSecond: items / seconds,
      latencies: [...this.latencies],
      cpuMsPerItem: (cpuMs(this.pids()) - cpu0) / items,
    };
  }

  async trickle(items: number, endpoint: string): Promise<number> {
    const producer = this.producers[0];
    if (producer === undefined) throw new Error('no producer');
    const before = await proposals(endpoint);
    for (let i = 0; i < items; i++) {
      const base = this.got;
      await producer.ok({ cmd: 'queue.enqueue', path: this.path, value: `${Date.now()} t ${i}` });
      await this.until(base + 1);
    }
    return ((await proposals(endpoint)) - before) / items;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.producers, ...this.consumers].map((p) => p.close()));
    await Promise.all(this.loops);
  }
}

export const queueCase: BenchCase = {
  name: 'queue',
  title:
    'Queue: 4 producer + 4 consumer processes, ours vs Go recipe.Queue; herd on an empty queue',
  async run(env: BenchEnv) {
    const reps = env.reps(2, 4);
    const perProducer = env.quick ? 100 : 250;
    const trickleItems = env.quick ? 10 : 30;
    const endpoint = env.endpoints[0] ?? '';
    const ours = (await env.ours()) === undefined ? undefined : new OursSide(env, env.prefix('q'));
    const go = new GoSide(env, env.prefix('goq'));
    const o: Burst[] = [];
    const g: Burst[] = [];
    let oTrickle: number | undefined;
    let gTrickle: number | undefined;
    try {
      await go.start();
      const oursStarted = await env.guard('queue start', async () => {
        await ours?.start();
        return ours;
      });
      // A warm-up round for each, then alternating rounds.
      await go.burst(20);
      await oursStarted?.burst(20);
      for (let rep = 0; rep < reps; rep++) {
        if (rep % 2 === 0) g.push(await go.burst(perProducer));
        if (oursStarted !== undefined) o.push(await oursStarted.burst(perProducer));
        if (rep % 2 === 1) g.push(await go.burst(perProducer));
      }
      gTrickle = await go.trickle(trickleItems, endpoint);
      oTrickle = await oursStarted?.trickle(trickleItems, endpoint);
    } finally {
      await Promise.all([ours?.stop(), go.stop()]);
    }
    const rate = (xs: Burst[]): number | undefined =>
      xs.length === 0 ? undefined : median(xs.map((x) => x.itemsPerSecond));
    const lat = (xs: Burst[], p: number): number | undefined =>
      xs.length === 0
        ? undefined
        : percentile(
            xs.flatMap((x) => x.latencies),
            p,
          );
    env.note(
      `queue: ${PRODUCERS} producer + ${CONSUMERS} consumer processes per side, ${reps} alternating ` +
        `bursts of ${perProducer * PRODUCERS} items after a warm-up; items/s = items / (first ` +
        `enqueue -> last dequeue), median of bursts; latency over all items of all bursts ` +
        `(enqueue -> dequeue, wall clock); trickle: ${trickleItems} items one at a time to ` +
        `${CONSUMERS} waiting consumers, etcd raft proposals per item (enqueue included)`,
    );
    const rows: Row[] = [
      ratioRow(
        'queue items/s (enqueue+dequeue), 4P/4C',
        rate(o),
        'Go recipe.Queue',
        rate(g),
        'higher',
      ),
      ratioRow('queue latency p50, burst (ms)', lat(o, 50), 'Go recipe.Queue', lat(g, 50), 'lower'),
      ratioRow('queue latency p99, burst (ms)', lat(o, 99), 'Go recipe.Queue', lat(g, 99), 'lower'),
      ratioRow(
        'queue client CPU per item, burst (ms)',
        o.length === 0 ? undefined : median(o.map((x) => x.cpuMsPerItem)),
        'Go recipe.Queue',
        g.length === 0 ? undefined : median(g.map((x) => x.cpuMsPerItem)),
        'lower',
      ),
      {
        ...ratioRow(
          'queue proposals/item, 4 idle consumers',
          oTrickle,
          'Go recipe.Queue',
          gTrickle,
          'lower',
        ),
        target: 'ours <= 3 (no herd)',
        met: oTrickle === undefined ? undefined : oTrickle <= 3.2,
      },
    ];
    return rows;
  },
};
