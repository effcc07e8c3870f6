/**
 * What a recipe gets from its connector. Recipes depend on this, not on the connector class, so
 * the connector can import every recipe without a cycle.
 */
import type { Etcd3, IOptions } from 'etcd3';
import type { EtcdConnectorError } from '../errors.js';
import type { SessionPool } from '../session/session-pool.js';
import type { FailureMemory } from '../transport/rpc.js';
import type { TxnBatcher } from '../transport/txn-batch.js';
import type { WatchMux } from '../transport/watch-mux.js';

/** Anything the connector must end on `close()`. */
export interface Closable {
  /** Ends the object; must be idempotent and never reject. */
  close(): Promise<void>;
}

export interface ConnectorContext {
  readonly client: Etcd3;
  /** The namespace root, e.g. `/my_namespace`; every recipe path lies at or below it. */
  readonly root: string;
  /** The endpoints the connector was made with (`http://host:port`). */
  readonly endpoints: readonly string[];
  /** etcd3 options (auth, TLS, deadlines) to build more clients, e.g. one per member. */
  readonly clientOptions: Omit<IOptions, 'hosts'>;
  readonly sessions: SessionPool;
  /** The connector's one multiplexed watch stream. */
  readonly watches: WatchMux;
  /** Transactions of many recipes in one call under load (queue joins and reads). */
  readonly txns: TxnBatcher;
  readonly failures: FailureMemory;
  /** Deadline for one unary call, in ms. */
  readonly callTimeoutMs: number;
  /** How long a recipe may wait for etcd before it reports that it cannot reach it, in ms. */
  readonly dialTimeoutMs: number;
  readonly maxRequestBytes: number;
  /**
   * The connector is closing: every lease will be revoked, which removes every leased key at once;
   * recipes skip deleting their own keys one by one.
   */
  readonly closing: boolean;
  /** Throws ClosedError after `close()`. */
  assertOpen(): void;
  /** Registers an object to end on `close()`; returns the function that unregisters it. */
  track(closable: Closable): () => void;
  /** Unregisters what `track()` registered (for holders that keep no function per object). */
  untrack(closable: Closable): void;
  /** gRPC call options with the per-call deadline. */
  callOptions(): { deadline: Date };
  /** Maps any failure to our typed error, naming the real reason behind a circuit breaker. */
  toError(err: unknown, what: string): EtcdConnectorError;
}
