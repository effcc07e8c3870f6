/**
 * Whose is a key that should be ours? The pure judgement behind self-healing ephemeral keys,
 * kept apart from I/O so it can be tested by itself.
 *
 * The rule (the one every write of an ephemeral key applies in its transaction): a key that is
 * absent, has no lease, or is under our own live lease is ours to write; a key under another live
 * lease is never overwritten. Two processes configured with the same key therefore never flap
 * it: the holder keeps it, the other waits until the holder's key is gone.
 */
import type { KeyChange } from '../errors.js';
import type { WatchEvent } from '../transport/watch-mux.js';

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
