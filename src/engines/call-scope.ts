/**
 * The life of a recipe made of calls (barrier, queue, counter, transactions) rather than of one
 * background loop, and the scope of each call: a call ends when the caller's signal fires, when
 * the recipe is closed, or when the connector closes — and says which (AbortError or
 * ClosedError). One-shot calls retry etcd's retryable failures for a bounded time; waiting calls
 * retry until their scope ends.
 */
import {
  AbortError,
  ClosedError,
  InvalidArgumentError,
  OutcomeUnknownError,
  type EtcdConnectorError,
} from '../errors.js';
import { anySignal, Backoff, delay, isAborted } from '../transport/timers.js';
import type { Closable, ConnectorContext } from './context.js';
import { validateSignal } from './lifecycle.js';

/** Options every call of these recipes takes. */
export interface CallOptions {
  /** Gives up: the call rejects with AbortError (whatever it held or wrote is cleaned up). */
  signal?: AbortSignal;
}

/**
 * The connector holds a recipe's life only weakly: a recipe made per request and never closed is
 * collected once no call of it runs (a call in flight keeps it reachable through its I/O), and
 * then leaves the connector's list; `conn.close()` closes every one still alive.
 */
const collected = new FinalizationRegistry<{ ctx: ConnectorContext; closer: Closable }>(
  ({ ctx, closer }) => {
    ctx.untrack(closer);
  },
);

/** A recipe's life: open until `close()` or the connector's close; then every call ends. */
export class RecipeLife {
  private readonly controller = new AbortController();
  private closing: Promise<void> | undefined;
  private readonly closer: Closable;

  constructor(
    private readonly ctx: ConnectorContext,
    /** What the recipe is called in errors, e.g. `queue /ns/jobs`. */
    readonly what: string,
    /** Releases what the recipe holds; runs once, after every call was told to end. */
    private readonly teardown: () => Promise<void> = () => Promise.resolve(),
  ) {
    const self = new WeakRef(this);
    this.closer = { close: () => self.deref()?.close() ?? Promise.resolve() };
    ctx.track(this.closer);
    collected.register(this, { ctx, closer: this.closer }, this.closer);
  }

  /** Aborted (with a ClosedError) when the recipe or the connector closes. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get closed(): boolean {
    return this.closing !== undefined;
  }

  /** @throws ClosedError after `close()` or the connector's close */
  assertOpen(): void {
    this.ctx.assertOpen();
    if (this.closing !== undefined) throw new ClosedError(this.what);
  }

  /** Ends every call and releases what the recipe holds. Idempotent; never rejects. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.controller.abort(new ClosedError(this.what));
      try {
        await this.teardown();
      } catch {
        // nothing left to do: the connector revokes leases on its own close
      } finally {
        collected.unregister(this.closer);
        this.ctx.untrack(this.closer);
      }
    })();
    return this.closing;
  }

  /** A scope for one call (checks that the recipe is open, and the caller's signal). */
  scope(options: CallOptions | undefined, argument = 'options.signal'): CallScope {
    const given: unknown = options;
    if (given !== undefined && (typeof given !== 'object' || given === null)) {
      throw new InvalidArgumentError('options', 'must be an object');
    }
    const signal = validateSignal(options?.signal, argument);
    this.assertOpen();
    return new CallScope(this, signal);
  }
}

/** One call: its signal aborts when the caller gives up or the recipe closes. */
export class CallScope {
  readonly signal: AbortSignal;

  constructor(
    private readonly life: RecipeLife,
    private readonly caller?: AbortSignal,
  ) {
    this.signal = caller === undefined ? life.signal : anySignal([caller, life.signal]);
  }

  get ended(): boolean {
    return this.signal.aborted;
  }

  /** Why the scope ended: ClosedError when the recipe closed, else AbortError. */
  reason(): EtcdConnectorError {
    if (this.life.signal.aborted) return new ClosedError(this.life.what);
    return new AbortError({ cause: this.caller?.reason });
  }

  /** Throws {@link reason} if the scope has ended. */
  check(): void {
    if (isAborted(this.signal)) throw this.reason();
  }

  /** An AbortError of an ended scope becomes its reason; everything else passes. */
  translate(err: unknown): unknown {
    return isAborted(this.signal) && err instanceof AbortError ? this.reason() : err;
  }
}

/**
 * Runs `attempt` until it resolves, retrying etcd's retryable failures with backoff — for
 * `budgetMs` (then it rejects with the last failure) or, without a budget, until the scope ends
 * (then with the scope's reason). A final failure rejects at once. `attempt` must be safe to
 * repeat after a failure (the recipes make sure of it with receipts).
 */
export async function persist<T>(
  ctx: ConnectorContext,
  scope: CallScope,
  what: string,
  attempt: () => Promise<T>,
  budgetMs?: number,
): Promise<T> {
  const started = performance.now();
  const backoff = new Backoff(50, 1000);
  for (;;) {
    scope.check();
    let pause: number;
    try {
      return await attempt();
    } catch (err) {
      // A write that may have landed says so, given up or not: an AbortError would say it did not.
      if (err instanceof OutcomeUnknownError) throw err;
      scope.check();
      const error = ctx.toError(err, what);
      if (!error.retryable) throw error;
      const left = budgetMs === undefined ? Infinity : budgetMs - (performance.now() - started);
      pause = backoff.next();
      if (left < pause) throw error;
    }
    try {
      await delay(pause, scope.signal);
    } catch (err) {
      throw scope.translate(err);
    }
  }
}
