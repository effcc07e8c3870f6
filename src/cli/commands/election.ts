import { Argument, type Command } from 'commander';
import { LEStatus, type LeaderEvent } from '../../recipes/leader-elector.js';
import type { LeaderInfo } from '../../recipes/leader-observer.js';
import { interruptible } from '../command-scope.js';
import { positiveInt, checkFlags, resolvePath, type GlobalFlags } from '../connect.js';
import { clock, type Output } from '../output.js';
import { follow, printStates } from '../print-stream.js';

interface ElectFlags extends GlobalFlags {
  ttl: number;
}

interface LeaderFlags extends GlobalFlags {
  watch: boolean;
}

const nameArg = (): Argument =>
  new Argument('<name>', 'election name (under <namespace>/elections/) or an absolute path');

export function registerElect(program: Command): void {
  program
    .command('elect')
    .description(
      'Campaign for leadership and print every status change; Ctrl-C resigns at once. ' +
        'Shares its queue with `etcdctl elect` on the same path.',
    )
    .addArgument(nameArg())
    .addArgument(new Argument('<identity>', 'this participant, stored as the key value'))
    .option('--ttl <seconds>', 'lease TTL in whole seconds', positiveInt, 10)
    .action(async (name: string, identity: string, _o: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<ElectFlags>(), cmd);
      await interruptible(flags, async (scope) => {
        const { out, conn } = scope;
        // Bad input fails before any I/O: the constructor validates, the preflight connects.
        const elector = conn.newLeaderElector(
          resolvePath(conn, 'elections', name, 'name'),
          identity,
          flags.ttl,
        );
        const campaigned = await follow(
          scope,
          (options) => {
            out.info(`${clock()} campaigning on ${elector.prefix} as ${identity}; Ctrl-C resigns`);
            return elector.start(options);
          },
          (ev) => {
            printElectEvent(out, identity, ev);
          },
        );
        if (campaigned) out.emit({ event: 'resigned', identity }, `${clock()} resigned`);
      });
    });
}

export function printElectEvent(out: Output, identity: string, ev: LeaderEvent): void {
  const record = {
    event: 'status',
    identity,
    status: ev.status,
    leader: ev.leader,
    suspended: ev.suspended,
    token: ev.token?.revision,
    revision: ev.revision,
    key: ev.token?.key,
    error: ev.error,
  };
  let human: string;
  if (ev.status === LEStatus.Leader) {
    human = out.color('green', `LEADER (fencing token ${ev.token?.revision ?? '?'})`);
  } else if (ev.suspended) {
    human = out.color('yellow', 'SUSPENDED: may no longer be leader; leader work must pause');
  } else {
    human = `follower; leader is ${ev.leader ?? 'unknown'}`;
  }
  if (ev.error !== undefined) human += out.color('red', ` (${ev.error.message})`);
  out.emit(record, `${clock()} ${identity}: ${human}`);
}

export function registerLeader(program: Command): void {
  program
    .command('leader')
    .description('Print the current leader of an election; with --watch, follow it until Ctrl-C.')
    .addArgument(nameArg())
    .option('--watch', 'print every leader change', false)
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<LeaderFlags>(), cmd);
      await interruptible(flags, async (scope) => {
        const { out, conn } = scope;
        const observer = conn.newLeaderObserver(resolvePath(conn, 'elections', name, 'name'));
        const print = (info: LeaderInfo): void => {
          // Its error line was printed; the leader it carries is only the last one known.
          if (info.error !== undefined) return;
          out.emit(
            { event: 'leader', leader: info.leader, key: info.key, token: info.revision },
            info.leader === undefined
              ? `${clock()} no leader`
              : `${clock()} leader ${info.leader} (key ${info.key ?? '?'}, token ${info.revision ?? '?'})`,
          );
        };
        await printStates(scope, flags.watch, (o) => observer.start(o), print, 'red');
      });
    });
}
