/**
 * Service tracker at scale: time to the first complete map with 10,000 instances (against a raw
 * etcd3 listing of the same prefix), and the time per change (put of one instance's value -> a map
 * with the new value delivered) with 100 against 10,000 instances registered.
 */
import type { Etcd3 } from 'etcd3';
import { uniqueName } from '../../src/testing/index.js';
import type { BenchCase } from '../case.js';
import type { BenchEnv, Ours } from '../env.js';
import { fmt, median, now } from '../stats.js';
import { StreamReader } from '../streams.js';
import { ratioRow, type Row } from '../table.js';

const BIG = 10000;
const SMALL = 100;
const WAIT_MS = 60000;
/** etcd allows 128 operations per transaction. */
const BATCH = 100;

type Connector = InstanceType<Ours['EtcdConnector']>;
interface TrackerData {
  readonly services: ReadonlyMap<string, unknown>;
}

const instance = (i: number): string => `inst-${String(i).padStart(5, '0')}`;

/** Registers `count` instances under `path` as plain keys, in transactions of BATCH puts. */
async function register(writer: Etcd3, path: string, count: number): Promise<void> {
  for (let i = 0; i < count; i += BATCH) {
    const ops = [];
    for (let j = i; j < Math.min(count, i + BATCH); j++) {
      ops.push(writer.put(`${path}/${instance(j)}`).value(`10.0.0.1:${j}`));
    }
    await writer
      .if(`${path}/none`, 'Create', '==', 0)
      .then(...ops)
      .commit();
  }
}

interface Measured {
  firstMapMs: number;
  firstSize: number;
  perChange: number[];
  cpuPerChangeUs: number;
}

async function measure(
  conn: Connector,
  writer: Etcd3,
  path: string,
  count: number,
  changes: number,
): Promise<Measured> {
  const tracker = conn.newServiceTracker(path);
  const t0 = now();
  const reader = new StreamReader<TrackerData>(tracker.start());
  try {
    const first = await reader.until(() => true, WAIT_MS, 'first map');
    const full =
      first.value.services.size >= count
        ? first
        : await reader.until((d) => d.services.size >= count, WAIT_MS, 'complete map');
    const perChange: number[] = [];
    const cpu0 = process.cpuUsage();
    for (let c = 0; c < changes; c++) {
      const name = instance((c * 7919) % count);
      const value = `changed-${c}`;
      const start = now();
      await writer.put(`${path}/${name}`).value(value);
      const seen = await reader.until((d) => d.services.get(name) === value, WAIT_MS, 'change');
      perChange.push(seen.at - start);
    }
    const cpu = process.cpuUsage(cpu0);
    return {
      firstMapMs: full.at - t0,
      firstSize: first.value.services.size,
      perChange,
      cpuPerChangeUs: (cpu.user + cpu.system) / changes,
    };
  } finally {
    await tracker.stop();
    await reader.close();
  }
}

async function rawListing(raw: Etcd3, path: string): Promise<number> {
  const t0 = now();
  const kvs = await raw.getAll().prefix(`${path}/`).strings();
  const ms = now() - t0;
  if (Object.keys(kvs).length < BIG) throw new Error('raw listing incomplete');
  return ms;
}

export const trackerCase: BenchCase = {
  name: 'tracker',
  title: `service tracker with ${SMALL} and ${BIG} instances`,
  async run(env: BenchEnv) {
    const changes = env.quick ? 50 : 300;
    const reps = env.reps(1, 3);
    const writer = env.rawClient();
    const raw = env.rawClient();
    const ours = await env.ours();
    const small = `/bench/${uniqueName('tracker-small')}`;
    const big = `/bench/${uniqueName('tracker-big')}`;
    await register(writer, small, SMALL);
    await register(writer, big, BIG);
    const listings: number[] = [];
    for (let i = 0; i < reps; i++) listings.push(await rawListing(raw, big));
    let s: Measured[] = [];
    let b: Measured[] = [];
    if (ours !== undefined) {
      const conn = new ours.EtcdConnector(env.endpoints, 'bench');
      try {
        for (let i = 0; i < reps; i++) {
          const rs = await env.guard('tracker', () => measure(conn, writer, small, SMALL, changes));
          const rb = await env.guard('tracker', () => measure(conn, writer, big, BIG, changes));
          if (rs !== undefined) s.push(rs);
          if (rb !== undefined) b.push(rb);
        }
      } finally {
        await conn.close();
      }
      if (s.length === 0 || b.length === 0) s = b = [];
    }
    const per = (m: Measured[]): number | undefined =>
      m.length === 0 ? undefined : median(m.flatMap((x) => x.perChange));
    const cpu = (m: Measured[]): number | undefined =>
      m.length === 0 ? undefined : median(m.map((x) => x.cpuPerChangeUs));
    const first = b.length === 0 ? undefined : median(b.map((x) => x.firstMapMs));
    if (b.some((x) => x.firstSize !== BIG)) {
      env.note(
        `tracker: the first map had ${b.map((x) => x.firstSize).join('/')} instances, not ${BIG}`,
      );
    }
    env.note(
      `tracker: ${reps} repetitions of ${changes} sequential changes each at ${SMALL} and ${BIG} ` +
        `instances; per change = put sent -> map with the new value delivered (includes the put's ` +
        `round trip); CPU per change of this whole process ${fmt(cpu(s))} us at ${SMALL}, ` +
        `${fmt(cpu(b))} us at ${BIG}`,
    );
    const rows: Row[] = [
      ratioRow(
        `tracker first map, ${BIG} inst. (ms)`,
        first,
        'etcd3 range get',
        median(listings),
        'lower',
      ),
      ratioRow(
        `tracker per change @${BIG} (ms)`,
        per(b),
        `ours @${SMALL} inst.`,
        per(s),
        'lower',
        1.5,
      ),
      ratioRow(`tracker CPU/change @${BIG} (us)`, cpu(b), `ours @${SMALL} inst.`, cpu(s), 'lower'),
    ];
    return rows;
  },
};
