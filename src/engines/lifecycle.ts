/**
 * The life of a recipe that runs in the background, once for all of them: started at most once,
 * stopped at most once (every later `stop()` returns the same promise, which never rejects),
 * tracked by the connector so `conn.close()` stops it, stopped by the caller's `signal`, and a
 * `signal` of its own that aborts the moment stopping begins.
 */
import { ClosedError, InvalidArgumentError, InvalidStateError } from '../errors.js';
import type { Closable, ConnectorContext } from './context.js';

/** Options every `start()` takes. */
export interface StartOptions {
  /** Stops the recipe (its stream ends) when it fires. */
  signal?: AbortSignal;
}

/** Checks a caller's signal (JavaScript callers get no help from the types). */
export function validateSignal(
  signal: unknown,
  argument = 'options.signal',
): AbortSignal | undefined {
  if (signal === undefined) return undefined;
  if (!(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError(argument, 'must be an AbortSignal');
  }
  return signal;
}

export class Lifecycle implements Closable {
  /** Made when first asked for: an idle recipe of thousands need not keep one. */
  private controller: AbortController | undefined;
  private started = false;
  private stopping: Promise<void> | undefined;
  /** Registered with the connector (no function kept per recipe: thousands of them idle). */
  private tracked = false;
  private unlisten: (() => void) | undefined;

  constructor(
    private readonly ctx: ConnectorContext,
    /** What the recipe is called in errors (e.g. `'leader elector'`). */
    private readonly what: string,
    /** Ends everything the recipe runs; called once, after `signal` aborted. Must not reject. */
    private readonly teardown: () => Promise<void>,
  ) {}

  /** Aborted when stopping begins. */
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.stopping !== undefined) this.controller.abort(new ClosedError(this.what));
    }
    return this.controller.signal;
  }

  /** True once `stop()` was called (or the caller's signal fired). */
  get isStopping(): boolean {
    return this.stopping !== undefined;
  }

  get isStarted(): boolean {
    return this.started;
  }

  /** @throws ClosedError after `stop()` or the connector's `close()` */
  assertOpen(): void {
    this.ctx.assertOpen();
    if (this.stopping !== undefined) throw new ClosedError(this.what);
  }

  /**
   * Marks the start: from now on the connector's `close()` and the caller's `signal` stop it.
   *
   * @throws InvalidStateError started before
   * @throws ClosedError stopped, or the connector is closed
   */
  begin(options: StartOptions = {}): void {
    const signal = validateSignal(options.signal);
    this.assertOpen();
    if (this.started) throw new InvalidStateError(`${this.what}: start() was already called`);
    this.started = true;
    this.ctx.track(this);
    this.tracked = true;
    if (signal === undefined) return;
    if (signal.aborted) {
      void this.stop();
      return;
    }
    const onAbort = (): void => void this.stop();
    signal.addEventListener('abort', onAbort, { once: true });
    this.unlisten = () => {
      signal.removeEventListener('abort', onAbort);
    };
  }

  /** For the connector's `close()`: same as `stop()`. */
  close(): Promise<void> {
    return this.stop();
  }

  /** Stops once; resolves when nothing of the recipe is left. Never rejects. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.controller?.abort(new ClosedError(this.what));
      this.unlisten?.();
      try {
        await this.teardown();
      } finally {
        if (this.tracked) this.ctx.untrack(this);
      }
    })().catch(() => undefined);
    return this.stopping;
  }
}
