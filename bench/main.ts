/**
 * `npm run bench`: runs the benchmark cases against one etcd started by the testing kit and prints
 * one table of our figures beside etcd3's and etcdctl's. Not part of `npm test`.
 *
 * Usage: node dist/bench/main.js [--quick] [--case <name>]... (names: see --list)
 */
import { cpus, loadavg } from 'node:os';
import { execFileSync } from 'node:child_process';
import { findEtcdBinary, startEtcd, type EtcdCluster } from '../src/testing/index.js';
import { BenchEnv, killAllChildren } from './env.js';
import { renderTable, type Row } from './table.js';
import { ephemeralCase } from './cases/ephemeral.js';
import { handoverCase } from './cases/handover.js';
import { kvCase } from './cases/kv.js';
import { leaseLossCase } from './cases/lease-loss.js';
import { lockContentionCase } from './cases/lock-contention.js';
import { lockLatencyCase } from './cases/lock-latency.js';
import { observerCase } from './cases/observer.js';
import { scaleCase } from './cases/scale.js';
import { queueCase } from './cases/queue.js';
import { stmCase } from './cases/stm.js';
import { takeoverCase } from './cases/takeover.js';
import { trackerCase } from './cases/tracker.js';
import type { BenchCase } from './case.js';

const CASES: readonly BenchCase[] = [
  handoverCase,
  lockContentionCase,
  lockLatencyCase,
  takeoverCase,
  leaseLossCase,
  observerCase,
  trackerCase,
  kvCase,
  ephemeralCase,
  scaleCase,
  queueCase,
  stmCase,
];

interface Args {
  quick: boolean;
  cases: string[];
}

function usage(): string {
  return [
    'usage: npm run bench -- [--quick] [--case <name>]...',
    `cases: ${CASES.map((c) => c.name).join(', ')}`,
  ].join('\n');
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = { quick: false, cases: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--quick') args.quick = true;
    else if (arg === '--case' || arg.startsWith('--case=')) {
      const value = arg === '--case' ? argv[++i] : arg.slice('--case='.length);
      if (value === undefined || value === '') throw new Error('--case needs a name');
      args.cases.push(...value.split(',').filter((v) => v !== ''));
    } else if (arg === '--help' || arg === '-h' || arg === '--list') {
      process.stdout.write(`${usage()}\n`);
      process.exit(0);
    } else throw new Error(`unknown argument ${arg}\n${usage()}`);
  }
  const unknown = args.cases.filter((name) => !CASES.some((c) => c.name === name));
  if (unknown.length > 0) throw new Error(`unknown case ${unknown.join(', ')}\n${usage()}`);
  return args;
}

function etcdVersion(): string {
  try {
    const out = execFileSync(findEtcdBinary('etcd'), ['--version'], { encoding: 'utf8' });
    return /etcd Version: (\S+)/.exec(out)?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const selected = CASES.filter((c) => args.cases.length === 0 || args.cases.includes(c.name));
  const started = performance.now();
  const load = loadavg().map((l) => l.toFixed(2));
  let cluster: EtcdCluster | undefined;
  let failed = 0;
  const rows: Row[] = [];
  // Cleanup on Ctrl-C too: the kit kills its etcd on exit, the children are ours.
  const onSignal = (): void => {
    killAllChildren();
    void (cluster?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.on('exit', killAllChildren);
  try {
    process.stderr.write(`[bench] starting etcd (single member, data dir on disk)\n`);
    cluster = await startEtcd();
    const env = new BenchEnv(cluster.endpoints, args.quick, findEtcdBinary('etcdctl'));
    for (const c of selected) {
      const t0 = performance.now();
      env.log(`${c.name}: ${c.title}`);
      try {
        rows.push(...(await c.run(env)));
      } catch (err) {
        failed += 1;
        const msg = err instanceof Error ? (err.stack ?? err.message) : String(err);
        env.note(`case ${c.name} FAILED: ${msg.split('\n').slice(0, 3).join(' | ')}`);
        env.log(`${c.name} failed: ${msg}`);
      } finally {
        env.closeClients();
        killAllChildren();
      }
      env.log(`${c.name}: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
    const header = [
      `etcd-connector benchmarks (${args.quick ? 'quick' : 'full'} run)`,
      `machine: ${cpus().length} cores (${cpus()[0]?.model.trim() ?? '?'}), node ${process.version}, ` +
        `etcd ${etcdVersion()} single member, loadavg at start ${load.join(' ')}`,
      '',
    ];
    const footer = [
      '',
      ...env.notes.map((n) => `- ${n}`),
      `- total ${((performance.now() - started) / 1000).toFixed(0)} s, loadavg at end ` +
        loadavg()
          .map((l) => l.toFixed(2))
          .join(' '),
    ];
    process.stdout.write(`${[...header, renderTable(rows), ...footer].join('\n')}\n`);
  } finally {
    killAllChildren();
    await cluster?.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
    // A safety net that does not itself keep the process alive: if something of ours still
    // holds the event loop 15 s after the end, say so and exit.
    setTimeout(() => {
      process.stderr.write('[bench] something still holds the event loop; exiting\n');
      process.exit(code === 0 ? 3 : code);
    }, 15000).unref();
  },
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 2;
  },
);
