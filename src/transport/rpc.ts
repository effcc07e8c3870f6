/**
 * The few places where we reach below etcd3's public surface, and the mapping of its errors to
 * ours. etcd3's streams pick a random host and never notice a blackholed connection; the recipes
 * need to know which host a stream runs on so they can drop that host's channels when the stream
 * goes silent. Kept in one file so an etcd3 upgrade has one place to check.
 */
import type { Etcd3, ICallable, IDuplexStream } from 'etcd3';
import {
  ClientClosedError,
  castGrpcError,
  EtcdAuthenticationFailedError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  GRPCDeadlineExceededError,
  GRPCUnauthenticatedError,
  GRPCUnknownError,
  isRecoverableError,
} from 'etcd3';
import { publish } from '../diagnostics.js';
import {
  AuthenticationFailedError,
  ClosedError,
  EtcdConnectorError,
  PermissionDeniedError,
  RequestFailedError,
  SessionLostError,
  TimeoutError,
  TlsError,
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
  readonly stream: IDuplexStream<Req, Res>;
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
      if (isOwnCancel(err)) return;
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

/** The error a stream emits after our own `cancel()`. */
export function isOwnCancel(err: unknown): boolean {
  const e = err as { code?: unknown; details?: unknown } | null;
  return e?.code === CANCELLED && e.details === 'Cancelled on client';
}

/**
 * Handshake failures of Node's TLS (and of OpenSSL alerts from the server): a certificate not
 * signed by the CA, a name mismatch, a refused client certificate, TLS spoken to a plain port.
 */
const TLS_FAILURE =
  /certificate|self[- ]signed|unable to verify|issuer|altnames|ssl|tls|handshake|wrong version number|alert|ERR_TLS|EPROTO/i;

/** etcd's answer when auth is enabled and no (or no valid) credentials came with the call. */
const AUTH_FAILURE =
  /authentication failed|user name is empty|authentication is not enabled|invalid user ID or password/i;

/** grpc-js ends "No connection established. Last error: ..." with an empty "Resolution note: ". */
const EMPTY_NOTE = /\.? Resolution note: *$/;

/** The text of an error as grpc-js / etcd3 report it (details carry the real reason). */
function describe(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(EMPTY_NOTE, '');
}

function isBrokenCircuit(err: unknown): boolean {
  return (err as { isBrokenCircuitError?: unknown } | null)?.isBrokenCircuitError === true;
}

/**
 * Maps etcd3 / gRPC errors to ours; our own errors pass through. Final classes (retrying cannot
 * help): AuthenticationFailedError, PermissionDeniedError, TlsError, RequestFailedError.
 *
 * `lastFailure` is the last real failure seen on this connection: etcd3's circuit breaker refuses
 * calls to a host that failed recently with an opaque message, so its error is reported as that
 * real reason.
 */
export function toConnectorError(
  err: unknown,
  what: string,
  lastFailure?: unknown,
): EtcdConnectorError {
  if (err instanceof EtcdConnectorError) return err;
  // Errors of a stream reach us as grpc-js raw errors; type them as etcd3 does for unary calls.
  if (
    err instanceof Error &&
    err.constructor === Error &&
    typeof (err as { code?: unknown }).code === 'number'
  ) {
    err = castGrpcError(err);
  }
  if (isBrokenCircuit(err)) {
    if (lastFailure !== undefined && !isBrokenCircuit(lastFailure)) {
      const real = toConnectorError(lastFailure, what);
      const Ctor = real.constructor as new (m: string, o: { cause: unknown }) => EtcdConnectorError;
      if (real instanceof UnavailableError || real instanceof TlsError) {
        return new Ctor(`${real.message} (no new attempt on that member for a few seconds)`, {
          cause: err,
        });
      }
      return real;
    }
    return new UnavailableError(
      `${what}: etcd unreachable (every member failed recently; trying again in a few seconds)`,
      { cause: err },
    );
  }
  if (err instanceof ClientClosedError) return new ClosedError();
  // etcd 3.4 returns its own context's expiry (our deadline, sent along) as UNKNOWN.
  if (
    err instanceof GRPCDeadlineExceededError ||
    (err instanceof GRPCUnknownError && err.message.includes('context deadline exceeded'))
  ) {
    return new TimeoutError(`${what}: deadline exceeded`, { cause: err });
  }
  if (err instanceof EtcdLeaseInvalidError) {
    return new SessionLostError('?', `${what}: etcd says the lease is gone`, { cause: err });
  }
  const message = describe(err);
  if (
    err instanceof EtcdAuthenticationFailedError ||
    err instanceof GRPCUnauthenticatedError ||
    AUTH_FAILURE.test(message)
  ) {
    return new AuthenticationFailedError(`${what}: ${message}`, { cause: err });
  }
  if (err instanceof EtcdPermissionDeniedError || /permission denied/i.test(message)) {
    return new PermissionDeniedError(`${what}: ${message}`, { cause: err });
  }
  if (!message.includes('etcdserver:') && TLS_FAILURE.test(message)) {
    return new TlsError(`${what}: TLS handshake failed: ${message}`, { cause: err });
  }
  if (err instanceof Error && isRecoverableError(err)) {
    return new UnavailableError(`${what}: ${message}`, { cause: err });
  }
  return new RequestFailedError(`${what}: ${message}`, { cause: err });
}

/** etcd reports lease ids as decimal strings; Go's key layout and our API use them in hex. */
export function leaseIdHex(id: string): string {
  return BigInt(id).toString(16);
}

/** A hex lease id (ours) back to etcd's decimal string (etcd3's builders take that). */
export function leaseIdDecimal(hex: string): string {
  return BigInt('0x' + hex).toString(10);
}

/**
 * The last real failure of a connection (not a circuit-breaker refusal, not our own cancel), so a
 * later refusal can name the real reason. Forgotten after a while: a stale reason would mislead.
 */
export class FailureMemory {
  private last: { error: unknown; at: number } | undefined;

  constructor(private readonly keepMs = 15_000) {}

  note(err: unknown): void {
    if (isBrokenCircuit(err) || isOwnCancel(err) || err instanceof EtcdConnectorError) return;
    this.last = { error: err, at: performance.now() };
  }

  /** The last failure, if it is recent. */
  get recent(): unknown {
    const l = this.last;
    return l !== undefined && performance.now() - l.at < this.keepMs ? l.error : undefined;
  }

  /** {@link toConnectorError} with this connection's last failure. */
  toError(err: unknown, what: string): EtcdConnectorError {
    if (err instanceof EtcdConnectorError) return err;
    if (!isBrokenCircuit(err)) this.note(err);
    const error = toConnectorError(err, what, this.recent);
    publish('etcd-connector:call.error', () => ({
      what,
      code: error.code,
      retryable: error.retryable,
      message: error.message,
    }));
    return error;
  }
}
