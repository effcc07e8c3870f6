/**
 * A priority queue in Go's `contrib/recipes.PriorityQueue` layout, so Go producers and consumers
 * share it with ours:
 *
 * - an item is `path/<%05d priority>/<%016d sequence>` = the value, no lease; the lowest priority
 *   number comes first (0 is the most urgent), then the lowest sequence — the lexical key order;
 * - each enqueue also writes the marker `__path/<%05d priority>` = `''` (no lease, never deleted)
 *   and takes its sequence number as the last key's plus one, in one transaction guarded by
 *   `ModRevision(marker) < read revision + 1` (Go's newSequentialKV): two producers that read the
 *   same last key cannot both write the next one.
 *
 * Go quirks reproduced because interop needs them: the marker lies *outside* the path (and outside
 * our namespace: with etcd auth, a role needs write access to `__<path>/` too), and a drained
 * priority starts its sequence at 0 again. Ours also checks that the new key does not exist.
 *
 * Taking items is the queue's (engines/claim-queue.ts): claim by delete, exactly one consumer per
 * item, receipts for lost answers, no herd. Under contention, consumers that lost a race pick at
 * random among the first few items *of the same priority*, so a higher-priority item is never
 * passed over for a lower one.
 */
import { CompareResult, CompareTarget } from 'etcd3';
import { InvalidArgumentError, ValueFormatError } from '../errors.js';
import { persist, RecipeLife, type CallOptions } from '../engines/call-scope.js';
import type { ClaimedItem } from '../engines/claim-queue.js';
import type { ConnectorContext } from '../engines/context.js';
import { checkSessionOptions, type SessionOptions } from '../engines/held-session.js';
import { absent, putOp } from '../engines/keys.js';
import { acquireQueueCore, type QueueCore } from '../engines/queue-core.js';
import { guardedTxn } from '../engines/receipts.js';
import { prefixRange, rangeOp } from '../engines/wait-deletes.js';
import { validatePath, validateValue } from '../paths.js';

/** Options of `conn.newPriorityQueue(path, options)`. */
export type PriorityQueueOptions = SessionOptions;

/** Go's priorities are `uint16`. */
const MAX_PRIORITY = 65535;

/**
 * A priority queue on `path`, made by `conn.newPriorityQueue(path)`.
 *
 * ```ts
 * await pq.enqueue('page the on-call', 0);  // 0 comes first
 * await pq.enqueue('rebuild index', 100);
 * const next = await pq.dequeue({ signal });
 * ```
 */
export class PriorityQueue implements AsyncDisposable {
  /** The items' prefix, `path/`. */
  readonly prefix: string;

  private readonly life: RecipeLife;
  private readonly core: QueueCore;

  /** @internal Use `conn.newPriorityQueue(path, options)`. */
  constructor(
    private readonly ctx: ConnectorContext,
    readonly path: string,
    options?: PriorityQueueOptions,
  ) {
    validatePath(path, ctx.root);
    if (path === ctx.root) {
      throw new InvalidArgumentError('path', 'a queue cannot be the namespace root itself');
    }
    const { ttl, bound } = checkSessionOptions(options);
    this.prefix = path + '/';
    const what = `priority queue ${path}`;
    const { core, release } = acquireQueueCore(
      ctx,
      what,
      path,
      'pqueue',
      {
        prefix: this.prefix,
        order: 'Key',
        // The priority level: `path/00005`.
        group: (key) => key.slice(0, this.prefix.length + 5),
      },
      ttl,
      bound,
    );
    this.core = core;
    this.life = new RecipeLife(ctx, what, release);
  }

  /**
   * Adds `value` at `priority` (an integer 0..65535; lower comes first). Resolves with the key.
   * Retries conflicts with other producers, and etcd's transient failures up to the call
   * deadline; a lost answer is resolved through the receipt (never enqueued twice).
   *
   * @throws InvalidArgumentError bad value or priority (before any I/O)
   * @throws ValueFormatError a key under the priority is not Go's `<%016d>` sequence
   * @throws OutcomeUnknownError whether it was enqueued could not be told
   */
  async enqueue(value: string, priority: number, options?: CallOptions): Promise<string> {
    if (
      typeof priority !== 'number' ||
      !Number.isInteger(priority) ||
      priority < 0 ||
      priority > MAX_PRIORITY
    ) {
      throw new InvalidArgumentError(
        'priority',
        `must be an integer from 0 to ${MAX_PRIORITY}, got ${String(priority)}`,
      );
    }
    const level = `${this.prefix}${String(priority).padStart(5, '0')}`;
    validateValue(`${level}/${'9'.repeat(16)}`, value, this.ctx.maxRequestBytes);
    const scope = this.life.scope(options);
    // Go's bookkeeping key: `"__" + prefix`.
    const marker = `__${level}`;
    return persist(
      this.ctx,
      scope,
      `enqueue on ${this.path}`,
      async () => {
        for (;;) {
          // Go's WithLastKey on the prefix `path/<prio>` (no slash): the highest sequence.
          const last = await this.ctx.client.kv.range(
            {
              ...prefixRange(level),
              sort_target: 'Key',
              sort_order: 'Descend',
              limit: 1,
              keys_only: true,
            },
            this.ctx.callOptions(),
          );
          const key = `${level}/${String(nextSequence(last.kvs[0]?.key.toString())).padStart(16, '0')}`;
          const outcome = await guardedTxn(
            this.ctx,
            this.core.book,
            scope.signal,
            `enqueue ${key}`,
            key,
            {
              compare: [
                // Go's guard: nobody enqueued at this priority since our read.
                {
                  key: Buffer.from(marker),
                  target: CompareTarget.Mod,
                  result: CompareResult.Less,
                  mod_revision: (BigInt(last.header.revision) + 1n).toString(),
                },
                // Ours too: the sequence key is new.
                absent(key),
              ],
              // Go writes the marker and the item together.
              success: [putOp(marker, ''), putOp(key, value)],
              failure: [rangeOp({ key: Buffer.from(key), keys_only: true })],
            },
          );
          if (outcome.kind !== 'failed') return key;
          // Another producer was first: read the last key again (Go recurses the same way).
        }
      },
      this.ctx.callTimeoutMs,
    );
  }

  /**
   * Takes the most urgent item (lowest priority number, then oldest) and returns its value; waits
   * while the queue is empty, and through etcd outages, until `signal` fires. Same guarantees as
   * `Queue.dequeue` (exactly one consumer per item; an abort never drops a claimed item).
   */
  async dequeue(options?: CallOptions): Promise<string> {
    return (await this.dequeueItem(options)).value;
  }

  /** Like {@link dequeue}, with the item's key and the claim's revision. */
  async dequeueItem(options?: CallOptions): Promise<ClaimedItem> {
    const scope = this.life.scope(options);
    return this.core.claims.dequeue(scope);
  }

  /** Ends this object's waiting dequeues (ClosedError). Idempotent. */
  close(): Promise<void> {
    return this.life.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Go's `newSeqNum`: the last key's last `/` segment read with `%d`, plus one; 0 when none. */
function nextSequence(lastKey: string | undefined): number {
  if (lastKey === undefined) return 0;
  const field = lastKey.slice(lastKey.lastIndexOf('/') + 1);
  if (!/^\d+$/.test(field) || !Number.isSafeInteger(Number(field))) {
    throw new ValueFormatError(lastKey, 'not a priority queue item (expected <%016d> sequence)');
  }
  return Number(field) + 1;
}
