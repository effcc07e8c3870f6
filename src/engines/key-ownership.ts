/**
 * Whose is a key that should be ours? The pure judgement behind self-healing ephemeral keys,
 * kept apart from I/O so it can be tested by itself.
 *
 * The rule (the one every write of an ephemeral key applies in its transaction): a key that is
 * absent, has no lease, or is under our own live lease is ours to write; a key under another live
 * lease is never overwritten. Two processes configured with the same key therefore never flap
 * it: the holder keeps it, the other waits until the holder's key is gone. `claimTxn` is that
 * transaction.
 */
import {
  CompareResult,
  CompareTarget,
  type ICompare,
  type IRequestOp,
  type ITxnRequest,
  type ITxnResponse,
} from 'etcd3';
import type { KeyChange } from '../errors.js';
import type { WatchEvent } from '../transport/watch-types.js';

/** The key at one revision, as a watch event (or a read) shows it. */
export interface KeyView {
  /** False: the key does not exist. */
  readonly present: boolean;
  /** Lease id as etcd's decimal string; `'0'` for none (and for an absent key). */
  readonly lease: string;
  readonly value: string;
  /** The revision of this state: the key's mod revision, or the revision of its deletion. */
  readonly revision: number;
}

/** What "ours" means right now. */
export interface Ownership {
  /** The live lease our key is written under (decimal); `undefined` while we have none. */
  readonly current: string | undefined;
  /** The value the key must have. */
  readonly value: string;
  /**
   * Values written under `current` whose answer never came (timed out): etcd may still have
   * applied them, so seeing one later is not someone else's doing.
   */
  readonly unconfirmed: readonly string[];
}

/** No key at revision 0: the state before anything was seen. */
export const ABSENT: KeyView = { present: false, lease: '0', value: '', revision: 0 };

export function viewOf(e: WatchEvent): KeyView {
  return e.type === 'delete'
    ? { present: false, lease: '0', value: '', revision: e.revision }
    : { present: true, lease: e.lease, value: e.value, revision: e.revision };
}

/** The key is exactly as we want it: under our live lease, with our value. */
export function isDesired(view: KeyView, own: Ownership): boolean {
  return (
    view.present &&
    own.current !== undefined &&
    view.lease === own.current &&
    view.value === own.value
  );
}

/** Under the rule, may we write over `view`? (Absent, no lease, or our live lease.) */
export function mayTake(view: KeyView, own: Ownership): boolean {
  return !view.present || view.lease === '0' || view.lease === own.current;
}

/**
 * What someone else did to our key, seeing `next` right after `prior` (`next` is not one of our
 * writes whose revision we know). `undefined` when nothing of ours changed: the key was not ours
 * before (another owner's key went, or was rewritten by that owner), it was under a lease we
 * already lost (that loss is reported as SessionLostError), or `next` is what we want anyway
 * (e.g. a write of ours whose answer never came).
 */
export function foreignChange(
  prior: KeyView,
  next: KeyView,
  own: Ownership,
): KeyChange | undefined {
  if (isDesired(next, own)) return undefined;
  if (next.present && next.lease === own.current && own.unconfirmed.includes(next.value)) {
    return undefined;
  }
  if (!prior.present || own.current === undefined || prior.lease !== own.current) {
    return undefined;
  }
  if (!next.present) return 'deleted';
  if (next.lease !== prior.lease) return 'lease';
  return 'value';
}

/**
 * The one transaction that applies the rule: puts `value` under `leaseId` when the key is under
 * that lease (a repeat, an update, a repair of the value) or under none (absent: etcd compares a
 * missing key as lease 0, or written without a lease). Under another lease, which is live (etcd
 * deletes a key when its lease ends), it is never overwritten: it is read, to name the holder.
 */
export function claimTxn(key: Buffer, value: string, leaseId: string): ITxnRequest {
  const put: IRequestOp = { request_put: { key, value: Buffer.from(value), lease: leaseId } };
  return {
    compare: [leaseIs(key, leaseId)],
    success: [put],
    failure: [
      {
        request_txn: {
          compare: [leaseIs(key, '0')],
          success: [put],
          failure: [{ request_range: { key } }],
        },
      },
    ],
  };
}

/**
 * What `claimTxn` did: `{ written: true }`, or the lease (decimal) of the live key that stopped
 * it, as its read found it.
 */
export function claimOutcome(
  res: ITxnResponse,
): { written: true } | { written: false; holder: string | undefined } {
  const nested = res.responses[0]?.response_txn;
  if (res.succeeded || nested?.succeeded === true) return { written: true };
  return { written: false, holder: nested?.responses[0]?.response_range.kvs[0]?.lease };
}

/** Deletes the key only while it is under `leaseId`: never someone else's key. */
export function deleteIfUnderTxn(key: Buffer, leaseId: string): ITxnRequest {
  return { compare: [leaseIs(key, leaseId)], success: [{ request_delete_range: { key } }] };
}

/** Compare: the key is under lease `leaseId` (an absent key has lease 0). */
function leaseIs(key: Buffer, leaseId: string): ICompare {
  return { key, target: CompareTarget.Lease, result: CompareResult.Equal, lease: leaseId };
}
