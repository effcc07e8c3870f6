/**
 * What a recipe gets from its connector. Recipes depend on this, not on the connector class, so
 * the connector can import every recipe without a cycle.
 */
import type { Etcd3, IOptions } from 'etcd3';
import type { SessionPool } from './session-pool.js';

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
  /** Deadline for one unary call, in ms. */
  readonly callTimeoutMs: number;
  readonly maxRequestBytes: number;
  /** Throws ClosedError after `close()`. */
  assertOpen(): void;
  /** Registers an object to end on `close()`; returns the function that unregisters it. */
  track(closable: Closable): () => void;
  /** gRPC call options with the per-call deadline. */
  callOptions(): { deadline: Date };
}
