/**
 * A recipe's state stream fed by a reflector: what the trackers (PrefixState), the leader observer
 * and the inspector share. One `start()` per object (the lifecycle); a coalescing stream that
 * keeps every error report for a slow reader; leaving the loop stops the recipe; stopping stops
 * the reflector, waits until nothing of it runs, then ends the stream.
 */
import { StreamQueue, type RecipeStream } from '../transport/stream-queue.js';
import type { ConnectorContext } from './context.js';
import { Lifecycle, type StartOptions } from './lifecycle.js';
import { startReflector, type Reflector, type ReflectorOptions } from './reflector.js';

/** Undelivered states kept for a slow reader. */
const CAPACITY = 4;

export interface ReflectedStreamOptions {
  ctx: ConnectorContext;
  /** The recipe's name in ClosedError (e.g. `'service tracker'`). */
  name: string;
  /** The recipe's own teardown before the reflector stops (e.g. its timers). */
  beforeStop?: () => void;
  /** The recipe's own work to wait for once the reflector is done, before the stream ends. */
  afterReflector?: () => Promise<void> | undefined;
}

export class ReflectedStream<T extends { readonly error?: Error }> {
  readonly life: Lifecycle;
  private queue: StreamQueue<T> | undefined;
  private reflector: Reflector | undefined;

  constructor({ ctx, name, beforeStop, afterReflector }: ReflectedStreamOptions) {
    this.life = new Lifecycle(ctx, name, async () => {
      beforeStop?.();
      this.reflector?.stop();
      await this.reflector?.done;
      await afterReflector?.();
      this.queue?.end();
    });
  }

  /**
   * Begins the lifecycle and opens the stream, then starts the reflector (unless already
   * stopping) with the listener `listen` makes for this stream.
   *
   * @throws InvalidStateError called twice; ClosedError after `stop()` or the connector's close
   */
  open(
    options: StartOptions,
    reflector: Omit<ReflectorOptions, 'listener'>,
    listen: (queue: StreamQueue<T>) => ReflectorOptions['listener'],
  ): RecipeStream<T> {
    this.life.begin(options);
    const queue = new StreamQueue<T>({
      capacity: CAPACITY,
      overflow: 'coalesce',
      keep: (s) => s.error !== undefined,
      onReturn: () => void this.stop(),
    });
    this.queue = queue;
    if (this.life.isStopping) {
      queue.end();
      return queue;
    }
    this.reflector = startReflector({ ...reflector, listener: listen(queue) });
    return queue;
  }

  /** Delivers a state (dropped before `open()` and after the end). */
  push(state: T): void {
    this.queue?.push(state);
  }

  /** Ends the stream after what it holds (the recipe stops itself separately). */
  end(): void {
    this.queue?.end();
  }

  /** Stops following etcd now, keeping the stream open (a one-shot read is complete). */
  stopReflector(): void {
    this.reflector?.stop();
  }

  /** Ends the stream; resolves when no watch, call or timer of it is left. Idempotent. */
  stop(): Promise<void> {
    return this.life.stop();
  }
}
