import { InvalidArgumentError as UsageError, type Command } from 'commander';
import { startDashboard } from '../dashboard/server.js';
import { interruptible } from '../command-scope.js';
import { checkFlags, preflight, resolvePath, type GlobalFlags } from '../connect.js';
import { aborted } from '../interrupt.js';
import { clock } from '../output.js';

interface DashboardFlags extends GlobalFlags {
  port: number;
  host: string;
  path?: string;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1|\[::1\])$/;

function portNumber(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw new UsageError(`expected a port from 0 to 65535, got ${value}`);
  }
  return n;
}

export function registerDashboard(program: Command): void {
  program
    .command('dashboard')
    .description(
      'A live web page of the namespace (or --path): cluster members and health, elections, ' +
        'locks, services and endpoints, queues and barriers, leases counting down, and a log ' +
        'of changes, from one watch. Prints its address; runs until Ctrl-C.',
    )
    .option('--port <n>', 'TCP port (0: any free port)', portNumber, 0)
    .option('--host <address>', 'address to bind (the page shows keys and values)', '127.0.0.1')
    .option('--path <path>', 'show only this subtree (relative: under the namespace)')
    .action(async (_opts: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<DashboardFlags>(), cmd);
      await interruptible(flags, async ({ out, conn, signal }) => {
        const path =
          flags.path === undefined ? conn.root : resolvePath(conn, '', flags.path, '--path');
        await preflight(conn, signal);
        if (signal.aborted) return;
        const dashboard = await startDashboard(conn, {
          port: flags.port,
          host: flags.host,
          path,
        });
        try {
          if (!LOOPBACK.test(flags.host)) {
            out.info(
              out.color(
                'yellow',
                `warning: listening on ${flags.host}: anyone who can reach it sees the keys and ` +
                  'values under ' +
                  path,
              ),
            );
          }
          out.emit(
            { event: 'dashboard', url: dashboard.url, path },
            `${clock()} dashboard of ${path} at ${out.color('bold', dashboard.url)} (Ctrl-C to stop)`,
          );
          await aborted(signal);
        } finally {
          await dashboard.stop();
        }
        out.emit({ event: 'stopped' }, `${clock()} dashboard stopped`);
      });
    });
}
