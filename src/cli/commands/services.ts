import { Argument, Option, type Command } from 'commander';
import { InvalidArgumentError } from '../../errors.js';
import { validateInstance } from '../../recipes/registration.js';
import type { ServiceData } from '../../recipes/service-tracker.js';
import { interruptible } from '../command-scope.js';
import { positiveInt, checkFlags, resolvePath, type GlobalFlags } from '../connect.js';
import { aborted } from '../interrupt.js';
import { clock, type Output } from '../output.js';
import { printStates } from '../print-stream.js';

interface RegisterFlags extends GlobalFlags {
  ttl: number;
  format: 'plain' | 'endpoints';
}

interface ServicesFlags extends GlobalFlags {
  watch: boolean;
}

export function registerRegister(program: Command): void {
  program
    .command('register')
    .description(
      'Register a service instance (an ephemeral key <namespace>/services/<service>/<instance>) ' +
        'and keep it alive until Ctrl-C, which deletes it at once. With --format endpoints: a ' +
        "gRPC endpoint in Go's naming/endpoints format (key .../<service>/<host:port>, value " +
        '{"Op":0,"Addr":...,"Metadata":...}), which Go\'s etcd resolver and etcdc endpoints read.',
    )
    .addArgument(new Argument('<service>', 'service name (or an absolute path)'))
    .addArgument(
      new Argument(
        '<instance>',
        'instance name, unique within the service: one path segment (--format endpoints: the ' +
          'address, host:port)',
      ),
    )
    .addArgument(
      new Argument(
        '[value]',
        'what clients should know, e.g. host:port (required; --format endpoints: the metadata ' +
          'as JSON, optional)',
      ),
    )
    .option('--ttl <seconds>', 'lease TTL in whole seconds', positiveInt, 10)
    .addOption(
      new Option('--format <format>', 'plain: <instance> = <value>; endpoints: Go gRPC endpoint')
        .choices(['plain', 'endpoints'])
        .default('plain'),
    )
    .action(
      async (
        service: string,
        instance: string,
        value: string | undefined,
        _o: unknown,
        cmd: Command,
      ) => {
        const flags = checkFlags(cmd.optsWithGlobals<RegisterFlags>(), cmd);
        const endpoints = flags.format === 'endpoints';
        // Checked before connecting: a usage error exits 2 without touching etcd.
        if (!endpoints && value === undefined) {
          cmd.error("error: missing required argument 'value'", {
            exitCode: 2,
            code: 'commander.missingArgument',
          });
        }
        const metadata = endpoints ? parseMetadata(value) : undefined;
        if (!endpoints) validateInstance(instance);
        await interruptible(flags, async ({ out, conn, signal }) => {
          const servicePath = resolvePath(conn, 'services', service, 'service');
          if (endpoints) {
            const ep = conn.newEndpointRegistration(servicePath, instance, {
              metadata,
              ttl: flags.ttl,
            });
            const errors = await ep.register({ signal });
            const record = { key: ep.key, value: ep.value, ttl: flags.ttl, format: 'endpoints' };
            await hold(out, signal, record, errors, () => ep.stop());
          } else {
            const text = value ?? '';
            const key = conn.newEphemeralKey(`${servicePath}/${instance}`);
            const errors = await key.create(text, flags.ttl, { signal });
            const record = { key: key.key, value: text, ttl: flags.ttl };
            await hold(out, signal, record, errors, () => key.delete());
          }
        });
      },
    );
}

/** The metadata argument of `register --format endpoints`: JSON text, or none. */
function parseMetadata(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new InvalidArgumentError('value', `the metadata must be JSON, got ${text}`);
  }
}

/** Says it is registered, reports its errors, and deletes it on Ctrl-C. */
async function hold(
  out: Output,
  signal: AbortSignal,
  record: { key: string; value: string; ttl: number; [field: string]: unknown },
  errors: AsyncIterable<Error>,
  remove: () => Promise<void>,
): Promise<void> {
  const { key, value, ttl } = record;
  out.emit(
    { ...record, event: 'registered' },
    `${clock()} registered ${key} = ${value} (ttl ${ttl}s); Ctrl-C to deregister`,
  );
  const reportErrors = (async () => {
    for await (const err of errors) {
      out.emit({ event: 'error', error: err }, out.color('yellow', `${clock()} ${err.message}`));
    }
  })();
  await aborted(signal);
  await remove();
  await reportErrors;
  out.emit({ event: 'deregistered', key }, `${clock()} deregistered ${key}`);
}

export function registerServices(program: Command): void {
  program
    .command('services')
    .description('List the instances of a service; with --watch, follow every change until Ctrl-C.')
    .addArgument(new Argument('<service>', 'service name (or an absolute path)'))
    .option('--watch', 'keep the table live', false)
    .action(async (service: string, _o: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<ServicesFlags>(), cmd);
      await interruptible(flags, async (scope) => {
        const { out, conn } = scope;
        const tracker = conn.newServiceTracker(resolvePath(conn, 'services', service, 'service'));
        await printStates(
          scope,
          flags.watch,
          (o) => tracker.start(o),
          (data) => {
            printServices(out, data);
          },
        );
      });
    });
}

function printServices(out: Output, data: ServiceData): void {
  const rows = [...data.services].sort(([a], [b]) => a.localeCompare(b));
  out.emit(
    { event: 'services', revision: data.revision, services: data.services },
    `${clock()} ${rows.length} instance(s) at revision ${data.revision}\n` +
      out.table(['INSTANCE', 'VALUE'], rows),
  );
}
