/**
 * What a watch is to the code that uses one: what to watch, whom it tells, and the handle it
 * returns. Engines and recipes depend on this contract; only the connector knows the multiplexer
 * behind it (watch-mux.ts), which serves every watch of a connector on one gRPC stream.
 */
import { Range } from 'etcd3';
import type { EtcdConnectorError } from '../errors.js';
import type { WatchEvent } from './resume-point.js';

export type { WatchEvent } from './resume-point.js';

/** What to watch and from where. */
export interface WatchTarget {
  /** The key, or the start of the range. */
  key: string | Buffer;
  /** End of the range (exclusive); omitted: the single key. */
  rangeEnd?: Buffer;
  /**
   * First revision to deliver (>= 1), or 0 for "from now": the first revision after the one etcd
   * is at when it creates the watch (reported by `onCreated`). A watch from a revision etcd has
   * already passed is served by etcd 3.4's catch-up loop, every 100 ms; one from now is served at
   * once (docs/faults.md), so a waiter that must hear a change promptly watches from now and
   * re-reads when `onCreated` says revisions passed since its read.
   */
  startRevision: number;
  /**
   * Deletions only: etcd filters out puts before sending (its NOPUT filter), for a watch that
   * waits for a key to go (our own key while we hold it) and would otherwise get every write too.
   */
  deletesOnly?: boolean;
}

/** Whom a watch tells. Callbacks run synchronously on the stream's data; they must not throw. */
export interface WatchListener {
  /** Events in revision order, never repeated, never skipped; one revision's events together. */
  onEvents(events: readonly WatchEvent[]): void;
  /** History before the resume point is gone; the watch has ended. Re-list and watch anew. */
  onCompacted(compactRevision: number): void;
  /**
   * The watch has ended for good: etcd refused it (permission denied, bad range), a final
   * connection error (authentication, TLS), or the multiplexer closed (ClosedError).
   */
  onEnded(error: EtcdConnectorError): void;
  /**
   * The connection is in trouble (`unavailable`, with the retryable reason, when no stream could
   * be established within the dial timeout) or back (`connected`, only after an `unavailable`).
   * The watch keeps retrying meanwhile.
   */
  onStatus?(status: WatchStatus): void;
  /** Everything up to `revision` was delivered (etcd's periodic progress notification). */
  onProgress?(revision: number): void;
  /**
   * etcd created the watch (again, after a reconnect) while at `revision`. For a watch from now,
   * it delivers every change after `revision`, and nothing before.
   */
  onCreated?(revision: number): void;
}

export type WatchStatus =
  | { readonly state: 'connected' }
  | { readonly state: 'unavailable'; readonly error: EtcdConnectorError };

/** A running watch. */
export interface MuxWatch {
  /** The revision the watch continues from: last delivered event's revision + 1. */
  readonly nextRevision: number;
  /** Stops delivery (the watch is cancelled at etcd until `resume()`); nothing is lost. */
  pause(): void;
  resume(): void;
  /** Ends the watch; no callback runs afterwards. Idempotent. */
  close(): void;
}

/** `[key, rangeEnd)` of every key that starts with `prefix`. */
export function prefixTarget(prefix: string): { key: Buffer; rangeEnd: Buffer } {
  const range = Range.prefix(prefix);
  return { key: range.start, rangeEnd: range.end };
}
