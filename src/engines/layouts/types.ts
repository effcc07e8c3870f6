/**
 * What the layout decoders read and what they find: key-values in, recipes out. Pure data, so
 * the decoders are tested without etcd and their output is JSON as it is.
 */

/** When a key was created, as far as anyone can tell: etcd keeps no clock on keys. */
export interface Since {
  /** Milliseconds since the epoch. */
  readonly time: number;
  /**
   * `key`: the layout stores the writer's clock in the key (Go's `<UnixNano>` keys); `watch`: the
   * create event was seen as it happened; `listing`: the key was already there at this time (so it
   * is at least this old).
   */
  readonly source: 'key' | 'watch' | 'listing';
}

/** One key-value as the decoders see it. */
export interface KeyEntry {
  readonly key: string;
  readonly value: string;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly version: number;
  /** The lease in hex as Go writes it into keys (`%x`, no padding); absent without a lease. */
  readonly lease?: string;
  readonly since?: Since;
}

/** A recipe's kind. The built-in decoders find these; a decoder added later brings its own name. */
export type RecipeKind =
  | 'election'
  | 'lock'
  | 'rwmutex'
  | 'semaphore'
  | 'double-barrier'
  | 'barrier'
  | 'queue'
  | 'priority-queue'
  | 'services'
  | 'endpoints'
  | 'bookkeeping'
  | 'unknown'
  | (string & {});

/**
 * One participant or item of a recipe, in the recipe's order. Roles by kind: election `leader`,
 * `candidate`; lock `holder`, `waiter`; rwmutex `reader`, `writer` (holding), `waiting-reader`,
 * `waiting-writer`; semaphore `in line #n` (the first `permits` hold); double-barrier `waiter`, `ready`; barrier `held`; queue and priority-queue
 * `item` (and priority-queue `marker`); services `instance`; endpoints `endpoint`; bookkeeping and unknown `key`.
 */
export interface EntryView extends KeyEntry {
  readonly role: string;
  /**
   * What to call it: the identity (election), the lease (lock), the instance, the address, the
   * item, or the key below the recipe's path.
   */
  readonly name: string;
}

/** One recipe found under a path. */
export interface RecipeView {
  readonly kind: RecipeKind;
  /** The recipe's path: what one hands to the recipe's constructor (Go's `path`). */
  readonly path: string;
  /** One line for people: `leader node-a, 2 candidates`, `held by 694d…, 1 waiting`. */
  readonly summary: string;
  readonly entries: readonly EntryView[];
}

/**
 * Finds one recipe layout. Decoders run in order over the keys no earlier decoder took; the
 * entries of the recipes a decoder returns are taken (so every key lands in exactly one recipe).
 */
export interface LayoutDecoder {
  /** What it finds, for people reading the list of decoders. */
  readonly name: string;
  decode(entries: readonly KeyEntry[]): RecipeView[];
}
