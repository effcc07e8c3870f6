/**
 * What a Queue and a PriorityQueue object are besides their key form: a reference to the queue's
 * shared core (engines/queue-core.ts), the object's own calls, the enqueue loop (a new key only,
 * with a receipt) and dequeue (engines/claim-queue.ts). A recipe adds how it makes an item's key
 * and, for priorities, what else one enqueue checks and writes.
 */
import type { ICompare, IRequestOp } from 'etcd3';
import { InvalidArgumentError } from '../errors.js';
import { validatePath } from '../paths.js';
import { persist, RecipeLife, type CallOptions } from './call-scope.js';
import type { ItemLayout } from './claim-candidates.js';
import type { ClaimedItem } from './claim-queue.js';
import type { ConnectorContext } from './context.js';
import { checkSessionOptions, type SessionOptions } from './held-session.js';
import { absent, putOp } from './keys.js';
import { acquireQueueCore, type QueueCore } from './queue-core.js';
import { guardedTxn } from './receipts.js';
import { rangeOp } from './ranges.js';

/** How a recipe's queue lies: its bookkeeping kind, its name in errors, its items' order. */
export interface QueueShape extends Omit<ItemLayout, 'prefix'> {
  /** `queue`, `pqueue`: the bookkeeping dir is `<parent>/__<name>.<kind>`. */
  readonly kind: string;
  /** Names the queue in errors, e.g. `queue /ns/jobs`. */
  readonly what: string;
}

/** The key of an item to enqueue, and what else its transaction checks and writes. */
export interface NewItem {
  readonly key: string;
  /** Compared before the key's absence (PriorityQueue: Go's marker guard). */
  readonly guards?: readonly ICompare[];
  /** Written before the item, in the same transaction (PriorityQueue: Go's marker). */
  readonly puts?: readonly IRequestOp[];
}

/** Releases the core reference of a handle collected without `close()`. */
const released = new FinalizationRegistry<() => Promise<void>>((release) => {
  void release();
});

export abstract class QueueHandle implements AsyncDisposable {
  /** The items' prefix, `path/`. */
  readonly prefix: string;

  private readonly life: RecipeLife;
  private readonly core: QueueCore;

  protected constructor(
    protected readonly ctx: ConnectorContext,
    readonly path: string,
    options: SessionOptions | undefined,
    { kind, what, ...order }: QueueShape,
  ) {
    validatePath(path, ctx.root);
    if (path === ctx.root) {
      // Go's consumers read `path` as a prefix: at the root they would take every key.
      throw new InvalidArgumentError('path', 'a queue cannot be the namespace root itself');
    }
    const { ttl, bound } = checkSessionOptions(options);
    this.prefix = path + '/';
    const items = { prefix: this.prefix, ...order };
    const { core, release } = acquireQueueCore({ ctx, what, path, kind, items, ttl, bound });
    this.core = core;
    this.life = new RecipeLife(ctx, what, release);
    // Dropped without close(): our reference to the shared core goes when we are collected
    // (a second release after close() is a no-op).
    released.register(this, release);
  }

  /**
   * Takes the next item — the oldest (by enqueue revision) of a Queue, the most urgent (lowest
   * priority number, then oldest) of a PriorityQueue — and returns its value; waits while the
   * queue is empty, and through etcd outages, until `signal` fires. An item is given to exactly
   * one consumer. A dequeue aborted while its claim is in flight waits for the claim's answer: if
   * the item was taken it is returned (never dropped), else it rejects with AbortError.
   *
   * @throws AbortError / ClosedError
   * @throws OutcomeUnknownError a claim's answer was lost and could not be resolved (its key
   *   names the item that may have been taken)
   */
  async dequeue(options?: CallOptions): Promise<string> {
    return (await this.dequeueItem(options)).value;
  }

  /** Like {@link dequeue}, with the item's key and the claim's revision. */
  async dequeueItem(options?: CallOptions): Promise<ClaimedItem> {
    const scope = this.life.scope(options);
    return this.core.claims.dequeue(scope);
  }

  /**
   * Ends this object's waiting dequeues (ClosedError; a claim in flight still delivers) and, once
   * no object of this connector uses the queue, leaves the line and releases the session.
   * Idempotent.
   */
  close(): Promise<void> {
    return this.life.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * Puts `value` under the key `next()` makes, created only if absent, with a receipt: a lost
   * answer is resolved, never enqueued twice. A key someone else took first (the same nanosecond,
   * the same sequence) makes `next()` try again, as Go does. Retries etcd's transient failures up
   * to the call deadline. Resolves with the key.
   */
  protected enqueueNew(
    value: string,
    options: CallOptions | undefined,
    next: () => NewItem | Promise<NewItem>,
  ): Promise<string> {
    const scope = this.life.scope(options);
    return persist(
      this.ctx,
      scope,
      `enqueue on ${this.path}`,
      async () => {
        for (;;) {
          const { key, guards = [], puts = [] } = await next();
          const outcome = await guardedTxn(
            this.ctx,
            this.core.book,
            scope.signal,
            `enqueue ${key}`,
            key,
            {
              // Go's newUniqueKV and newSequentialKV: a new key only.
              compare: [...guards, absent(key)],
              success: [...puts, putOp(key, value)],
              failure: [rangeOp({ key: Buffer.from(key), keys_only: true })],
            },
          );
          if (outcome.kind !== 'failed') return key;
        }
      },
      this.ctx.callTimeoutMs,
    );
  }
}
