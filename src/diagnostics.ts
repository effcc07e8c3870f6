/**
 * Diagnostics: what the library does, published on `node:diagnostics_channel` channels named
 * `etcd-connector:...`, for metrics (`etcd-connector/metrics` turns them into OpenTelemetry
 * instruments), logs and dashboards — without forcing any of them on users. A channel without
 * subscribers costs one property read: every publisher checks `hasSubscribers` before it builds
 * a message.
 *
 * ```ts
 * import diagnostics_channel from 'node:diagnostics_channel';
 * diagnostics_channel.subscribe('etcd-connector:leadership.lost', (msg) => log.warn(msg));
 * ```
 */
import { channel, type Channel } from 'node:diagnostics_channel';

/** Every channel name, and the type of its messages. */
export interface DiagnosticMessages {
  /** A session (lease) changed state. */
  'etcd-connector:session.state': {
    /** Lease id in hex. */
    leaseId: string;
    ttl: number;
    state: 'alive' | 'suspended' | 'lost' | 'closed';
    /** Why it was lost. */
    error?: Error;
  };
  /**
   * A keepalive was acknowledged, `rttMs` after it was sent; the lease is now surely alive until
   * `deadlineAt` (epoch ms: `performance.timeOrigin` + the monotonic deadline, comparable across
   * processes of one machine).
   */
  'etcd-connector:session.keepalive': {
    leaseId: string;
    ttl: number;
    rttMs: number;
    deadlineAt: number;
  };
  /** This process became leader of an election. */
  'etcd-connector:leadership.gained': {
    path: string;
    key: string;
    /** The fencing token (create revision of the leader key). */
    token: string;
    identity: string;
    /** etcd's revision of the read that found us leader (the leader event's `revision`). */
    revision: number;
  };
  /** This process stopped being leader: why, and how long it led. */
  'etcd-connector:leadership.lost': {
    path: string;
    key: string;
    token: string;
    reason: 'suspended' | 'lost' | 'deleted' | 'fenced' | 'resigned';
    heldMs: number;
    error?: Error;
  };
  /** A lock (mutex, read or write lock, semaphore permit) is being waited for. */
  'etcd-connector:lock.wait': { kind: LockKind; path: string; key: string };
  /** A lock was acquired after `waitMs`. */
  'etcd-connector:lock.acquire': {
    kind: LockKind;
    path: string;
    key: string;
    token: string;
    /** etcd's revision of the read that found the lock ours (`lock.revision`). */
    revision: number;
    waitMs: number;
    /**
     * When it was granted (epoch ms: `performance.timeOrigin` + monotonic time), read just
     * before the session's deadline was checked for it: the session was surely alive then.
     */
    grantedAt: number;
    /** The lease (hex) our key is under: a mutex's may be the connector's spare session's. */
    lease: string;
    /** The session's local deadline (epoch ms) when it was granted: held surely until then. */
    deadlineAt: number;
  };
  /** A held lock was released by its holder after `heldMs`. */
  'etcd-connector:lock.release': {
    kind: LockKind;
    path: string;
    key: string;
    token: string;
    heldMs: number;
  };
  /** A held lock was lost (session lost, key deleted, fence refused) after `heldMs`. */
  'etcd-connector:lock.lost': {
    kind: LockKind;
    path: string;
    key: string;
    token: string;
    heldMs: number;
    error?: Error;
  };
  /** The shared watch stream came back after `downMs` and re-created its `watchers`. */
  'etcd-connector:watch.resume': { watchers: number; downMs: number };
  /** History was compacted away: a recipe listed its range again at `revision`. */
  'etcd-connector:watch.resync': { what: string; compactRevision: number; revision: number };
  /**
   * A watch response delivered `events` events; `lagRevisions` is how far the newest of them is
   * behind etcd's revision when it was sent (0 when caught up).
   */
  'etcd-connector:watch.delivery': { events: number; lagRevisions: number };
  /** A call to etcd failed (every failure, also the ones a recipe retries by itself). */
  'etcd-connector:call.error': { what: string; code: string; retryable: boolean; message: string };
}

/** What kind of lock a lock channel message is about. */
export type LockKind = 'mutex' | 'read' | 'write' | 'semaphore';

/** A channel name (`etcd-connector:...`). */
export type DiagnosticChannel = keyof DiagnosticMessages;

/** Every channel name, for subscribers that want them all (e.g. a log of everything). */
export const DIAGNOSTIC_CHANNELS: readonly DiagnosticChannel[] = [
  'etcd-connector:session.state',
  'etcd-connector:session.keepalive',
  'etcd-connector:leadership.gained',
  'etcd-connector:leadership.lost',
  'etcd-connector:lock.wait',
  'etcd-connector:lock.acquire',
  'etcd-connector:lock.release',
  'etcd-connector:lock.lost',
  'etcd-connector:watch.resume',
  'etcd-connector:watch.resync',
  'etcd-connector:watch.delivery',
  'etcd-connector:call.error',
];

const channels = new Map<DiagnosticChannel, Channel>(
  DIAGNOSTIC_CHANNELS.map((name) => [name, channel(name)]),
);

/**
 * @internal Publishes a message if anyone listens; `build` runs only then, so a channel without
 * subscribers costs nothing but the check.
 */
export function publish<N extends DiagnosticChannel>(
  name: N,
  build: () => DiagnosticMessages[N],
): void {
  const ch = channels.get(name);
  if (ch?.hasSubscribers === true) ch.publish(build());
}

/** @internal True when someone listens on `name` (to skip measuring for nobody). */
export function observed(name: DiagnosticChannel): boolean {
  return channels.get(name)?.hasSubscribers === true;
}
