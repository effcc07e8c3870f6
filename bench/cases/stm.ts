/**
 * STM transactions per second under contention: 8 concurrent transfer loops, ours (`conn.stm`,
 * retried until it commits) beside etcd3's STM (3 retries, then it throws: a give-up), each side
 * in its own child process, on 4 accounts (heavy contention) and on 64 (light). Alternating
 * rounds of a fixed time after a warm-up round; medians; the ratio is the median of neighbouring
 * rounds' ratios.
 */
import type { BenchCase } from '../case.js';
import { childScript, LineProcess, type BenchEnv } from '../env.js';
import { median } from '../stats.js';
import { ratioRow, type Row } from '../table.js';

const LOOPS = 8;
const WAIT_MS = 60000;

interface Rate {
  perSecond: number;
  commits: number;
  attempts: number;
  gaveUp: number;
  cpuUs: number;
  lastError?: string;
}

type Figure = Exclude<keyof Rate, 'lastError'>;

async function rate(
  child: LineProcess,
  prefix: string,
  accounts: number,
  isolation: string,
  ms: number,
): Promise<Rate> {
  child.send(JSON.stringify({ op: 'run', prefix, accounts, loops: LOOPS, ms, isolation }));
  const { data } = await child.waitEvent('rate', WAIT_MS);
  return data as unknown as Rate;
}

export const stmCase: BenchCase = {
  name: 'stm',
  title: 'STM transfers/s with 8 concurrent loops (4 and 64 accounts), ours vs etcd3 STM',
  async run(env: BenchEnv) {
    const reps = env.reps(2, 6);
    const ms = env.quick ? 1000 : 2000;
    const spawn = (side: string): LineProcess =>
      new LineProcess(process.execPath, [childScript('stm-child'), side, env.endpoints.join(',')]);
    const oursAvailable = (await env.ours()) !== undefined;
    const ours = oursAvailable ? spawn('ours') : undefined;
    const peer = spawn('etcd3');
    const rows: Row[] = [];
    try {
      await peer.waitEvent('ready', WAIT_MS);
      const o1 = await env.guard('stm start', async () => {
        await ours?.waitEvent('ready', WAIT_MS);
        return ours;
      });
      for (const [accounts, isolation] of [
        [4, 'serializable-snapshot'],
        [64, 'serializable-snapshot'],
        [4, 'serializable'],
        [64, 'serializable'],
      ] as const) {
        // Separate accounts per side: neither side's writes conflict with the other's.
        const oPrefix = env.prefix('stm-ours');
        const pPrefix = env.prefix('stm-etcd3');
        const o: Rate[] = [];
        const p: Rate[] = [];
        for (let rep = 0; rep <= reps; rep++) {
          const first = rep % 2 === 0;
          if (first) p.push(await rate(peer, pPrefix, accounts, isolation, ms));
          if (o1 !== undefined) o.push(await rate(o1, oPrefix, accounts, isolation, ms));
          if (!first) p.push(await rate(peer, pPrefix, accounts, isolation, ms));
        }
        o.shift();
        p.shift();
        const peerError = p.find((x) => x.lastError !== undefined)?.lastError;
        if (peerError !== undefined) env.note(`stm: etcd3 STM gave up with: ${peerError}`);
        const oursError = o.find((x) => x.lastError !== undefined)?.lastError;
        if (oursError !== undefined) env.note(`stm: ours failed with: ${oursError}`);
        const med = (xs: Rate[], k: Figure): number | undefined =>
          xs.length === 0 ? undefined : median(xs.map((x) => x[k]));
        const paired =
          o.length === 0
            ? undefined
            : median(o.map((x, k) => x.perSecond / (p[k]?.perSecond ?? NaN)));
        const sum = (xs: Rate[], k: Figure): number => xs.reduce((s, x) => s + x[k], 0);
        const giveUps = (xs: Rate[]): number | undefined => {
          const tries = sum(xs, 'commits') + sum(xs, 'gaveUp');
          return xs.length === 0 || tries === 0 ? undefined : (1000 * sum(xs, 'gaveUp')) / tries;
        };
        // Runs of the transaction function per transaction, given-up ones included.
        const attempts = (xs: Rate[]): number | undefined =>
          xs.length === 0
            ? undefined
            : sum(xs, 'attempts') / Math.max(1, sum(xs, 'commits') + sum(xs, 'gaveUp'));
        const label = `${isolation}, ${accounts} accounts`;
        rows.push(
          ratioRow(
            `STM commits/s, ${label}`,
            med(o, 'perSecond'),
            'etcd3 STM',
            med(p, 'perSecond'),
            'higher',
            undefined,
            paired,
          ),
          ratioRow(`STM gave up per 1000, ${label}`, giveUps(o), 'etcd3 STM', giveUps(p), 'lower'),
          ratioRow(
            `STM attempts per transaction, ${label}`,
            attempts(o),
            'etcd3 STM',
            attempts(p),
            'lower',
          ),
          ratioRow(
            `STM CPU per commit, ${label} (us)`,
            med(o, 'cpuUs'),
            'etcd3 STM',
            med(p, 'cpuUs'),
            'lower',
          ),
        );
      }
    } finally {
      await Promise.all([ours?.stop(5000), peer.stop(5000)]);
    }
    env.note(
      `stm: each side in its own process, ${LOOPS} concurrent loops of transfers between two ` +
        `accounts, ${reps} alternating rounds of ${ms} ms after a ` +
        `warm-up round; etcd3's STM gives up after 3 retries (counted, the loop goes on); ours ` +
        `retries until it commits`,
    );
    return rows;
  },
};
