/**
 * Observer throughput and lag: a burst of puts (64 in flight) under a prefix, delivered to our
 * Observer and, separately, to a raw etcd3 watcher (`watch().prefix(p).create()`, `on('put')`).
 * Figures: events/s from the first put sent to the last event delivered; lag = delivery time minus
 * the put's acknowledgement, both on one process's monotonic clock (negative when the event
 * overtook the put's response); and a gap check (every acknowledged put delivered once, in order).
 * Each side (writer + receiver) runs in its own child process; the sides take turns.
 */
import { uniqueName } from '../../src/testing/index.js';
import type { BenchCase } from '../case.js';
import { childScript, LineProcess, type BenchEnv } from '../env.js';
import { fmt, median, summarize } from '../stats.js';
import { ratioRow, type Row } from '../table.js';

const IN_FLIGHT = 64;
const WAIT_MS = 120000;

interface BurstResult {
  rate: number;
  lags: number[];
  /** Acknowledged puts never delivered, duplicates, and deliveries out of revision order. */
  missing: number;
  dups: number;
  disorder: number;
  /** CPU of the child (writer + receiver) per event, microseconds. */
  cpuPerEventUs: number;
}

type Side = 'ours' | 'raw';

function spawnSide(env: BenchEnv, side: Side): LineProcess {
  return new LineProcess(process.execPath, [
    childScript('observer-child'),
    side,
    env.endpoints.join(','),
  ]);
}

async function burst(child: LineProcess, count: number, inFlight: number): Promise<BurstResult> {
  const prefix = `/bench/${uniqueName('observer')}`;
  child.send(JSON.stringify({ prefix, count, inFlight }));
  const line = await child.waitLine(
    (t) => t.startsWith('{"event":"burst"') || t.startsWith('{"event":"error"'),
    WAIT_MS,
    'burst result',
  );
  const data = JSON.parse(line.text) as Partial<BurstResult> & { event: string; message?: string };
  if (data.event !== 'burst') throw new Error(`observer child: ${data.message ?? 'failed'}`);
  return {
    rate: data.rate ?? 0,
    lags: data.lags ?? [],
    missing: data.missing ?? count,
    dups: data.dups ?? 0,
    disorder: data.disorder ?? 0,
    cpuPerEventUs: data.cpuPerEventUs ?? NaN,
  };
}

export const observerCase: BenchCase = {
  name: 'observer',
  title: 'observer throughput and lag vs a raw etcd3 watcher',
  async run(env: BenchEnv) {
    const n = env.quick ? 5000 : 20000;
    const paced = env.quick ? 200 : 1000;
    const reps = env.reps(1, 5);
    const ours = (await env.ours()) === undefined ? undefined : spawnSide(env, 'ours');
    const peer = spawnSide(env, 'raw');
    const results: Record<Side, { bursts: BurstResult[]; paced: BurstResult[] }> = {
      ours: { bursts: [], paced: [] },
      raw: { bursts: [], paced: [] },
    };
    const pairRatios: number[] = [];
    try {
      await peer.waitEvent('ready', WAIT_MS);
      const o1 =
        ours === undefined
          ? undefined
          : await env.guard('observer', async () => {
              await ours.waitEvent('ready', WAIT_MS);
              return ours;
            });
      const children: Record<Side, LineProcess | undefined> = { ours: o1, raw: peer };
      for (let i = 0; i < reps; i++) {
        const order: Side[] = i % 2 === 0 ? ['raw', 'ours'] : ['ours', 'raw'];
        const repRates: Partial<Record<Side, number>> = {};
        for (const side of order) {
          const child = children[side];
          if (child === undefined) continue;
          const run = (count: number, inFlight: number): Promise<BurstResult | undefined> =>
            side === 'ours'
              ? env.guard('observer', () => burst(child, count, inFlight))
              : burst(child, count, inFlight);
          const b = await run(n, IN_FLIGHT);
          if (b !== undefined) results[side].bursts.push(b);
          if (b !== undefined) repRates[side] = b.rate;
          const p = await run(paced, 1);
          if (p !== undefined) results[side].paced.push(p);
        }
        // Neighbouring bursts share the machine's load of the moment: compare them pairwise.
        if (repRates.ours !== undefined && repRates.raw !== undefined) {
          pairRatios.push(repRates.ours / repRates.raw);
        }
      }
    } finally {
      await Promise.all([ours?.stop(10000), peer.stop(10000)]);
    }
    const rate = (s: Side): number | undefined =>
      results[s].bursts.length === 0 ? undefined : median(results[s].bursts.map((b) => b.rate));
    const lag = (s: Side, which: 'bursts' | 'paced'): ReturnType<typeof summarize> | undefined =>
      results[s][which].length === 0
        ? undefined
        : summarize(results[s][which].flatMap((b) => b.lags));
    const faults = (s: Side): { missing: number; dups: number; disorder: number } => {
      const all = [...results[s].bursts, ...results[s].paced];
      const sum = (k: 'missing' | 'dups' | 'disorder'): number =>
        all.reduce((acc, b) => acc + b[k], 0);
      return { missing: sum('missing'), dups: sum('dups'), disorder: sum('disorder') };
    };
    const describe = (s: Side): string => {
      const f = faults(s);
      return `${f.missing} missing, ${f.dups} duplicate, ${f.disorder} out of order`;
    };
    const f = faults('ours');
    const oursClean = f.missing + f.dups + f.disorder === 0;
    env.note(
      `observer: ${reps} x ${n} puts (${IN_FLIGHT} in flight) and ${reps} x ${paced} puts ` +
        `(1 in flight) per side, alternating; events/s ratio = median of neighbouring bursts' ratios; ` +
        `ours: ${describe('ours')}; raw watcher: ${describe('raw')}`,
    );
    const rateRow = ratioRow(
      'observer events/s',
      rate('ours'),
      'etcd3 watcher',
      rate('raw'),
      'higher',
      0.95,
      pairRatios.length === 0 ? undefined : median(pairRatios),
    );
    const rows: Row[] = [
      {
        ...rateRow,
        target: 'ratio >= 0.95, zero gaps',
        met: rateRow.met === undefined ? undefined : rateRow.met && oursClean,
      },
    ];
    const cpu = (s: Side): number | undefined =>
      results[s].bursts.length === 0
        ? undefined
        : median(results[s].bursts.map((b) => b.cpuPerEventUs));
    // CPU time is our own: much less disturbed by other load on the machine than throughput.
    rows.push(
      ratioRow(
        'observer CPU per event, burst (us)',
        cpu('ours'),
        'etcd3 watcher',
        cpu('raw'),
        'lower',
      ),
    );
    for (const which of ['bursts', 'paced'] as const) {
      const label = which === 'bursts' ? `${IN_FLIGHT} in flight` : '1 in flight';
      const o = lag('ours', which);
      const r = lag('raw', which);
      rows.push(
        ratioRow(`observer lag p50, ${label} (ms)`, o?.p50, 'etcd3 watcher', r?.p50, 'lower'),
      );
      rows.push(
        ratioRow(`observer lag p99, ${label} (ms)`, o?.p99, 'etcd3 watcher', r?.p99, 'lower'),
      );
    }
    env.log(`observer rates: ours ${fmt(rate('ours'))}, raw ${fmt(rate('raw'))} events/s`);
    return rows;
  },
};
