/**
 * Every error this library throws or reports is an `EtcdConnectorError` with a literal `name` and a
 * stable string `code`. Match on `code` (or `instanceof`), never on `message`.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Stable error codes. Adding a code is a minor change; renaming one is a breaking change. */
export const ErrorCode = {
  InvalidArgument: 'ETCDC_INVALID_ARGUMENT',
  InvalidState: 'ETCDC_INVALID_STATE',
  Closed: 'ETCDC_CLOSED',
  KeyExists: 'ETCDC_KEY_EXISTS',
  KeyChanged: 'ETCDC_KEY_CHANGED',
  SessionLost: 'ETCDC_SESSION_LOST',
  NotLeader: 'ETCDC_NOT_LEADER',
  NotLocked: 'ETCDC_NOT_LOCKED',
  NoInstance: 'ETCDC_NO_INSTANCE',
  Compacted: 'ETCDC_COMPACTED',
  SlowConsumer: 'ETCDC_SLOW_CONSUMER',
  Timeout: 'ETCDC_TIMEOUT',
  Unavailable: 'ETCDC_UNAVAILABLE',
  RequestFailed: 'ETCDC_REQUEST_FAILED',
  AuthFailed: 'ETCDC_AUTH_FAILED',
  PermissionDenied: 'ETCDC_PERMISSION_DENIED',
  Tls: 'ETCDC_TLS',
  Aborted: 'ETCDC_ABORTED',
  EtcdNotFound: 'ETCDC_ETCD_NOT_FOUND',
  EtcdStartFailed: 'ETCDC_ETCD_START_FAILED',
  TooManyParticipants: 'ETCDC_TOO_MANY_PARTICIPANTS',
  TransactionConflict: 'ETCDC_TXN_CONFLICT',
  OutcomeUnknown: 'ETCDC_OUTCOME_UNKNOWN',
  ValueFormat: 'ETCDC_VALUE_FORMAT',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface ErrorOptions {
  cause?: unknown;
}

/** Base class of every error of this library. */
export class EtcdConnectorError extends Error {
  override name = 'EtcdConnectorError';
  readonly code: ErrorCode;
  /** True when the same call may succeed if tried again later (etcd unreachable, timeouts). */
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, retryable: boolean, options?: ErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = retryable;
  }
}

/**
 * Makes an error without capturing a stack trace, for a reason whose origin tells nothing (an
 * abort reason on a normal release) on a path hot enough for the capture to count.
 */
export function withoutStack<T extends Error>(make: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return make();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** Bad input: caught before any I/O, nothing was written. */
export class InvalidArgumentError extends EtcdConnectorError {
  override name = 'InvalidArgumentError' as const;
  constructor(
    /** Which argument or option was wrong. */
    readonly argument: string,
    message: string,
  ) {
    super(ErrorCode.InvalidArgument, `${argument}: ${message}`, false);
  }
}

/** The call does not fit the object's state (e.g. `start()` twice, `update()` before `create()`). */
export class InvalidStateError extends EtcdConnectorError {
  override name = 'InvalidStateError' as const;
  constructor(message: string) {
    super(ErrorCode.InvalidState, message, false);
  }
}

/** The connector (or the recipe) was closed; nothing more can be done with it. */
export class ClosedError extends EtcdConnectorError {
  override name = 'ClosedError' as const;
  constructor(what = 'connector') {
    super(ErrorCode.Closed, `${what} is closed`, false);
  }
}

/**
 * An ephemeral key could not be created, updated or put back because another live owner holds it
 * (the key is under another live lease, or another ephemeral key of the same connector has it).
 */
export class KeyExistsError extends EtcdConnectorError {
  override name = 'KeyExistsError' as const;
  constructor(
    readonly key: string,
    /** The holder's lease in hex, when etcd named it. */
    readonly lease?: string,
  ) {
    super(
      ErrorCode.KeyExists,
      `key ${key} is held by another live owner${lease === undefined ? '' : ` (lease ${lease})`}`,
      false,
    );
  }
}

/**
 * What someone else did to an ephemeral key (see {@link KeyChangedError}): `deleted` — the key was
 * deleted; `lease` — it was written under another lease, or without one (the value may differ
 * too); `value` — it was written under our own lease with another value.
 */
export type KeyChange = 'deleted' | 'lease' | 'value';

const KEY_CHANGES: Record<KeyChange, string> = {
  deleted: 'was deleted',
  lease: 'was overwritten with another lease',
  value: 'was overwritten with another value',
};

/**
 * Someone else changed an ephemeral key (or service registration) while it was ours: reported on
 * its error stream. The key puts itself back at once, unless another live owner now holds it
 * (then a KeyExistsError follows and the key waits for that owner's key to go).
 */
export class KeyChangedError extends EtcdConnectorError {
  override name = 'KeyChangedError' as const;
  constructor(
    readonly key: string,
    /** What was done to the key. */
    readonly change: KeyChange,
    /** The etcd revision of the change (after a compaction hid it: the revision re-read). */
    readonly revision: number,
    /** With `lease`: the lease the key was found under, in hex; `undefined` for none. */
    readonly lease?: string,
  ) {
    const under =
      change === 'lease' ? ` (${lease === undefined ? 'no lease' : `lease ${lease}`})` : '';
    super(
      ErrorCode.KeyChanged,
      `key ${key} ${KEY_CHANGES[change]}${under} at revision ${revision} by someone else`,
      false,
    );
  }
}

/** The session's lease is gone: its local deadline passed, or etcd said it no longer exists. */
export class SessionLostError extends EtcdConnectorError {
  override name = 'SessionLostError' as const;
  constructor(
    readonly leaseId: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(ErrorCode.SessionLost, `lease ${leaseId} lost: ${message}`, true, options);
  }
}

/** A fenced operation ran while this participant was not (or no longer) the leader. */
export class NotLeaderError extends EtcdConnectorError {
  override name = 'NotLeaderError' as const;
  constructor(message = 'not the leader') {
    super(ErrorCode.NotLeader, message, false);
  }
}

/**
 * A lock (or permit) is not held: it was released, its session was lost, or its key was deleted.
 * A fenced operation that fails with it wrote nothing.
 */
export class NotLockedError extends EtcdConnectorError {
  override name = 'NotLockedError' as const;
  constructor(message = 'the lock is not held', options?: ErrorOptions) {
    super(ErrorCode.NotLocked, message, false, options);
  }
}

/**
 * A service provider had no instance to pick: none registered, or every one filtered out or
 * marked down by the down-instance policy. Retryable: instances come and down marks expire.
 */
export class NoInstanceError extends EtcdConnectorError {
  override name = 'NoInstanceError' as const;
  constructor(
    readonly servicePath: string,
    /** Instances registered (readable endpoints under the path). */
    readonly registered: number,
    /** Of those, refused by the provider's `filter`. */
    readonly filtered: number,
    /** Of the rest, skipped as down (errors noted by `noteError`). */
    readonly down: number,
  ) {
    super(
      ErrorCode.NoInstance,
      registered === 0
        ? `no instance of ${servicePath} is registered`
        : `no instance of ${servicePath} to pick: ${registered} registered, ${filtered} filtered ` +
            `out, ${down} down`,
      true,
    );
  }
}

/** The requested history was compacted away. `compactRevision` is the oldest still available. */
export class CompactedError extends EtcdConnectorError {
  override name = 'CompactedError' as const;
  constructor(
    readonly requestedRevision: string,
    readonly compactRevision: string,
  ) {
    super(
      ErrorCode.Compacted,
      `revision ${requestedRevision} was compacted (oldest available: ${compactRevision})`,
      false,
    );
  }
}

/** An event stream's consumer fell too far behind; the stream ended rather than grow unbounded. */
export class SlowConsumerError extends EtcdConnectorError {
  override name = 'SlowConsumerError' as const;
  constructor(readonly buffered: number) {
    super(ErrorCode.SlowConsumer, `consumer fell behind by ${buffered} events`, false);
  }
}

/** A call did not complete within its deadline. */
export class TimeoutError extends EtcdConnectorError {
  override name = 'TimeoutError' as const;
  constructor(message: string, options?: ErrorOptions) {
    super(ErrorCode.Timeout, message, true, options);
  }
}

/** etcd could not be reached or refused the call for a transient reason. */
export class UnavailableError extends EtcdConnectorError {
  override name = 'UnavailableError' as const;
  constructor(message: string, options?: ErrorOptions) {
    super(ErrorCode.Unavailable, message, true, options);
  }
}

/** etcd refused the request for a reason that retrying will not fix (permissions, bad request). */
export class RequestFailedError extends EtcdConnectorError {
  override name = 'RequestFailedError' as const;
  constructor(message: string, options?: ErrorOptions) {
    super(ErrorCode.RequestFailed, message, false, options);
  }
}

/**
 * etcd refused our credentials: wrong user or password, or auth is not enabled for a user that was
 * given. Final: retrying with the same credentials cannot succeed.
 */
export class AuthenticationFailedError extends EtcdConnectorError {
  override name = 'AuthenticationFailedError' as const;
  constructor(message: string, options?: ErrorOptions) {
    super(ErrorCode.AuthFailed, message, false, options);
  }
}

/** The user may not read or write that key range. Final for this call and these credentials. */
export class PermissionDeniedError extends EtcdConnectorError {
  override name = 'PermissionDeniedError' as const;
  constructor(message: string, options?: ErrorOptions) {
    super(ErrorCode.PermissionDenied, message, false, options);
  }
}

/**
 * The TLS handshake failed: the server's certificate is not signed by the given CA, does not name
 * the host, or the server refused our client certificate. Final until the TLS material changes.
 */
export class TlsError extends EtcdConnectorError {
  override name = 'TlsError' as const;
  constructor(message: string, options?: ErrorOptions) {
    super(ErrorCode.Tls, message, false, options);
  }
}

/** The caller's AbortSignal fired. */
export class AbortError extends EtcdConnectorError {
  override name = 'AbortError' as const;
  constructor(options?: ErrorOptions) {
    super(ErrorCode.Aborted, 'the operation was aborted', false, options);
  }
}

/** A double barrier already had its `count` participants when this one arrived. */
export class TooManyParticipantsError extends EtcdConnectorError {
  override name = 'TooManyParticipantsError' as const;
  constructor(
    readonly path: string,
    readonly count: number,
  ) {
    super(
      ErrorCode.TooManyParticipants,
      `double barrier ${path} already has its ${count} participants`,
      false,
    );
  }
}

/**
 * A software transaction kept conflicting with concurrent writers until the caller gave up
 * (its signal fired, or `maxAttempts` was reached). Nothing of it was written.
 */
export class TransactionConflictError extends EtcdConnectorError {
  override name = 'TransactionConflictError' as const;
  constructor(
    /** Attempts made, each ending in a conflict. */
    readonly attempts: number,
    options?: ErrorOptions,
  ) {
    super(
      ErrorCode.TransactionConflict,
      `transaction gave up after ${attempts} conflicting attempt(s); nothing was written`,
      false,
      options,
    );
  }
}

/**
 * A write was sent, its answer was lost, and whether it took effect could not be established
 * (history compacted, or the recipe stopped while asking). `key` names what it concerned, e.g.
 * the queue item that may have been claimed.
 */
export class OutcomeUnknownError extends EtcdConnectorError {
  override name = 'OutcomeUnknownError' as const;
  constructor(
    readonly key: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(ErrorCode.OutcomeUnknown, `${key}: ${message}`, false, options);
  }
}

/** A key holds a value the recipe cannot read (e.g. a counter that is not an integer). */
export class ValueFormatError extends EtcdConnectorError {
  override name = 'ValueFormatError' as const;
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(ErrorCode.ValueFormat, `${key}: ${message}`, false);
  }
}

/**
 * `bash <script>` for the shipped scripts/ensure-etcd.sh, as a path that works from where this
 * module runs: `<package>/dist/src/errors.js` in an installed package or a built clone,
 * `<repo>/src/errors.ts` when run from source. A bundled copy has no script next to it: then the
 * path inside the project's node_modules.
 */
function ensureEtcdCommand(): string {
  for (const relative of ['../../scripts/ensure-etcd.sh', '../scripts/ensure-etcd.sh']) {
    try {
      const path = fileURLToPath(new URL(relative, import.meta.url));
      if (!existsSync(path)) continue;
      return `bash ${/^[\w./+-]+$/.test(path) ? path : `'${path.replaceAll("'", "'\\''")}'`}`;
    } catch {
      // not a file: URL (bundled): fall through
    }
  }
  return 'bash node_modules/etcd-connector/scripts/ensure-etcd.sh';
}

/** The testing kit could not find the etcd binary. */
export class EtcdNotFoundError extends EtcdConnectorError {
  override name = 'EtcdNotFoundError' as const;
  constructor(binary: string) {
    super(
      ErrorCode.EtcdNotFound,
      `etcd binary not found (${binary}). Install it with ` +
        '`sudo apt-get update && sudo apt-get install -y etcd-server etcd-client`, ' +
        `or run \`${ensureEtcdCommand()}\` (installs it with apt-get where it can, else says ` +
        'how), or point ETCD_BIN at an etcd 3.4+ binary.',
      false,
    );
  }
}

/** The testing kit started etcd but it did not become healthy in time, or exited. */
export class EtcdStartError extends EtcdConnectorError {
  override name = 'EtcdStartError' as const;
  constructor(message: string, options?: ErrorOptions) {
    super(ErrorCode.EtcdStartFailed, message, true, options);
  }
}

/** True for errors of this library that carry the given code. */
export function hasCode(err: unknown, code: ErrorCode): err is EtcdConnectorError {
  return err instanceof EtcdConnectorError && err.code === code;
}
