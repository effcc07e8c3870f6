/**
 * The few places where we reach below etcd3's public surface. etcd3's streams pick a random host
 * and never notice a blackholed connection; the recipes need to know which host a stream runs on
 * so they can drop that host's channels when the stream goes silent. Kept in one file so an etcd3
 * upgrade has one place to check.
 */
import type { Etcd3, ICallable, IDuplexStream } from 'etcd3';
import {
  ClientClosedError,
  EtcdLeaseInvalidError,
  GRPCDeadlineExceededError,
  isRecoverableError,
} from 'etcd3';
import {
  ClosedError,
  EtcdConnectorError,
  RequestFailedError,
  SessionLostError,
  TimeoutError,
  UnavailableError,
} from '../errors.js';

/** What etcd3's connection pool hands to `withConnection` callbacks (a `Host`). */
interface PoolHost {
  resetAllServices(): void;
}

type Pool = ICallable<PoolHost>;

/** gRPC status CANCELLED. */
const CANCELLED = 1;

export interface OpenedStream<Req, Res> {
  readonly stream: IDuplexStream<Req, Res> & { pause?(): void; resume?(): void };
  /** Drops the host's channels so the next stream dials a fresh TCP connection. */
  readonly resetHost: () => void;
}

function poolOf(client: Etcd3): Pool {
  const pool = (client as unknown as { pool?: Pool }).pool;
  if (pool === undefined || typeof pool.withConnection !== 'function') {
    throw new Error('etcd3 internals changed: Etcd3.pool.withConnection is missing');
  }
  return pool;
}

/** Options of {@link openStream}. */
export interface OpenStreamOptions {
  /**
   * Ask etcd to fail the stream when its member has no leader (Go's `WithRequireLeader`), so a
   * stream on a member cut off from the quorum ends instead of staying quiet forever.
   */
  requireLeader?: boolean;
}

/** Opens a bidirectional stream (`Lease.leaseKeepAlive` or `Watch.watch`) on one of the hosts. */
export async function openStream<Req, Res>(
  client: Etcd3,
  service: 'Lease' | 'Watch',
  method: 'leaseKeepAlive' | 'watch',
  streamOptions: OpenStreamOptions = {},
): Promise<OpenedStream<Req, Res>> {
  const pool = poolOf(client);
  return pool.withConnection(service, ({ resource, client: grpcClient, metadata: base }) => {
    let metadata = base;
    if (streamOptions.requireLeader === true) {
      metadata = base.clone();
      metadata.set('hasleader', 'true');
    }
    const factory = pool.callOptionsFactory;
    const options =
      typeof factory === 'function'
        ? factory({ service, method, isStream: true } as Parameters<typeof factory>[0])
        : (factory ?? {});
    const open = (grpcClient as unknown as Record<string, unknown>)[method] as (
      this: unknown,
      metadata: unknown,
      options: unknown,
    ) => IDuplexStream<Req, Res>;
    const stream = open.call(grpcClient, metadata, options);
    stream.on('error', (err: Error & { code?: number; details?: string }) => {
      // Our own cancel() says nothing about the host; counting it would trip etcd3's breaker.
      if (err.code === CANCELLED && err.details === 'Cancelled on client') return;
      pool.markFailed(resource, err);
    });
    return Promise.resolve({
      stream,
      resetHost: () => {
        resource.resetAllServices();
      },
    });
  });
}

/** Maps etcd3 / gRPC errors to ours; our own errors pass through. */
export function toConnectorError(err: unknown, what: string): EtcdConnectorError {
  if (err instanceof EtcdConnectorError) return err;
  if (err instanceof ClientClosedError) return new ClosedError();
  if (err instanceof GRPCDeadlineExceededError) {
    return new TimeoutError(`${what}: deadline exceeded`, { cause: err });
  }
  if (err instanceof EtcdLeaseInvalidError) {
    return new SessionLostError('?', `${what}: etcd says the lease is gone`, { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  // etcd3's circuit breaker refuses calls to a host that failed recently: transient by nature.
  const brokenCircuit = (err as { isBrokenCircuitError?: unknown } | null)?.isBrokenCircuitError;
  if (brokenCircuit === true || (err instanceof Error && isRecoverableError(err))) {
    return new UnavailableError(`${what}: ${message}`, { cause: err });
  }
  return new RequestFailedError(`${what}: ${message}`, { cause: err });
}

/** etcd reports lease ids as decimal strings; Go's key layout uses them in hex. */
export function leaseIdHex(id: string): string {
  return BigInt(id).toString(16);
}
