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
import type { CallOptions } from '../engines/call-scope.js';
import type { ConnectorContext } from '../engines/context.js';
import type { SessionOptions } from '../engines/held-session.js';
import { uniqueKey } from '../engines/keys.js';
import { QueueHandle } from '../engines/queue-handle.js';
import { validateValue } from '../paths.js';

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
export class Queue extends QueueHandle {
  /** @internal Use `conn.newQueue(path, options)`. */
  constructor(ctx: ConnectorContext, path: string, options?: QueueOptions) {
    super(ctx, path, options, { kind: 'queue', what: `queue ${path}`, order: 'Mod' });
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
    // A new key each try: someone else may have taken the same nanosecond (Go does the same).
    return this.enqueueNew(value, options, () => ({ key: uniqueKey(this.path) }));
  }
}
