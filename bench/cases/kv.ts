/**
 * Plain KV through the connector: `conn.client` is etcd3 itself plus our default per-call deadline,
 * so this shows what that wrapping costs. Puts and gets with 1 and 64 in flight for a fixed time,
 * against a raw etcd3 client; the sides alternate, the first round of each is a discarded warm-up.
 * Each side runs in its own child process (see kv-child.ts for why).
 */
import { uniqueName } from '../../src/testing/index.js';
import type { BenchCase } from '../case.js';
import { childScript, LineProcess, type BenchEnv } from '../env.js';
import { median } from '../stats.js';
import { ratioRow, type Row } from '../table.js';

const KEYS = 1000;
const VALUE = 'v'.repeat(64);
const WAIT_MS = 30000;

type Op = 'put' | 'get';

function spawnSide(env: BenchEnv, side: 'ours' | 'raw', prefix: string): LineProcess {
  return new LineProcess(process.execPath, [
    childScript('kv-child'),
    side,
    env.endpoints.join(','),
    prefix,
  ]);
}

interface Rate {
  /** Operations per second. */
  value: number;
  /** CPU of the child per operation, microseconds. */
  cpuUs: number;
}

async function rate(child: LineProcess, op: Op, inFlight: number, ms: number): Promise<Rate> {
  child.send(JSON.stringify({ op, inFlight, ms }));
  const { data } = await child.waitEvent('rate', WAIT_MS);
  if (typeof data.value !== 'number' || typeof data.cpuUs !== 'number') {
    throw new Error('kv child sent no rate');
  }
  return { value: data.value, cpuUs: data.cpuUs };
}

export const kvCase: BenchCase = {
  name: 'kv',
  title: 'KV put/get through conn.client vs a raw etcd3 client, 1 and 64 in flight',
  async run(env: BenchEnv) {
    const reps = env.reps(4, 14);
    const ms = env.quick ? 200 : 300;
    const raw = env.rawClient();
    const prefix = `/bench/${uniqueName('kv')}`;
    for (let k = 0; k < KEYS; k++) await raw.put(`${prefix}/k${k}`).value(VALUE);
    const ours = (await env.ours()) === undefined ? undefined : spawnSide(env, 'ours', prefix);
    const peer = spawnSide(env, 'raw', prefix);
    const rows: Row[] = [];
    try {
      await peer.waitEvent('ready', WAIT_MS);
      const o1 =
        ours === undefined
          ? undefined
          : await env.guard('kv', async () => {
              await ours.waitEvent('ready', WAIT_MS);
              return ours;
            });
      for (const inFlight of [1, 64]) {
        for (const op of ['put', 'get'] as const) {
          const o: Rate[] = [];
          const r: Rate[] = [];
          // Round 0 warms both up (JIT, HTTP/2 windows) and is dropped; then ABAB / BABA.
          for (let rep = 0; rep <= reps; rep++) {
            const first = rep % 2 === 0;
            if (first) r.push(await rate(peer, op, inFlight, ms));
            if (o1 !== undefined) o.push(await rate(o1, op, inFlight, ms));
            if (!first) r.push(await rate(peer, op, inFlight, ms));
          }
          o.shift();
          r.shift();
          // Neighbouring rounds share the machine's load of the moment: compare them pairwise.
          const paired =
            o.length === 0 ? undefined : median(o.map((x, k) => x.value / (r[k]?.value ?? NaN)));
          const med = (xs: Rate[], k: keyof Rate): number | undefined =>
            xs.length === 0 ? undefined : median(xs.map((x) => x[k]));
          rows.push(
            ratioRow(
              `KV ${op} ops/s, ${inFlight} in flight`,
              med(o, 'value'),
              'raw etcd3 client',
              med(r, 'value'),
              'higher',
              0.95,
              paired,
            ),
          );
          if (inFlight > 1) {
            // CPU time is the process's own: far less disturbed by other load than throughput.
            rows.push(
              ratioRow(
                `KV ${op} CPU/op, ${inFlight} in flight (us)`,
                med(o, 'cpuUs'),
                'raw etcd3 client',
                med(r, 'cpuUs'),
                'lower',
              ),
            );
          }
        }
      }
    } finally {
      await Promise.all([ours?.stop(5000), peer.stop(5000)]);
    }
    env.note(
      `kv: ${reps} timed rounds of ${ms} ms per side and configuration, alternating, after a ` +
        `warm-up round; figures are medians, the ratio is the median of neighbouring rounds' ratios`,
    );
    return rows;
  },
};
