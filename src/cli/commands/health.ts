import type { Command } from 'commander';
import {
  ClusterStatus,
  type HealthReport,
  type MemberHealth,
} from '../../recipes/health-monitor.js';
import { interruptible } from '../command-scope.js';
import { positiveInt, checkFlags, type GlobalFlags } from '../connect.js';
import { clock, jsonError, type Output } from '../output.js';
import { credentialProblem, problemHint, type CredentialProblem } from '../problems.js';

interface HealthFlags extends GlobalFlags {
  watch: boolean;
  interval: number;
}

export function registerHealth(program: Command): void {
  program
    .command('health')
    .description(
      'Check every member; prints a per-member table, every error in full and the cluster ' +
        'status. Without --watch the exit code says it: 0 healthy, 1 otherwise. When etcdc ' +
        'could not ask the members (authentication or TLS failed) it says so instead of ' +
        'calling the cluster unhealthy.',
    )
    .option('--watch', 'keep checking and print every change', false)
    .option('--interval <ms>', 'time between checks with --watch', positiveInt, 5000)
    .action(async (_opts: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<HealthFlags>(), cmd);
      await interruptible(flags, async ({ out, conn, signal }) => {
        const mon = conn.newHealthMonitor();
        signal.addEventListener('abort', () => void mon.stop(), { once: true });
        let last: ClusterStatus | undefined;
        for await (const report of mon.start(!flags.watch, flags.interval)) {
          last = printReport(out, report);
        }
        if (!flags.watch && last !== ClusterStatus.Healthy) process.exitCode = 1;
      });
    });
}

/**
 * Prints one report: a headline, the table, then every member's error in full on a line of its
 * own (a user runs `health` when something is wrong, so the reason must be readable). When no
 * member could be asked because of the credentials, the status is `unknown` (with the `problem`
 * when it is the same for all), not `unhealthy`. Returns the status printed.
 */
export function printReport(out: Output, report: HealthReport): ClusterStatus {
  const members = report.members.map((m) => ({
    member: m,
    problem: m.error === undefined ? undefined : credentialProblem(m.error),
  }));
  const unasked = members.filter((m) => m.problem !== undefined).length;
  // No member could be asked, only because of the credentials: the cluster's health is unknown.
  const noneAsked = members.length > 0 && unasked === members.length;
  const kinds = new Set(members.map((m) => m.problem));
  const [only] = kinds;
  const problem: CredentialProblem | undefined = noneAsked && kinds.size === 1 ? only : undefined;
  const status = noneAsked ? ClusterStatus.Unknown : report.status;

  let headline = `${clock(report.checkedAt)} cluster`;
  if (noneAsked) {
    const why =
      problem === undefined
        ? 'no member could be asked: authentication and TLS problems, see below'
        : problemHint(problem);
    headline += ` health ${statusColor(out, status)}: ${out.color('red', why)}`;
  } else {
    headline += ` ${statusColor(out, status)}`;
    if (unasked > 0) {
      headline += out.color('yellow', ` (${unasked} member(s) not asked: see below)`);
    }
  }
  const rows = members.map(({ member: m, problem: p }) => [
    m.endpoint,
    healthCell(out, m, p),
    m.latencyMs === undefined ? '-' : `${m.latencyMs.toFixed(1)} ms`,
    m.isLeader === true ? 'leader' : '',
    m.raftIndex === undefined ? '-' : String(m.raftIndex),
    m.dbSize === undefined ? '-' : `${(m.dbSize / 1024).toFixed(0)} KiB`,
  ]);
  const errors = members.flatMap(({ member: m }) =>
    m.error === undefined ? [] : [`${m.endpoint}: ${reason(m)}`],
  );
  const table = out.table(['ENDPOINT', 'HEALTH', 'LATENCY', 'ROLE', 'RAFT INDEX', 'DB'], rows);
  out.emit(
    {
      event: 'health',
      time: report.checkedAt.toISOString(),
      status,
      ...(problem === undefined ? {} : { problem }),
      ...(report.leader === undefined ? {} : { leader: report.leader }),
      members: report.members.map((m) => ({
        ...m,
        ...(m.error === undefined ? {} : { error: jsonError(m.error) }),
      })),
    },
    [
      headline,
      table,
      ...(errors.length === 0 ? [] : [out.color('bold', 'ERRORS'), ...errors]),
    ].join('\n'),
  );
  return status;
}

function healthCell(out: Output, m: MemberHealth, problem: CredentialProblem | undefined): string {
  if (m.healthy) return out.color('green', 'healthy');
  if (problem === 'authentication') return out.color('yellow', 'auth failed');
  if (problem === 'tls') return out.color('yellow', 'TLS failed');
  return out.color('red', 'unhealthy');
}

/** The whole error message, without a leading "status of <endpoint>: " the line already says. */
function reason(m: MemberHealth): string {
  const message = (m.error?.message ?? '').trim();
  const prefix = `status of ${m.endpoint}: `;
  return message.startsWith(prefix) ? message.slice(prefix.length) : message;
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
