/**
 * A FIFO queue shared by any number of producers and consumers, in Go's `contrib/recipes.Queue`
 * layout so Go producers and consumers use the same queue:
 *
 * - an item is the key `path/<UnixNano>` = the value, **no lease**, created only if absent;
 * - the order is the items' **mod revision** (the enqueue's revision), not the key;
 * - a consumer takes an item by deleting it with `If(ModRevision(item) = seen)` — whoever deletes
 *   it owns it, so each item goes to exactly one consumer.
 *
 * Beyond Go: our writes carry receipts (a lost answer is resolved, never retried blindly: no item
 * is enqueued twice or claimed and dropped), and waiting consumers do not herd (see
 * engines/claim-queue.ts). Our bookkeeping keys lie beside the queue, in `<parent>/__<name>.queue/`
 * (`line/<leaseHex>` while a consumer process waits, `receipts/<leaseHex>.<n>`), under the
 * session's lease: never under `path`, which Go's consumers read as a prefix.
 *
 * Go quirk not copied: Go's Dequeue reads the prefix `path` *without* a slash, so a Go consumer
 * of `jobs` also takes items of `jobs2/...`. Ours reads `path/` only. A queue's path must not be
 * a prefix of another queue's path (Go's consumer of the outer one would take the inner one's
 * items).
 */
import { InvalidArgumentError } from '../errors.js';
import { persist, RecipeLife, type CallOptions } from '../engines/call-scope.js';
import type { ClaimedItem } from '../engines/claim-queue.js';
import type { ConnectorContext } from '../engines/context.js';
import { checkSessionOptions, type SessionOptions } from '../engines/held-session.js';
import { absent, putOp, uniqueKey } from '../engines/keys.js';
import { acquireQueueCore, type QueueCore } from '../engines/queue-core.js';
import { guardedTxn } from '../engines/receipts.js';
import { rangeOp } from '../engines/wait-deletes.js';
import { validatePath, validateValue } from '../paths.js';

/** Options of `conn.newQueue(path, options)`: the session of the receipts and the line. */
export type QueueOptions = SessionOptions;

export type { ClaimedItem as QueueItem } from '../engines/claim-queue.js';

/** The longest item key: `path/` + 19 digits of UnixNano (Go's int64 nanoseconds). */
const KEY_SUFFIX = '/' + '9'.repeat(19);

/**
 * A queue on `path`, made by `conn.newQueue(path)`. No I/O before the first call.
 *
 * ```ts
 * await queue.enqueue('job-1');
 * const job = await queue.dequeue({ signal }); // waits while the queue is empty
 * ```
 */
export class Queue implements AsyncDisposable {
  /** The items' prefix, `path/`. */
  readonly prefix: string;

  private readonly life: RecipeLife;
  private readonly core: QueueCore;

  /** @internal Use `conn.newQueue(path, options)`. */
  constructor(
    private readonly ctx: ConnectorContext,
    readonly path: string,
    options?: QueueOptions,
  ) {
    validatePath(path, ctx.root);
    if (path === ctx.root) {
      // Go's consumers read `path` as a prefix: at the root they would take every key.
      throw new InvalidArgumentError('path', 'a queue cannot be the namespace root itself');
    }
    const { ttl, bound } = checkSessionOptions(options);
    this.prefix = path + '/';
    const what = `queue ${path}`;
    const { core, release } = acquireQueueCore(
      ctx,
      what,
      path,
      'queue',
      { prefix: this.prefix, order: 'Mod' },
      ttl,
      bound,
    );
    this.core = core;
    this.life = new RecipeLife(ctx, what, release);
  }

  /**
   * Appends `value`: a new key `path/<UnixNano>` (created only if absent, no lease). Resolves with
   * the key once it is in etcd. Retries etcd's transient failures up to the call deadline; an
   * answer lost on the way is resolved through the receipt, so the item is never put twice.
   *
   * @throws InvalidArgumentError value not a string or too large (before any I/O)
   * @throws OutcomeUnknownError whether it was enqueued could not be told (see the error's key)
   */
  async enqueue(value: string, options?: CallOptions): Promise<string> {
    validateValue(this.path + KEY_SUFFIX, value, this.ctx.maxRequestBytes);
    const scope = this.life.scope(options);
    return persist(
      this.ctx,
      scope,
      `enqueue on ${this.path}`,
      async () => {
        for (;;) {
          const key = uniqueKey(this.path);
          const outcome = await guardedTxn(
            this.ctx,
            this.core.book,
            scope.signal,
            `enqueue ${key}`,
            key,
            {
              // Go's newUniqueKV: a new key only (another process may have the same nanos).
              compare: [absent(key)],
              success: [putOp(key, value)],
              failure: [rangeOp({ key: Buffer.from(key), keys_only: true })],
            },
          );
          if (outcome.kind !== 'failed') return key;
          // Taken by someone else in the same nanosecond: a new key, as Go does.
        }
      },
      this.ctx.callTimeoutMs,
    );
  }

  /**
   * Takes the oldest item (by enqueue revision) and returns its value; waits while the queue is
   * empty, and through etcd outages, until `signal` fires. An item is given to exactly one
   * consumer. A dequeue aborted while its claim is in flight waits for the claim's answer: if
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
   * no Queue of this connector uses the queue, leaves the line and releases the session.
   * Idempotent.
   */
  close(): Promise<void> {
    return this.life.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
