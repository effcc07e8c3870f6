import { Argument, type Command } from 'commander';
import {
  connect,
  nonNegativeInt,
  preflight,
  checkFlags,
  resolvePath,
  type GlobalFlags,
} from '../connect.js';
import { onInterrupt } from '../interrupt.js';
import { createOutput } from '../output.js';

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
      const out = createOutput(flags.json);
      const conn = connect(flags);
      const interrupt = onInterrupt();
      try {
        const hint = `; to observe the whole namespace, name its root: observe ${conn.root} --prefix`;
        const obs = conn.newObserver(resolvePath(conn, '', path, 'path', hint));
        await preflight(conn, interrupt.signal);
        if (interrupt.signal.aborted) return;
        interrupt.signal.addEventListener('abort', () => void obs.stop(), { once: true });
        for await (const ev of obs.start(flags.rev, flags.prefix)) {
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
            continue;
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
            continue;
          }
          out.emit(
            { event: ev.type, key: ev.key, value: ev.value, revision: ev.revision },
            `${String(ev.revision).padStart(8)} ${ev.type === 'put' ? out.color('green', 'PUT   ') : out.color('red', 'DELETE')} ${ev.key}${ev.type === 'put' ? ` = ${ev.value}` : ''}`,
          );
        }
      } finally {
        await conn.close();
        interrupt.dispose();
      }
    });
}
