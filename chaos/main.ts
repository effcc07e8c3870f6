/**
 * `npm run chaos -- [--seed N] [--duration 120] [--workers 5] [--out dir] [--ttl 3]`: real
 * workers under a seeded random schedule of faults, then a check of the whole history.
 *
 * A 3-member etcd cluster from the testing kit; one fault proxy per member per worker; N worker
 * processes (chaos/worker.ts); a writer filling the observed prefix; a recorder of etcd's history
 * (connected to the members directly, so the faults never touch it; a compaction waits until it
 * has read everything); the nemesis; after the faults, a quiet period, a last write every
 * observer must reach, and a clean stop. Then the checker reads every log and prints the table.
 * Exit code 0: every invariant holds; 1: a violation; 2: bad arguments.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { EtcdConnector } from '../src/index.js';
import {
  startClusterProxies,
  startEtcdCluster,
  type EtcdCluster,
  type FaultProxy,
} from '../src/testing/index.js';
import { check } from './checker.js';
import { now } from './clock.js';
import { Nemesis, type Stage } from './nemesis.js';
import { startRaftWatch, type RaftWatch } from './raft-watch.js';
import {
  ACCOUNTS,
  clearRun,
  OPENING_BALANCE,
  readRecords,
  runParams,
  VANDAL_VALUE,
  type ChaosRecord,
} from './records.js';
import { summary, timelineHtml, timelineLanes } from './report.js';

interface Args {
  seed: number;
  durationS: number;
  workers: number;
  out: string;
  ttl: number;
}

const ROOT = '/chaos';
/** The cluster's raft election timeout (the kit's default, named: the checker's bounds use it). */
const ELECTION_TIMEOUT_MS = 1000;
const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));

function parseArgs(argv: readonly string[]): Args {
  const get = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i === -1 ? undefined : argv[i + 1];
  };
  const int = (name: string, fallback: number, min: number): number => {
    const raw = get(name);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer >= ${min}`);
    return n;
  };
  for (const a of argv) {
    if (
      a.startsWith('--') &&
      !['--seed', '--duration', '--workers', '--out', '--ttl'].includes(a)
    ) {
      throw new Error(`unknown option ${a}`);
    }
  }
  const seed = int('--seed', Math.floor(Math.random() * 1_000_000), 0);
  return {
    seed,
    durationS: int('--duration', 120, 5),
    workers: int('--workers', 5, 1),
    ttl: int('--ttl', 3, 2),
    out: resolve(get('--out') ?? join('chaos-out', `seed-${seed}`)),
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Appends JSON lines to a file, synchronously (a record survives whatever happens next). */
class Log {
  private readonly fd: number;
  constructor(file: string) {
    this.fd = openSync(file, 'a');
  }
  write(record: Record<string, unknown>): void {
    writeSync(this.fd, `${JSON.stringify({ t: now(), ...record })}\n`);
  }
  close(): void {
    closeSync(this.fd);
  }
}

interface WorkerSlot {
  name: string;
  proxies: FaultProxy[];
  inc: number;
  child: ChildProcess | undefined;
  exited: Promise<number | null>;
}

class Controller implements Stage {
  readonly workers: string[];
  private readonly slots = new Map<string, WorkerSlot>();
  private recorderRevision = 0;
  private nemesisLog: Log;

  constructor(
    readonly cluster: EtcdCluster,
    readonly ttl: number,
    private readonly args: Args,
    private readonly direct: Etcd3,
  ) {
    this.workers = Array.from({ length: args.workers }, (_x, i) => `w${i + 1}`);
    this.nemesisLog = new Log(join(args.out, 'nemesis.jsonl'));
  }

  async startWorkers(): Promise<void> {
    for (const name of this.workers) {
      const proxies = await startClusterProxies(this.cluster);
      this.slots.set(name, {
        name,
        proxies,
        inc: -1,
        child: undefined,
        exited: Promise.resolve(null),
      });
      await this.restart(name);
    }
  }

  proxies(worker: string): readonly FaultProxy[] {
    return this.slots.get(worker)?.proxies ?? [];
  }

  pid(worker: string): number | undefined {
    const child = this.slots.get(worker)?.child;
    return child?.exitCode === null && child.signalCode === null ? child.pid : undefined;
  }

  async kill(worker: string): Promise<void> {
    const slot = this.slots.get(worker);
    if (slot?.child === undefined) return;
    slot.child.kill('SIGKILL');
    await slot.exited;
    slot.child = undefined;
  }

  restart(worker: string): Promise<void> {
    const slot = this.slots.get(worker);
    if (slot === undefined) return Promise.resolve();
    slot.inc++;
    const child = spawn(
      process.execPath,
      [
        WORKER,
        '--id',
        worker,
        '--inc',
        String(slot.inc),
        '--endpoints',
        slot.proxies.map((p) => p.endpoint).join(','),
        '--ttl',
        String(this.ttl),
        '--root',
        ROOT,
        '--log',
        join(this.args.out, `${worker}.${slot.inc}.jsonl`),
      ],
      { stdio: ['pipe', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-2000);
    });
    slot.child = child;
    slot.exited = new Promise((res) => {
      child.on('exit', (code) => {
        if (code !== 0 && code !== null && stderr.trim() !== '') {
          process.stderr.write(`[chaos] ${worker}#${slot.inc} exited ${code}: ${stderr.trim()}\n`);
        }
        res(code);
      });
    });
    return Promise.resolve();
  }

  async compact(): Promise<boolean> {
    try {
      const rev = Number((await this.direct.get(`${ROOT}/none`).exec()).header.revision);
      // Only history the recorder has read is compacted away.
      const until = performance.now() + 5000;
      while (this.recorderRevision < rev && performance.now() < until) await sleep(20);
      if (this.recorderRevision < rev) return false;
      await this.direct.kv.compact({ revision: String(rev), physical: false });
      return true;
    } catch {
      return false;
    }
  }

  record(fault: string, target: string, phase: 'start' | 'end', id: number): void {
    this.nemesisLog.write({ kind: 'fault', fault, target, phase, id });
  }

  async vandalize(target: string, act: 'delete' | 'overwrite'): Promise<void> {
    const { ephemeralSharedKey, ephemeralPrefix } = runParams(ROOT, this.ttl);
    const key = target === 'shared' ? ephemeralSharedKey : ephemeralPrefix + target;
    try {
      const res =
        act === 'delete'
          ? await this.direct.delete().key(key).exec()
          : await this.direct.put(key).value(VANDAL_VALUE).exec();
      this.nemesisLog.write({ kind: 'vandal', key, act, revision: Number(res.header.revision) });
    } catch {
      // etcd out of reach (a cluster fault): no act to judge
    }
  }

  /** Another record of the cluster's side (a raft election). */
  note(record: Record<string, unknown>): void {
    this.nemesisLog.write(record);
  }

  /** Follows etcd's history under the chaos root, directly (no proxy): the checker's truth. */
  startRecorder(from: number): { stop: () => Promise<void>; revision: () => number } {
    const log = new Log(join(this.args.out, 'history.jsonl'));
    const conn = new EtcdConnector(this.cluster.endpoints, ROOT.slice(1), { callTimeoutMs: 3000 });
    const obs = conn.newObserver(ROOT, { bufferSize: 100_000 });
    const done = (async () => {
      for await (const ev of obs.start(from, true)) {
        if (ev.type === 'resync') {
          log.write({ kind: 'history.gap', revision: ev.revision });
          this.recorderRevision = ev.revision;
        } else if (ev.type === 'put' || ev.type === 'delete') {
          log.write({ kind: 'history', ...ev });
          this.recorderRevision = ev.revision;
        }
      }
    })();
    return {
      revision: () => this.recorderRevision,
      stop: async () => {
        await obs.stop();
        await done.catch(() => undefined);
        await conn.close();
        log.close();
      },
    };
  }

  /** The current incarnation's log of each worker. */
  currentLogs(): string[] {
    return [...this.slots.values()].map((s) => join(this.args.out, `${s.name}.${s.inc}.jsonl`));
  }

  /** Tells every worker to stop and waits for it: `w#inc` -> exit code (null: had to be killed). */
  async stopWorkers(): Promise<Record<string, number | null>> {
    const exits: Record<string, number | null> = {};
    await Promise.all(
      [...this.slots.values()].map(async (slot) => {
        const child = slot.child;
        if (child === undefined) return;
        child.stdin?.end('stop\n');
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        const code = await slot.exited;
        clearTimeout(timer);
        exits[`${slot.name}#${slot.inc}`] = code;
      }),
    );
    return exits;
  }

  async close(): Promise<void> {
    for (const slot of this.slots.values()) slot.child?.kill('SIGKILL');
    await Promise.all([...this.slots.values()].map((s) => s.exited));
    await Promise.all([...this.slots.values()].flatMap((s) => s.proxies.map((p) => p.close())));
    this.nemesisLog.close();
  }
}

/** Fills the observed prefix, one write every 50 ms, retrying through faults. */
function startWriter(client: Etcd3): { stop: () => Promise<number> } {
  const halt = new AbortController();
  const halted = (): boolean => halt.signal.aborted;
  let n = 0;
  const loop = (async () => {
    while (!halted()) {
      try {
        await client
          .put(`${ROOT}/obs/k${n % 20}`)
          .value(String(n))
          .exec();
        n++;
      } catch {
        // a fault: try again
      }
      await sleep(50);
    }
  })();
  return {
    stop: async () => {
      halt.abort();
      await loop;
      // The last write: every observer still running must reach it.
      for (;;) {
        try {
          const res = await client.put(`${ROOT}/obs/end`).value(String(n)).exec();
          return Number(res.header.revision);
        } catch {
          await sleep(100);
        }
      }
    },
  };
}

/** True once every file shows an observer event at or after `revision`. */
function observersReached(files: readonly string[], revision: number): boolean {
  return files.every((file) => {
    try {
      return readFileSync(file, 'utf8')
        .split('\n')
        .some(
          (line) =>
            line.includes('"obs.event"') &&
            (JSON.parse(line) as { revision: number }).revision >= revision,
        );
    } catch {
      return false;
    }
  });
}

async function main(): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.stderr.write(
      'usage: npm run chaos -- [--seed N] [--duration s] [--workers n] [--out dir] [--ttl s]\n',
    );
    return 2;
  }
  mkdirSync(args.out, { recursive: true });
  clearRun(args.out);
  const say = (s: string): void => {
    process.stderr.write(`[chaos] ${s}\n`);
  };
  say(
    `seed ${args.seed}, ${args.durationS} s, ${args.workers} workers, TTL ${args.ttl} s, out ${args.out}`,
  );
  const cluster = await startEtcdCluster(3, { electionTimeoutMs: ELECTION_TIMEOUT_MS });
  const direct = new Etcd3({ hosts: cluster.endpoints });
  const controller = new Controller(cluster, args.ttl, args, direct);
  const onSignal = (): void => {
    void controller.close().finally(() => cluster.stop().finally(() => process.exit(130)));
  };
  // Interrupted (Ctrl-C, or a SIGTERM from a test's timeout): every worker killed, a paused one
  // too (left behind, it would never exit), then the cluster stopped.
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let raft: RaftWatch | undefined;
  try {
    const from = Number((await direct.get(`${ROOT}/none`).exec()).header.revision) + 1;
    const recorder = controller.startRecorder(from);
    const elections = startRaftWatch(
      cluster.endpoints,
      ELECTION_TIMEOUT_MS,
      (r) => {
        controller.note(r);
      },
      now,
    );
    raft = elections;
    // The STM accounts, opened in one transaction before any worker transfers.
    await direct
      .if(`${ROOT}/accounts/0`, 'Create', '==', 0)
      .then(
        ...Array.from({ length: ACCOUNTS }, (_, i) =>
          direct.put(`${ROOT}/accounts/${i}`).value(String(OPENING_BALANCE)),
        ),
      )
      .commit();
    const writer = startWriter(direct);
    await controller.startWorkers();
    say('workers started; faults begin');
    await new Nemesis(controller).run(args.seed, args.durationS * 1000);
    say('faults over; quiet period');
    // TTL + 4 s after the last fault, and after the leases' restart at the last raft election.
    const faultsEnded = now();
    const quietUntil = (): number =>
      Math.max(faultsEnded, elections.lastElection() + ELECTION_TIMEOUT_MS) +
      args.ttl * 1000 +
      4000;
    while (now() < quietUntil()) await sleep(100);
    const lastWrite = await writer.stop();
    const until = performance.now() + 30_000;
    while (!observersReached(controller.currentLogs(), lastWrite) && performance.now() < until) {
      await sleep(200);
    }
    // The registrations the trackers must show: read before the workers deregister on stop.
    const services = (await direct.getAll().prefix(`${ROOT}/services/`).keys()).map((k) =>
      k.slice(`${ROOT}/services/`.length),
    );
    // The ephemeral keys (own, cycled, shared: all under eph) every running worker must have
    // put back by now.
    const ephemeralAt = now();
    const ephemeralRead = await direct.getAll().prefix(`${ROOT}/eph`).exec();
    const ephemeral = Object.fromEntries(
      ephemeralRead.kvs.map((kv) => [kv.key.toString(), kv.value.toString()]),
    );
    say('stopping workers');
    const stoppedAt = now();
    const exits = await controller.stopWorkers();
    const current = Number((await direct.get(`${ROOT}/none`).exec()).header.revision);
    const caughtUp = performance.now() + 10_000;
    while (recorder.revision() < current && performance.now() < caughtUp) await sleep(50);
    await recorder.stop();
    let leasesLeft = 0;
    for (let i = 0; i < 30; i++) {
      leasesLeft = (await direct.leaseClient.leaseLeases({})).leases.length;
      if (leasesLeft === 0) break;
      await sleep(100);
    }
    const counterOf = async (key: string): Promise<number> => {
      const raw = await direct.get(`${ROOT}/${key}`).string();
      return raw === null ? 0 : (JSON.parse(raw) as { n: number }).n;
    };
    writeFileSync(
      join(args.out, 'final.jsonl'),
      `${JSON.stringify({
        kind: 'final',
        t: now(),
        counter: await counterOf('counter'),
        rwCounter: await counterOf('rwcounter'),
        services,
        stoppedAt,
        leasesLeft,
        exits,
        lastWrite,
        ephemeral,
        ephemeralAt,
        ephemeralRevision: Number(ephemeralRead.header.revision),
      })}\n`,
    );
  } finally {
    await raft?.stop();
    await controller.close();
    direct.close();
    await cluster.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const files = readdirSync(args.out)
    .filter((f) => f.endsWith('.jsonl'))
    .map((f) => join(args.out, f));
  const records: ChaosRecord[] = readRecords(files);
  const params = runParams(ROOT, args.ttl);
  const verdicts = check(records, params);
  const title = `chaos run: seed ${args.seed}, ${args.durationS} s of faults, ${args.workers} workers, 3 members, TTL ${args.ttl} s`;
  const text = summary(title, records, verdicts);
  writeFileSync(join(args.out, 'summary.md'), `${text}\n`);
  writeFileSync(
    join(args.out, 'report.html'),
    timelineHtml(title, records, verdicts, timelineLanes(records)),
  );
  process.stdout.write(`${text}\n\nreport: ${join(args.out, 'report.html')}\n`);
  return verdicts.every((v) => v.ok) ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(
      `[chaos] failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    // What failed may have left a loop or a connection behind: do not wait for it.
    process.exit(1);
  },
);
