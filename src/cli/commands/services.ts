import { Argument, type Command } from 'commander';
import { validateInstance } from '../../recipes/registration.js';
import {
  connect,
  positiveInt,
  preflight,
  checkFlags,
  resolvePath,
  type GlobalFlags,
} from '../connect.js';
import { aborted, onInterrupt } from '../interrupt.js';
import { clock, createOutput } from '../output.js';

interface RegisterFlags extends GlobalFlags {
  ttl: number;
}

interface ServicesFlags extends GlobalFlags {
  watch: boolean;
}

export function registerRegister(program: Command): void {
  program
    .command('register')
    .description(
      'Register a service instance (an ephemeral key <namespace>/services/<service>/<instance>) ' +
        'and keep it alive until Ctrl-C, which deletes it at once.',
    )
    .addArgument(new Argument('<service>', 'service name (or an absolute path)'))
    .addArgument(
      new Argument('<instance>', 'instance name, unique within the service: one path segment'),
    )
    .addArgument(new Argument('<value>', 'what clients should know, e.g. host:port'))
    .option('--ttl <seconds>', 'lease TTL in whole seconds', positiveInt, 10)
    .action(async (service: string, instance: string, value: string, _o: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<RegisterFlags>(), cmd);
      const out = createOutput(flags.json);
      const conn = connect(flags);
      const interrupt = onInterrupt();
      try {
        // The library's own check (as conn.newRegistration does): one path segment, not empty.
        validateInstance(instance);
        const servicePath = resolvePath(conn, 'services', service, 'service');
        const key = conn.newEphemeralKey(`${servicePath}/${instance}`);
        const errors = await key.create(value, flags.ttl, { signal: interrupt.signal });
        out.emit(
          { event: 'registered', key: key.key, value, ttl: flags.ttl },
          `${clock()} registered ${key.key} = ${value} (ttl ${flags.ttl}s); Ctrl-C to deregister`,
        );
        const reportErrors = (async () => {
          for await (const err of errors) {
            out.emit(
              { event: 'error', error: err },
              out.color('yellow', `${clock()} ${err.message}`),
            );
          }
        })();
        await aborted(interrupt.signal);
        await key.delete();
        await reportErrors;
        out.emit({ event: 'deregistered', key: key.key }, `${clock()} deregistered ${key.key}`);
      } finally {
        await conn.close();
        interrupt.dispose();
      }
    });
}

export function registerServices(program: Command): void {
  program
    .command('services')
    .description('List the instances of a service; with --watch, follow every change until Ctrl-C.')
    .addArgument(new Argument('<service>', 'service name (or an absolute path)'))
    .option('--watch', 'keep the table live', false)
    .action(async (service: string, _o: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<ServicesFlags>(), cmd);
      const out = createOutput(flags.json);
      const conn = connect(flags);
      const interrupt = onInterrupt();
      try {
        const tracker = conn.newServiceTracker(resolvePath(conn, 'services', service, 'service'));
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
          const rows = [...data.services].sort(([a], [b]) => a.localeCompare(b));
          out.emit(
            { event: 'services', revision: data.revision, services: data.services },
            `${clock()} ${rows.length} instance(s) at revision ${data.revision}\n` +
              out.table(['INSTANCE', 'VALUE'], rows),
          );
          if (!flags.watch) break;
        }
      } finally {
        await conn.close();
        interrupt.dispose();
      }
    });
}
