/**
 * `etcdc queue push|pop`, `etcdc counter get|add`, `etcdc barrier hold|release|wait`: the queue,
 * counter and barrier recipes from the shell, on Go's layouts (a Go service or `etcdctl` sees the
 * same keys). Names go under `<namespace>/queues/`, `counters/` and `barriers/`; an absolute path
 * is taken as is.
 */
import { Argument, Command, InvalidArgumentError as UsageError, Option } from 'commander';
import { AbortError, InvalidArgumentError, TimeoutError } from '../../errors.js';
import { connected, interruptible, type Interruptible } from '../command-scope.js';
import { checkFlags, positiveInt, preflight, resolvePath, type GlobalFlags } from '../connect.js';
import { clock } from '../output.js';
import { anySignal } from '../../transport/timers.js';

interface PushFlags extends GlobalFlags {
  priority?: number;
}

interface PopFlags extends GlobalFlags {
  count: number;
  priority: boolean;
  timeout?: number;
}

/** Priority flag: an integer 0..65535. */
function priority(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535) {
    throw new UsageError(`expected an integer 0..65535, got ${value}`);
  }
  return n;
}

/** A signed integer argument (a negative one after `--`). */
function integer(value: string, argument: string): number {
  const n = Number(value);
  if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(n)) {
    throw new InvalidArgumentError(argument, `expected an integer, got ${value}`);
  }
  return n;
}

/**
 * A waiting call (`queue pop`, `barrier wait`): once one call reached etcd, `call` runs with a
 * signal that aborts on Ctrl-C or after `--timeout` (counted from then). Ctrl-C is a clean end;
 * the timeout is the error the user asked for, a TimeoutError saying `what`.
 */
async function waitFor(
  { conn, signal }: Interruptible,
  timeout: number | undefined,
  what: string,
  call: (until: AbortSignal) => Promise<void>,
): Promise<void> {
  try {
    await preflight(conn, signal);
    await call(timeout === undefined ? signal : anySignal([signal, AbortSignal.timeout(timeout)]));
  } catch (err) {
    // Ctrl-C while waiting: a clean end.
    if (signal.aborted) return;
    if (err instanceof AbortError && timeout !== undefined) {
      throw new TimeoutError(`${what} within --timeout ${timeout} ms`);
    }
    throw err;
  }
}

const nameArg = (what: string): Argument =>
  new Argument('<name>', `${what} name (under <namespace>/${what}s/) or an absolute path`);

export function registerQueue(program: Command): void {
  const queue = program
    .command('queue')
    .description(
      'A queue in Go’s recipe layout (path/<UnixNano>, or path/<prio>/<seq> with --priority): ' +
        'push items, pop them (each item to exactly one consumer).',
    );
  queue
    .command('push')
    .description('Append values to a queue; prints each item’s key.')
    .addArgument(nameArg('queue'))
    .addArgument(new Argument('<value...>', 'the items, in order'))
    .addOption(
      new Option('--priority <n>', 'a priority queue item (0..65535, lower first)').argParser(
        priority,
      ),
    )
    .action(async (name: string, values: string[], _o: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<PushFlags>(), cmd);
      await connected(flags, async ({ out, conn }) => {
        const path = resolvePath(conn, 'queues', name, 'name');
        const prio = flags.priority;
        let push: (value: string) => Promise<string>;
        if (prio === undefined) {
          const q = conn.newQueue(path);
          push = (v) => q.enqueue(v);
        } else {
          const q = conn.newPriorityQueue(path);
          push = (v) => q.enqueue(v, prio);
        }
        for (const value of values) {
          const key = await push(value);
          out.emit(
            { event: 'enqueued', key, value, ...(prio === undefined ? {} : { priority: prio }) },
            `${clock()} enqueued ${key} = ${value}`,
          );
        }
      });
    });
  queue
    .command('pop')
    .description(
      'Take items off a queue (oldest first; with --priority, most urgent first) and print them; ' +
        'waits while the queue is empty, until --timeout or Ctrl-C.',
    )
    .addArgument(nameArg('queue'))
    .option('--count <n>', 'how many items to take', positiveInt, 1)
    .option('--priority', 'the queue is a priority queue', false)
    .addOption(
      new Option('--timeout <ms>', 'give up waiting after this long (exit 1)').argParser(
        positiveInt,
      ),
    )
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<PopFlags>(), cmd);
      await interruptible(flags, async (scope) => {
        const { out, conn, signal } = scope;
        const path = resolvePath(conn, 'queues', name, 'name');
        const q = flags.priority ? conn.newPriorityQueue(path) : conn.newQueue(path);
        await waitFor(scope, flags.timeout, 'no item', async (until) => {
          for (let i = 0; i < flags.count; i++) {
            // Ctrl-C between items: a clean end, nothing more taken.
            if (signal.aborted) return;
            const item = await q.dequeueItem({ signal: until });
            out.emit(
              { event: 'dequeued', key: item.key, value: item.value, revision: item.revision },
              `${clock()} dequeued ${item.key} = ${item.value}`,
            );
          }
        });
      });
    });
  for (const c of queue.commands) c.exitOverride();
}

export function registerCounter(program: Command): void {
  const counter = program
    .command('counter')
    .description('A shared integer counter (one key, the integer in decimal).');
  counter
    .command('get')
    .description('Print the value (0 when the counter does not exist).')
    .addArgument(nameArg('counter'))
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<GlobalFlags>(), cmd);
      await connected(flags, async ({ out, conn }) => {
        const c = conn.newCounter(resolvePath(conn, 'counters', name, 'name'));
        const value = await c.get();
        out.emit({ event: 'value', key: c.path, value }, String(value));
      });
    });
  counter
    .command('add')
    .description(
      'Add to the counter (default 1; a negative delta after --) and print the new value.',
    )
    .addArgument(nameArg('counter'))
    .addArgument(new Argument('[delta]', 'an integer, default 1'))
    .action(async (name: string, delta: string | undefined, _o: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<GlobalFlags>(), cmd);
      await connected(flags, async ({ out, conn }) => {
        const by = delta === undefined ? 1 : integer(delta, 'delta');
        const c = conn.newCounter(resolvePath(conn, 'counters', name, 'name'));
        const value = await c.add(by);
        out.emit({ event: 'value', key: c.path, value, delta: by }, String(value));
      });
    });
  for (const c of counter.commands) c.exitOverride();
}

export function registerBarrier(program: Command): void {
  const barrier = program
    .command('barrier')
    .description('A barrier in Go’s recipe layout (the key itself): hold, release, wait.');
  const simple = (verb: 'hold' | 'release', text: string): void => {
    barrier
      .command(verb)
      .description(text)
      .addArgument(nameArg('barrier'))
      .action(async (name: string, _o: unknown, cmd: Command) => {
        const flags = checkFlags(cmd.optsWithGlobals<GlobalFlags>(), cmd);
        await connected(flags, async ({ out, conn }) => {
          const b = conn.newBarrier(resolvePath(conn, 'barriers', name, 'name'));
          const changed = verb === 'hold' ? await b.hold() : await b.release();
          const event = verb === 'hold' ? 'held' : 'released';
          out.emit(
            { event, key: b.path, changed },
            `${clock()} ${b.path} ${event}${changed ? '' : ' (it already was)'}`,
          );
        });
      });
  };
  simple('hold', 'Hold the barrier (its key, no lease: it stays held until released).');
  simple('release', 'Release the barrier: every waiter goes.');
  barrier
    .command('wait')
    .description('Wait until the barrier is released (at once when it is not held); Ctrl-C ends.')
    .addArgument(nameArg('barrier'))
    .addOption(
      new Option('--timeout <ms>', 'give up waiting after this long (exit 1)').argParser(
        positiveInt,
      ),
    )
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<GlobalFlags & { timeout?: number }>(), cmd);
      await interruptible(flags, async (scope) => {
        const { out, conn } = scope;
        const b = conn.newBarrier(resolvePath(conn, 'barriers', name, 'name'));
        await waitFor(scope, flags.timeout, 'still held', async (until) => {
          await b.wait({ signal: until });
          out.emit({ event: 'open', key: b.path }, `${clock()} ${b.path} is not held`);
        });
      });
    });
  for (const c of barrier.commands) c.exitOverride();
}
