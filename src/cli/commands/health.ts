import type { Command } from 'commander';
import { ClusterStatus, type HealthReport } from '../../recipes/health-monitor.js';
import { connect, positiveInt, type GlobalFlags } from '../connect.js';
import { onInterrupt } from '../interrupt.js';
import { clock, createOutput, type Output } from '../output.js';

interface HealthFlags extends GlobalFlags {
  watch: boolean;
  interval: number;
}

export function registerHealth(program: Command): void {
  program
    .command('health')
    .description(
      'Check every member; prints a per-member table and the cluster status. Without --watch the ' +
        'exit code says it: 0 healthy, 1 otherwise.',
    )
    .option('--watch', 'keep checking and print every change', false)
    .option('--interval <ms>', 'time between checks with --watch', positiveInt, 5000)
    .action(async (_opts: unknown, cmd: Command) => {
      const flags = cmd.optsWithGlobals<HealthFlags>();
      const out = createOutput(flags.json);
      const interrupt = onInterrupt();
      const conn = connect(flags);
      const mon = conn.newHealthMonitor();
      interrupt.signal.addEventListener('abort', () => void mon.stop(), { once: true });
      let last: HealthReport | undefined;
      try {
        for await (const report of mon.start(!flags.watch, flags.interval)) {
          last = report;
          printReport(out, report);
        }
      } finally {
        await conn.close();
        interrupt.dispose();
      }
      if (!flags.watch && last?.status !== ClusterStatus.Healthy) process.exitCode = 1;
    });
}

export function printReport(out: Output, report: HealthReport): void {
  const status = statusColor(out, report.status);
  const rows = report.members.map((m) => [
    m.endpoint,
    m.healthy ? out.color('green', 'healthy') : out.color('red', 'unhealthy'),
    m.latencyMs === undefined ? '-' : `${m.latencyMs.toFixed(1)} ms`,
    m.isLeader === true ? 'leader' : '',
    m.raftIndex === undefined ? '-' : String(m.raftIndex),
    m.dbSize === undefined ? '-' : `${(m.dbSize / 1024).toFixed(0)} KiB`,
    m.error === undefined ? '' : brief(m.error.message),
  ]);
  out.emit(
    {
      event: 'health',
      time: report.checkedAt.toISOString(),
      status: report.status,
      members: report.members.map((m) => ({ ...m, error: m.error?.message })),
    },
    `${clock(report.checkedAt)} cluster ${status}\n` +
      out.table(['ENDPOINT', 'HEALTH', 'LATENCY', 'ROLE', 'RAFT INDEX', 'DB', 'ERROR'], rows),
  );
}

function statusColor(out: Output, status: ClusterStatus): string {
  switch (status) {
    case ClusterStatus.Healthy:
      return out.color('green', status);
    case ClusterStatus.Unhealthy:
      return out.color('red', status);
    default:
      return out.color('yellow', status);
  }
}

/** The first line of an error, short enough for a table cell. */
function brief(message: string): string {
  const first = message.split(/\.\s|\n/)[0] ?? message;
  return first.length > 60 ? `${first.slice(0, 57)}...` : first;
}
