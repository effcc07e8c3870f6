/**
 * `etcdc lock <name> [--ttl 10] [--timeout ms] [--try] [-- command args...]`: `etcdctl lock` with
 * a fence. Same mutex (Go's layout), so both queue in one line on the same path.
 *
 * Exit codes: 0 (or the command's own), 1 error, 2 usage, 3 not acquired (`--try` and held
 * elsewhere, or `--timeout` passed), 4 the lock was lost while held, 126 / 127 the command could
 * not be run / was not found (as a shell says), 130 Ctrl-C (143 SIGTERM) before it was acquired.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Argument, type Command } from 'commander';
import type { EtcdConnector } from '../../connector.js';
import type { HeldLock } from '../../engines/held-lock.js';
import { firstCreated } from '../../engines/ranges.js';
import { AbortError, NotLockedError } from '../../errors.js';
import type { Mutex } from '../../recipes/mutex.js';
import { interruptible } from '../command-scope.js';
import { checkFlags, positiveInt, preflight, resolvePath, type GlobalFlags } from '../connect.js';
import { aborted, interruptedExitCode, signalExitCode } from '../interrupt.js';
import { clock, jsonError, type Output } from '../output.js';
import { anySignal } from '../../transport/timers.js';

export const EXIT_NOT_ACQUIRED = 3;
export const EXIT_LOCK_LOST = 4;
/** The command could not be run: not found (127) or not runnable (126), as a shell says. */
export const EXIT_NOT_FOUND = 127;
export const EXIT_CANNOT_RUN = 126;

/** How long the courtesy read of the holder may take (human output only). */
const HOLDER_READ_MS = 1000;

interface LockFlags extends GlobalFlags {
  ttl: number;
  timeout?: number;
  try: boolean;
}

export function registerLock(program: Command): void {
  program
    .command('lock')
    .description(
      'Acquire a lock and hold it until Ctrl-C, or run a command while holding it (after --, ' +
        'with ETCD_LOCK_KEY, ETCD_LOCK_REV as etcdctl sets them and ETCD_LOCK_TOKEN, the fencing ' +
        'token, in its environment) and exit ' +
        'with its code. Queues with `etcdctl lock` on the same path. Exit codes: 3 not ' +
        'acquired (--try, --timeout), 4 lost while held (the command got SIGTERM), 126 / 127 ' +
        'the command could not be run / was not found, 130 Ctrl-C (143 SIGTERM) while waiting.',
    )
    .addArgument(new Argument('<name>', 'lock name (under <namespace>/locks/) or an absolute path'))
    .addArgument(new Argument('[command...]', 'command to run while holding the lock'))
    .option('--ttl <seconds>', 'lease TTL in whole seconds', positiveInt, 10)
    .option('--timeout <ms>', 'give up waiting after this long (exit 3)', positiveInt)
    .option('--try', 'do not wait: exit 3 at once if the lock is held elsewhere', false)
    .action(async (name: string, command: string[], _o: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<LockFlags>(), cmd);
      await interruptible(flags, async ({ out, conn, signal }) => {
        const mutex = conn.newMutex(resolvePath(conn, 'locks', name, 'name'), { ttl: flags.ttl });
        await preflight(conn, signal);
        if (signal.aborted) {
          process.exitCode = interruptedExitCode(signal);
          return;
        }
        const lock = await acquire(out, conn, mutex, flags, signal);
        if (lock === undefined) return;
        out.emit(
          { event: 'acquired', key: lock.key, token: lock.token.revision, revision: lock.revision },
          // etcdctl prints the key alone: scripts may read it so.
          lock.key,
        );
        out.info(
          `${clock()} holding ${lock.key} (fencing token ${lock.token.revision})` +
            (command.length === 0 ? '; Ctrl-C releases' : `; running ${command.join(' ')}`),
        );
        process.exitCode =
          command.length === 0
            ? await holdUntilInterrupt(out, lock, signal)
            : await runHolding(out, lock, command);
      });
    });
}

/** The lock, or undefined after setting the exit code (not acquired, interrupted). */
async function acquire(
  out: Output,
  conn: EtcdConnector,
  mutex: Mutex,
  flags: LockFlags,
  interrupt: AbortSignal,
): Promise<HeldLock | undefined> {
  if (flags.try) {
    const lock = await mutex.tryLock();
    if (lock === undefined) {
      out.emit(
        { event: 'not-acquired', reason: 'held elsewhere', path: mutex.path },
        `${clock()} ${mutex.path} is held elsewhere`,
      );
      process.exitCode = EXIT_NOT_ACQUIRED;
    }
    return lock;
  }
  const signals = [interrupt];
  if (flags.timeout !== undefined) signals.push(AbortSignal.timeout(flags.timeout));
  out.info(`${clock()} waiting for ${mutex.path}`);
  if (!out.json) await tellHolder(out, conn, mutex);
  try {
    return await mutex.lock({ signal: anySignal(signals) });
  } catch (err) {
    if (!(err instanceof AbortError)) throw err;
    if (interrupt.aborted) {
      process.exitCode = interruptedExitCode(interrupt);
      return undefined;
    }
    out.emit(
      { event: 'not-acquired', reason: 'timeout', path: mutex.path, timeoutMs: flags.timeout },
      `${clock()} ${mutex.path} not acquired within ${flags.timeout ?? '?'} ms`,
    );
    process.exitCode = EXIT_NOT_ACQUIRED;
    return undefined;
  }
}

/**
 * For a person at the terminal: who holds the lock (the oldest key), read once before we join, so
 * never our own key. Best effort: a failed or slow read (1 s) says nothing.
 */
async function tellHolder(out: Output, conn: EtcdConnector, mutex: Mutex): Promise<void> {
  try {
    const res = await conn.client.kv.range(firstCreated(mutex.prefix), {
      deadline: Date.now() + HOLDER_READ_MS,
    });
    const holder = res.kvs[0];
    if (holder === undefined) return;
    out.info(
      `${clock()} held by ${holder.key.toString()} (fencing token ${holder.create_revision})`,
    );
  } catch {
    // Only a courtesy: the wait itself reports what matters.
  }
}

/** Without a command: hold until Ctrl-C (exit 0) or until the lock is lost (exit 4). */
async function holdUntilInterrupt(
  out: Output,
  lock: HeldLock,
  interrupt: AbortSignal,
): Promise<number> {
  const lost = lock.signal;
  await Promise.race([aborted(interrupt), aborted(lost)]);
  if (lock.state === 'lost') {
    reportLost(out, lock, false);
    return EXIT_LOCK_LOST;
  }
  await release(out, lock);
  return 0;
}

/** Releases the lock and says so. */
async function release(out: Output, lock: HeldLock): Promise<void> {
  await lock.unlock();
  out.emit({ event: 'released', key: lock.key }, `${clock()} released ${lock.key}`);
}

/**
 * Runs the command holding the lock: Ctrl-C / SIGTERM are passed on to it; a lost lock sends it
 * SIGTERM. Returns etcdc's exit code: the command's, or 4 if the lock was lost meanwhile.
 */
async function runHolding(out: Output, lock: HeldLock, command: string[]): Promise<number> {
  const [file = '', ...args] = command;
  const child = spawn(file, args, {
    stdio: ['inherit', out.json ? 'pipe' : 'inherit', out.json ? 'pipe' : 'inherit'],
    // etcdctl's two (ETCD_LOCK_REV: the revision of the acquisition), and the fencing token.
    env: {
      ...process.env,
      ETCD_LOCK_KEY: lock.key,
      ETCD_LOCK_REV: String(lock.revision),
      ETCD_LOCK_TOKEN: lock.token.revision,
    },
  });
  if (out.json) {
    // Keep stdout one JSON object per line: the command's lines become `output` events.
    for (const stream of ['stdout', 'stderr'] as const) {
      const input = child[stream];
      if (input === null) continue;
      createInterface({ input }).on('line', (line) => {
        out.emit({ event: 'output', stream, line }, line);
      });
    }
  }
  const forward = (sig: NodeJS.Signals): void => {
    child.kill(sig);
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  const seen = { lost: false };
  const onLost = (): void => {
    if (lock.state !== 'lost') return;
    seen.lost = true;
    reportLost(out, lock, true);
    child.kill('SIGTERM');
  };
  lock.signal.addEventListener('abort', onLost, { once: true });
  try {
    const exit = await new Promise<
      { code: number | null; signal: NodeJS.Signals | null } | { failed: Error }
    >((resolve) => {
      child.once('error', (err) => {
        // Without a pid it never ran (not found, not executable); other errors (a failed kill)
        // leave a running command, whose exit comes.
        if (child.pid === undefined) resolve({ failed: err });
      });
      child.once('exit', (code, signal) => {
        resolve({ code, signal });
      });
    });
    if ('failed' in exit) {
      const code = (exit.failed as NodeJS.ErrnoException).code;
      out.error(new Error(`cannot run ${file}: ${exit.failed.message}`, { cause: exit.failed }));
      await release(out, lock);
      return code === 'ENOENT' ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN;
    }
    out.emit(
      { event: 'exit', code: exit.code, signal: exit.signal },
      `${clock()} command exited with ${exit.signal ?? String(exit.code)}`,
    );
    if (seen.lost) return EXIT_LOCK_LOST;
    await release(out, lock);
    return exit.signal !== null ? signalExitCode(exit.signal) : (exit.code ?? 1);
  } finally {
    lock.signal.removeEventListener('abort', onLost);
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
    await lock.unlock().catch(() => undefined);
  }
}

function reportLost(out: Output, lock: HeldLock, running: boolean): void {
  const reason = lock.signal.reason as unknown;
  const why = reason instanceof Error ? reason.message : String(reason);
  const error = new NotLockedError(
    `lock ${lock.key} lost: ${why}${running ? '; the command was sent SIGTERM' : ''}`,
    { cause: reason },
  );
  if (out.json) out.emit({ event: 'lost', key: lock.key, error: jsonError(error) }, '');
  out.error(error);
}
