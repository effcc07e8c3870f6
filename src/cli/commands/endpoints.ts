import { Argument, type Command } from 'commander';
import type { EndpointData, ServiceEndpoint } from '../../recipes/endpoint-tracker.js';
import { interruptible } from '../command-scope.js';
import { checkFlags, resolvePath, type GlobalFlags } from '../connect.js';
import { clock, type Output } from '../output.js';
import { printStates } from '../print-stream.js';

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
      await interruptible(flags, async (scope) => {
        const { out, conn } = scope;
        const tracker = conn.newEndpointTracker(resolvePath(conn, 'services', service, 'service'));
        await printStates(
          scope,
          flags.watch,
          (o) => tracker.start(o),
          (data) => {
            printEndpoints(out, tracker.prefix, data);
          },
        );
      });
    });
}

function printEndpoints(out: Output, prefix: string, data: EndpointData): void {
  const endpoints = Object.fromEntries([...data.endpoints].map(([name, e]) => [name, describe(e)]));
  const rows = [...data.endpoints.values()].map((e) => [e.addr, JSON.stringify(e.metadata), e.key]);
  const skipped = [...data.skipped].map(([name, why]) => `  skipped ${prefix}${name}: ${why}`);
  out.emit(
    { event: 'endpoints', revision: data.revision, endpoints, skipped: data.skipped },
    `${clock()} ${rows.length} endpoint(s) at revision ${data.revision}\n` +
      out.table(['ADDR', 'METADATA', 'KEY'], rows) +
      (skipped.length === 0 ? '' : `\n${skipped.join('\n')}`),
  );
}

function describe(e: ServiceEndpoint): { addr: string; metadata: unknown } {
  return { addr: e.addr, metadata: e.metadata };
}
