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
import type { CallOptions } from '../engines/call-scope.js';
import type { ConnectorContext } from '../engines/context.js';
import type { SessionOptions } from '../engines/held-session.js';
import { putOp } from '../engines/keys.js';
import { QueueHandle, type NewItem } from '../engines/queue-handle.js';
import { prefixRange } from '../engines/ranges.js';
import { validateValue } from '../paths.js';

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
export class PriorityQueue extends QueueHandle {
  /** @internal Use `conn.newPriorityQueue(path, options)`. */
  constructor(ctx: ConnectorContext, path: string, options?: PriorityQueueOptions) {
    super(ctx, path, options, {
      kind: 'pqueue',
      what: `priority queue ${path}`,
      order: 'Key',
      // The priority level: `path/00005`.
      group: (key) => key.slice(0, path.length + 1 + 5),
    });
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
    // Another producer was first: read the last key again (Go recurses the same way).
    return this.enqueueNew(value, options, () => this.nextItem(level));
  }

  /** Go's newSequentialKV: the key after the level's last, guarded by the level's marker. */
  private async nextItem(level: string): Promise<NewItem> {
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
    // Go's bookkeeping key: `"__" + prefix`.
    const marker = `__${level}`;
    return {
      key,
      // Go's guard: nobody enqueued at this priority since our read. (Ours too: the key is new.)
      guards: [
        {
          key: Buffer.from(marker),
          target: CompareTarget.Mod,
          result: CompareResult.Less,
          mod_revision: (BigInt(last.header.revision) + 1n).toString(),
        },
      ],
      // Go writes the marker and the item together.
      puts: [putOp(marker, '')],
    };
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
