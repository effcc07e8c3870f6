/**
 * The items a queue's consumer may claim next, in claiming order, and which one to try: the
 * first, or after lost races one of the first few at random, so consumers racing for the head
 * spread out instead of colliding again. Pure (no I/O): the claim loop (claim-queue.ts) feeds it
 * reads and watch events and tells it how each claim went.
 */
import type { IKeyValue } from 'etcd3';
import type { WatchEvent } from '../transport/watch-types.js';

/** How the items of a queue lie and in which order they are taken. */
export interface ItemLayout {
  /** The items' prefix (`path/`). */
  readonly prefix: string;
  /** Oldest first (`Mod`, Go's Queue) or lowest key first (`Key`, Go's PriorityQueue). */
  readonly order: 'Mod' | 'Key';
  /** Items that may be taken in any order among themselves (a priority level); none: all. */
  readonly group?: (key: string) => string;
}

/** An item as a read or a watch showed it: claimed only while it still has this mod revision. */
export interface Candidate {
  readonly key: string;
  readonly modRevision: string;
}

/**
 * After a lost race, claim at random among the first 4 candidates (of the head's group), 8 after
 * two, up to 16. Back to the head only after {@link CALM} claims in a row landed: without
 * contention, strict order.
 */
const SPREAD_STEPS = 3;
const CALM = 8;

export class ClaimCandidates {
  private list: Candidate[] = [];
  /** Lost races since the last calm stretch. */
  private losses = 0;
  /** Claims that landed since the last lost race. */
  private calm = 0;

  constructor(private readonly layout: Pick<ItemLayout, 'order' | 'group'>) {}

  get length(): number {
    return this.list.length;
  }

  /** Replaces the candidates with what a read found (sorted in claiming order by etcd). */
  set(kvs: readonly IKeyValue[]): void {
    this.list = kvs.map((kv) => ({ key: kv.key.toString(), modRevision: kv.mod_revision }));
  }

  /** Forgets them: the next step reads again. */
  clear(): void {
    this.list = [];
  }

  /** Applies the queue's events (puts join, deletes leave), keeping claiming order. */
  apply(events: readonly WatchEvent[]): void {
    for (const e of events) {
      this.list = this.list.filter((c) => c.key !== e.key);
      if (e.type === 'put') this.list.push({ key: e.key, modRevision: String(e.revision) });
    }
    if (this.layout.order === 'Key') {
      this.list.sort((a, b) => Buffer.compare(Buffer.from(a.key), Buffer.from(b.key)));
    } else {
      this.list.sort((a, b) => Number(BigInt(a.modRevision) - BigInt(b.modRevision)));
    }
  }

  /** The candidate to claim: the first, or after lost races one of the first few at random. */
  pick(random: () => number = Math.random): Candidate {
    const head = this.list[0];
    if (head === undefined) throw new Error('pick() without candidates');
    if (this.losses === 0) return head;
    const group = this.layout.group;
    const same = this.list
      .slice(0, 2 << Math.min(this.losses, SPREAD_STEPS))
      .filter((c) => group === undefined || group(c.key) === group(head.key));
    return same[Math.floor(random() * same.length)] ?? head;
  }

  /** A claim landed. */
  won(): void {
    if (++this.calm >= CALM) this.losses = 0;
  }

  /** A claim lost the race: someone else took the item first. */
  lost(): void {
    this.losses += 1;
    this.calm = 0;
  }
}
