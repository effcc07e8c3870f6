/**
 * A process holding 1,000 ephemeral keys on one TTL: leases and keepalive streams used, and memory.
 * Ours (EphemeralKey, sessions shared per TTL) against 1,000 etcd3 leases (`client.lease(ttl)` with
 * one key each). Each side runs in a fresh child process. Leases are counted on the server with
 * LeaseLeases; open keepalive streams from etcd's own gRPC metrics (started - handled).
 */
import type { Etcd3 } from 'etcd3';
import { uniqueName } from '../../src/testing/index.js';
import type { BenchCase } from '../case.js';
import { childScript, LineProcess, type BenchEnv } from '../env.js';
import { leaseCount, openStreams } from '../etcd-counts.js';
import { fmt, now } from '../stats.js';
import { ratioRow, type Row } from '../table.js';

const COUNT = 1000;
const TTL = 5;
const WAIT_MS = 120000;
const MB = 1024 * 1024;

interface Result {
  leases: number;
  streams: number;
  rssMb: number;
  heapMb: number;
  createMs: number;
  closeMs: number;
  leasesLeft: number;
}

async function once(env: BenchEnv, raw: Etcd3, mode: 'ours' | 'etcd3'): Promise<Result> {
  const endpoint = env.endpoints[0] ?? '';
  const prefix = `/bench/${uniqueName(`ephemeral-${mode}`)}`;
  const leases0 = await leaseCount(raw);
  const streams0 = await openStreams(endpoint, 'LeaseKeepAlive');
  const child = new LineProcess(process.execPath, [
    '--expose-gc',
    childScript('ephemeral-child'),
    mode,
    env.endpoints.join(','),
    prefix,
    String(COUNT),
    String(TTL),
  ]);
  try {
    const base = await child.waitEvent('baseline', WAIT_MS);
    const steady = await child.waitEvent('steady', WAIT_MS);
    const keys = await raw.getAll().prefix(`${prefix}/`).count();
    if (keys !== COUNT) throw new Error(`${mode}: ${keys} keys exist, expected ${COUNT}`);
    const leases = (await leaseCount(raw)) - leases0;
    const streams = (await openStreams(endpoint, 'LeaseKeepAlive')) - streams0;
    const t0 = now();
    child.proc.stdin?.end();
    const closed = await child.waitEvent('closed', WAIT_MS);
    await child.stop(5000);
    const num = (v: unknown): number => (typeof v === 'number' ? v : NaN);
    return {
      leases,
      streams,
      rssMb: (num(steady.data.rss) - num(base.data.rss)) / MB,
      heapMb: (num(steady.data.heap) - num(base.data.heap)) / MB,
      createMs: num(steady.data.createMs),
      closeMs: typeof closed.data.ms === 'number' ? closed.data.ms : now() - t0,
      leasesLeft: (await leaseCount(raw)) - leases0,
    };
  } finally {
    await child.stop();
  }
}

export const ephemeralCase: BenchCase = {
  name: 'ephemeral',
  title: `${COUNT} ephemeral keys on one TTL in one process (ours vs ${COUNT} etcd3 leases)`,
  async run(env) {
    const raw = env.rawClient();
    const ours = await env.ours();
    const o =
      ours === undefined ? undefined : await env.guard('ephemeral', () => once(env, raw, 'ours'));
    const p = await once(env, raw, 'etcd3');
    env.note(
      `ephemeral: memory = growth of the child's RSS / heap after gc from before the first key to ` +
        `one keepalive round after the last; heap growth ${fmt(o?.heapMb)} MB ours, ` +
        `${fmt(p.heapMb)} MB etcd3; cleanup (close / revoke all) ${fmt(o?.closeMs)} ms ours, ` +
        `${fmt(p.closeMs)} ms etcd3; leases left after cleanup: ours ${o?.leasesLeft ?? 'n/a'}, ` +
        `etcd3 ${p.leasesLeft}`,
    );
    const one = (v: number | undefined): boolean | undefined =>
      v === undefined ? undefined : v === 1;
    const rows: Row[] = [
      {
        ...ratioRow(
          `${COUNT} eph. keys: leases`,
          o?.leases,
          `${COUNT} etcd3 leases`,
          p.leases,
          'lower',
        ),
        target: 'ours = 1',
        met: one(o?.leases),
      },
      {
        ...ratioRow(
          `${COUNT} eph. keys: keepalive streams`,
          o?.streams,
          `${COUNT} etcd3 leases`,
          p.streams,
          'lower',
        ),
        target: 'ours = 1',
        met: one(o?.streams),
      },
      ratioRow(
        `${COUNT} eph. keys: RSS growth (MB)`,
        o?.rssMb,
        `${COUNT} etcd3 leases`,
        p.rssMb,
        'lower',
      ),
      ratioRow(
        `${COUNT} eph. keys: create all (ms)`,
        o?.createMs,
        `${COUNT} etcd3 leases`,
        p.createMs,
        'lower',
      ),
    ];
    return rows;
  },
};
