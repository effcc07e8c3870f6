import { Argument, type Command } from 'commander';
import { interruptible } from '../command-scope.js';
import { nonNegativeInt, checkFlags, resolvePath, type GlobalFlags } from '../connect.js';
import { follow } from '../print-stream.js';

interface ObserveFlags extends GlobalFlags {
  rev: number;
  prefix: boolean;
}

export function registerObserve(program: Command): void {
  program
    .command('observe')
    .description(
      'Print every change of a key (or, with --prefix, of everything below it) until Ctrl-C. ' +
        'A relative path is taken under the namespace; an empty one is refused (to observe the ' +
        'whole namespace, name its root: observe /<namespace> --prefix).',
    )
    .addArgument(new Argument('<path>', 'key path, e.g. config or /etcdc/config'))
    .option('--rev <n>', 'replay history from revision n (0 = from now)', nonNegativeInt, 0)
    .option('--prefix', 'observe the path and everything below it', false)
    .action(async (path: string, _opts: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<ObserveFlags>(), cmd);
      await interruptible(flags, async (scope) => {
        const { out, conn } = scope;
        const hint = `; to observe the whole namespace, name its root: observe ${conn.root} --prefix`;
        const obs = conn.newObserver(resolvePath(conn, '', path, 'path', hint));
        const start = { fromRevision: flags.rev, recursive: flags.prefix };
        await follow(
          scope,
          (o) => obs.start({ ...o, ...start }),
          (ev) => {
            if (ev.type === 'resync') {
              const { type: event, snapshot, ...rest } = ev;
              out.emit(
                { event, ...rest, snapshot: Object.fromEntries(snapshot) },
                out.color(
                  'yellow',
                  `history compacted at ${ev.compactRevision}; state at revision ${ev.revision}: ` +
                    `${ev.snapshot.size} keys`,
                ),
              );
              for (const [k, v] of ev.snapshot) out.info(`  ${k} = ${v}`);
              return;
            }
            if (ev.type === 'status') {
              const text =
                ev.state === 'unavailable'
                  ? `etcd unreachable, retrying: ${ev.error?.message ?? ''}`
                  : 'connected again; nothing was missed';
              out.emit(
                {
                  event: 'status',
                  state: ev.state,
                  ...(ev.error === undefined ? {} : { error: ev.error }),
                },
                out.color('yellow', text),
              );
              return;
            }
            out.emit(
              { event: ev.type, key: ev.key, value: ev.value, revision: ev.revision },
              `${String(ev.revision).padStart(8)} ${ev.type === 'put' ? out.color('green', 'PUT   ') : out.color('red', 'DELETE')} ${ev.key}${ev.type === 'put' ? ` = ${ev.value}` : ''}`,
            );
          },
        );
      });
    });
}
