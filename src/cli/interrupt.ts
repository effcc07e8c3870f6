/**
 * Ctrl-C handling shared by every command: the first SIGINT/SIGTERM aborts `signal` so the command
 * resigns, deletes and revokes what it holds and returns; a second one exits at once.
 */
import { constants } from 'node:os';

/** The abort reason of an interrupt: which signal came. */
export class Interrupted extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`);
  }
}

/** The exit code a shell reports for a process ended by `sig`: 128 + its number. */
export function signalExitCode(sig: NodeJS.Signals): number {
  return 128 + ((constants.signals[sig] as number | undefined) ?? 0);
}

/**
 * The exit code of a command ended by an interrupt, as for a process killed by that signal: 130
 * for SIGINT (Ctrl-C), 143 for SIGTERM.
 */
export function interruptedExitCode(signal: AbortSignal): number {
  const reason: unknown = signal.reason;
  return signalExitCode(reason instanceof Interrupted ? reason.signal : 'SIGINT');
}
export interface Interrupt {
  readonly signal: AbortSignal;
  /** Removes the handlers (so an idle process can exit). */
  dispose(): void;
}

export function onInterrupt(): Interrupt {
  const controller = new AbortController();
  let count = 0;
  const handler = (sig: NodeJS.Signals): void => {
    count += 1;
    if (count > 1) process.exit(signalExitCode(sig));
    controller.abort(new Interrupted(sig));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signal: controller.signal,
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}

/** Resolves when `signal` aborts. */
export function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else
      signal.addEventListener(
        'abort',
        () => {
          resolve();
        },
        { once: true },
      );
  });
}
