/**
 * Deadline helpers for tests. Every wait in a test goes through one of these so that a hung
 * condition fails with a clear message instead of hanging until the runner's global timeout.
 */
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { TimeoutError } from '../errors.js';

function timeoutScale(): number {
  const scale = Number(process.env.ETCDC_TEST_TIMEOUT_SCALE ?? 1);
  return Number.isFinite(scale) && scale > 0 ? scale : 1;
}

/**
 * Scales a test timeout by `ETCDC_TEST_TIMEOUT_SCALE` (default 1): the one knob for slow machines
 * (CI under load, valgrind-like environments). Use it for every deadline a test waits on.
 *
 * @param ms - the timeout on a normal machine, in milliseconds
 * @returns `ms * ETCDC_TEST_TIMEOUT_SCALE`
 */
export function testTimeout(ms: number): number {
  return Math.round(ms * timeoutScale());
}

/** Options of {@link waitFor}. */
export interface WaitForOptions {
  /** Give up after this many milliseconds (not scaled: pass `testTimeout(ms)`). */
  timeoutMs: number;
  /** Pause between two polls, default 50 ms. */
  intervalMs?: number;
  /** What is being waited for; goes into the error message. */
  message?: string;
}

/**
 * Polls `fn` until it returns (or resolves to) a truthy value, and resolves with that value.
 * A throwing `fn` counts as "not yet"; its last error becomes the `cause` of the timeout error.
 *
 * @throws {@link TimeoutError} when `timeoutMs` passes first.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  options: WaitForOptions,
): Promise<NonNullable<T>> {
  const { timeoutMs, intervalMs = 50, message = 'condition' } = options;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      const detail =
        lastError === undefined
          ? ''
          : `; last error: ${lastError instanceof Error ? lastError.message : inspect(lastError)}`;
      throw new TimeoutError(
        `timed out after ${timeoutMs} ms waiting for ${message}${detail}`,
        lastError === undefined ? undefined : { cause: lastError },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(intervalMs, left)));
  }
}

/**
 * Settles like `promise`, or rejects with a {@link TimeoutError} naming `what` if it has not
 * settled after `ms` milliseconds. The timer is cleared either way, so it never keeps a process
 * alive. The original promise is not cancelled.
 */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      reject(new TimeoutError(`${what} did not settle within ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

let nameCounter = 0;

/**
 * A name no other test (in this or a parallel test process) uses, e.g. for a key namespace:
 * `${prefix}-${pid}-${counter}-${random}`. Only `[A-Za-z0-9_-]` besides the prefix.
 */
export function uniqueName(prefix: string): string {
  nameCounter += 1;
  return `${prefix}-${process.pid}-${nameCounter}-${randomBytes(3).toString('hex')}`;
}
