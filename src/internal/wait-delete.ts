/**
 * Pieces the election-style recipes share (Go's `concurrency/key.go` in spirit): range requests
 * that find the first key and a key's predecessor by create revision, and a latch a recipe's loop
 * sleeps on until something worth a re-check happened.
 */
import { Range, type IKeyValue, type IRangeRequest, type IRequestOp } from 'etcd3';

/** The `[key, range_end)` of every key that starts with `prefix`. */
export function prefixRange(prefix: string): { key: Buffer; range_end: Buffer } {
  const range = Range.prefix(prefix);
  return { key: range.start, range_end: range.end };
}

/** The oldest key under `prefix` by create revision: the election's leader (Go's WithFirstCreate). */
export function firstCreated(prefix: string): IRangeRequest {
  return { ...prefixRange(prefix), sort_target: 'Create', sort_order: 'Ascend', limit: 1 };
}

/**
 * The newest key under `prefix` created at or before `maxCreateRevision`: the one a waiter with
 * create revision `maxCreateRevision + 1` waits for (Go's waitDeletes, one predecessor only).
 */
export function lastCreatedUpTo(prefix: string, maxCreateRevision: bigint): IRangeRequest {
  return {
    ...prefixRange(prefix),
    sort_target: 'Create',
    sort_order: 'Descend',
    max_create_revision: maxCreateRevision.toString(),
    limit: 1,
  };
}

/** Wraps a range request for a transaction. */
export function rangeOp(request: IRangeRequest): IRequestOp {
  return { request_range: request };
}

/** The single key-value of the `index`-th range response of a transaction, if any. */
export function kvAt(
  responses: readonly { response_range?: { kvs: IKeyValue[] } }[],
  index: number,
): IKeyValue | undefined {
  return responses[index]?.response_range?.kvs[0];
}

/**
 * A resettable wake-up latch for one waiting loop. `fire()` before `wait()` is not lost: the loop
 * resets the latch at the top of an iteration, reads etcd, then waits; anything that happened
 * since the reset wakes it at once, so no change slips between a read and the wait.
 */
export class Latch {
  private fired = false;
  private resolve: (() => void) | undefined;

  fire(): void {
    this.fired = true;
    const r = this.resolve;
    this.resolve = undefined;
    r?.();
  }

  reset(): void {
    this.fired = false;
  }

  wait(): Promise<void> {
    if (this.fired) return Promise.resolve();
    return new Promise((resolve) => {
      this.resolve = resolve;
    });
  }
}
