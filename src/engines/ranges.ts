/**
 * Range reads inside transactions, as the queues, locks and barriers make them: the range of a
 * prefix, its oldest or newest keys by create or mod revision (Go's WithFirstCreate, WithLastRev,
 * WithMaxModRev), and reading their answers back out of a transaction's responses.
 */
import { Range, type IKeyValue, type IRangeRequest, type IRequestOp } from 'etcd3';

/** The `[key, range_end)` of every key that starts with `prefix`. */
export function prefixRange(prefix: string): { key: Buffer; range_end: Buffer } {
  const range = Range.prefix(prefix);
  return { key: range.start, range_end: range.end };
}

/** The oldest keys under `prefix` by create revision (Go's WithFirstCreate): holders, leader. */
export function firstCreated(prefix: string, limit = 1): IRangeRequest {
  return firstBy(prefix, 'Create', limit);
}

/** What orders a queue: create revision (Go's Mutex, Election) or mod revision (Go's RWMutex). */
export type QueueOrder = 'Create' | 'Mod';

/** The oldest `limit` keys under `prefix` by `order`. */
export function firstBy(prefix: string, order: QueueOrder, limit: number): IRangeRequest {
  return { ...prefixRange(prefix), sort_target: order, sort_order: 'Ascend', limit };
}

/** The newest `limit` keys under `prefix` by `order`. */
export function lastBy(prefix: string, order: QueueOrder, limit: number): IRequestOp {
  return rangeOp({ ...prefixRange(prefix), sort_target: order, sort_order: 'Descend', limit });
}

/**
 * The newest `limit` keys under `prefix` whose `order` revision is at most `max` (Go's
 * waitDeletes with `Mod`: WithLastRev + WithMaxModRev, as its RWMutex's waitOnLastRev).
 */
export function lastByUpTo(
  prefix: string,
  order: QueueOrder,
  max: bigint,
  limit: number,
): IRangeRequest {
  const bound =
    order === 'Create'
      ? { max_create_revision: max.toString() }
      : { max_mod_revision: max.toString() };
  return { ...prefixRange(prefix), sort_target: order, sort_order: 'Descend', ...bound, limit };
}

/** Wraps a range request for a transaction. */
export function rangeOp(request: IRangeRequest): IRequestOp {
  return { request_range: request };
}

/** The key-values of the `index`-th range response of a transaction. */
export function kvsAt(
  responses: readonly { response_range?: { kvs: IKeyValue[] } }[],
  index: number,
): IKeyValue[] {
  return responses[index]?.response_range?.kvs ?? [];
}

/** The first key-value of the `index`-th range response of a transaction, if any. */
export function kvAt(
  responses: readonly { response_range?: { kvs: IKeyValue[] } }[],
  index: number,
): IKeyValue | undefined {
  return kvsAt(responses, index)[0];
}
