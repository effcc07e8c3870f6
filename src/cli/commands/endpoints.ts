import { Argument, type Command } from 'commander';
import type { ServiceEndpoint } from '../../recipes/endpoint-tracker.js';
import { connect, preflight, checkFlags, resolvePath, type GlobalFlags } from '../connect.js';
import { onInterrupt } from '../interrupt.js';
import { clock, createOutput } from '../output.js';

interface EndpointsFlags extends GlobalFlags {
  watch: boolean;
}

export function registerEndpoints(program: Command): void {
  program
    .command('endpoints')
    .description(
      "List the gRPC endpoints of a service in Go's naming/endpoints format (what Go's etcd " +
        'resolver dials, and what register --format endpoints writes); entries that are not ' +
        'endpoints are listed as skipped. With --watch, follow every change until Ctrl-C.',
    )
    .addArgument(new Argument('<service>', 'service name (or an absolute path)'))
    .option('--watch', 'keep the table live', false)
    .action(async (service: string, _o: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<EndpointsFlags>(), cmd);
      const out = createOutput(flags.json);
      const conn = connect(flags);
      const interrupt = onInterrupt();
      try {
        const tracker = conn.newEndpointTracker(resolvePath(conn, 'services', service, 'service'));
        if (flags.watch) {
          await preflight(conn, interrupt.signal);
          if (interrupt.signal.aborted) return;
        }
        interrupt.signal.addEventListener('abort', () => void tracker.stop(), { once: true });
        for await (const data of tracker.start()) {
          // A one-shot listing that failed is the command's error (stderr, exit 1).
          if (!flags.watch && data.error !== undefined) throw data.error;
          if (data.error !== undefined) {
            out.emit(
              { event: 'error', error: data.error },
              out.color('yellow', data.error.message),
            );
          }
          const endpoints = Object.fromEntries(
            [...data.endpoints].map(([name, e]) => [name, describe(e)]),
          );
          const rows = [...data.endpoints.values()].map((e) => [
            e.addr,
            JSON.stringify(e.metadata),
            e.key,
          ]);
          const skipped = [...data.skipped].map(
            ([name, why]) => `  skipped ${tracker.prefix}${name}: ${why}`,
          );
          out.emit(
            {
              event: 'endpoints',
              revision: data.revision,
              endpoints,
              skipped: data.skipped,
            },
            `${clock()} ${rows.length} endpoint(s) at revision ${data.revision}\n` +
              out.table(['ADDR', 'METADATA', 'KEY'], rows) +
              (skipped.length === 0 ? '' : `\n${skipped.join('\n')}`),
          );
          if (!flags.watch) break;
        }
      } finally {
        await conn.close();
        interrupt.dispose();
      }
    });
}

function describe(e: ServiceEndpoint): { addr: string; metadata: unknown } {
  return { addr: e.addr, metadata: e.metadata };
}
