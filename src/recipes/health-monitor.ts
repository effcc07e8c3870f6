/**
 * Cluster health, member by member. Every endpoint of the connector gets its own etcd3 client (so
 * a check never wanders to another member) with no retries and no circuit breaker (a check reports
 * what happens now), and is asked `Maintenance.Status` with a per-check deadline. A member is
 * healthy when it answers in time, knows a raft leader and reports no alarm; a member without a
 * leader (lost quorum, mid-election) is not.
 */
import type { Etcd3, IStatusResponse } from 'etcd3';
import { InvalidArgumentError, UnavailableError } from '../errors.js';
import type { ConnectorContext } from '../engines/context.js';
import { Lifecycle, type StartOptions } from '../engines/lifecycle.js';
import { validateMs } from '../paths.js';
import { createClient, singleAttemptFaults } from '../transport/client-options.js';
import { StreamQueue, type RecipeStream } from '../transport/stream-queue.js';
import { delay, isAborted, monotonicMs } from '../transport/timers.js';

/**
 * Overall status of the cluster in a {@link HealthReport}:
 * - `Healthy`: every member answers and has a leader;
 * - `Degraded`: some member is down or leaderless, but a quorum (more than half) is healthy — the
 *   cluster still serves reads and writes;
 * - `Unhealthy`: no quorum of healthy members (writes and linearizable reads stall);
 * - `Unknown`: not checked yet (never emitted by `start()`).
 */
export const ClusterStatus = {
  Healthy: 'healthy',
  Unhealthy: 'unhealthy',
  Unknown: 'unknown',
  Degraded: 'degraded',
} as const;
/** One of the {@link ClusterStatus} values. */
export type ClusterStatus = (typeof ClusterStatus)[keyof typeof ClusterStatus];

/** The health of one endpoint. */
export interface MemberHealth {
  /** The endpoint as given to the connector. */
  readonly endpoint: string;
  /** Answered within the deadline, knows a leader, no alarm. */
  readonly healthy: boolean;
  /** How long the status call took (answered calls only), in ms. */
  readonly latencyMs?: number;
  /** Why the member is unhealthy. */
  readonly error?: Error;
  /** The member's id in hex, as `etcdctl member list` prints it. */
  readonly memberId?: string;
  /** This member is the raft leader. */
  readonly isLeader?: boolean;
  readonly raftIndex?: number;
  readonly raftTerm?: number;
  /** Size of the member's database file, in bytes. */
  readonly dbSize?: number;
  /** etcd version of the member. */
  readonly version?: string;
}

/** One health report: emitted at start and whenever the status, a leader or a member changes. */
export interface HealthReport {
  readonly status: ClusterStatus;
  /** One entry per connector endpoint, in the connector's order. */
  readonly members: readonly MemberHealth[];
  /** When the check started (wall clock, for display). */
  readonly checkedAt: Date;
  /** The leader's endpoint if it answered, else its member id (hex), when any member knows it. */
  readonly leader?: string;
  /** Set (with status `Unknown`) only when the monitor itself failed; the stream then ends. */
  readonly error?: Error;
}

/** Options of {@link HealthMonitor}. */
export interface HealthMonitorOptions {
  /** Deadline of one member's check, in ms. Default: min(scan interval, 2000). */
  timeoutMs?: number;
}

/** Options of `monitor.start(options)`. */
export interface HealthMonitorStartOptions extends StartOptions {
  /** One report, then the stream ends. Default false. */
  once?: boolean;
  /** Time between checks, in ms. Default 10000. */
  intervalMs?: number;
}

/**
 * Watches the health of every endpoint of the connector. Create it with
 * `conn.newHealthMonitor()`; the constructor does no I/O.
 *
 * ```ts
 * for await (const h of mon.start(false, 10_000)) console.log(h.status);
 * ```
 */
export class HealthMonitor implements AsyncDisposable {
  private readonly timeoutMs: number | undefined;
  private readonly life: Lifecycle;
  private queue: StreamQueue<HealthReport> | undefined;
  private loop: Promise<void> | undefined;
  private clients: Etcd3[] = [];

  /** @internal Use `conn.newHealthMonitor(options)`. */
  constructor(
    private readonly ctx: ConnectorContext,
    options: HealthMonitorOptions = {},
  ) {
    this.timeoutMs =
      options.timeoutMs === undefined ? undefined : validateMs(options.timeoutMs, 'timeoutMs');
    this.life = new Lifecycle(ctx, 'health monitor', async () => {
      await this.loop;
      this.queue?.end();
    });
  }

  /**
   * Checks every endpoint now, then every `intervalMs`. Yields the first report, then a report
   * only when something changed (status, leader, a member's health or error — not latency). The
   * stream keeps only the newest reports for a slow reader. With `once`, it yields one report and
   * ends, leaving nothing running. `break` stops the monitor.
   *
   * @throws InvalidArgumentError bad `once` or `intervalMs`
   * @throws InvalidStateError started before
   * @throws ClosedError the connector is closed
   */
  start(options?: HealthMonitorStartOptions): RecipeStream<HealthReport>;
  start(once?: boolean, intervalMs?: number): RecipeStream<HealthReport>;
  start(
    first: boolean | HealthMonitorStartOptions = {},
    second?: number,
  ): RecipeStream<HealthReport> {
    const opts: HealthMonitorStartOptions =
      typeof first === 'object'
        ? first
        : { once: first, ...(second === undefined ? {} : { intervalMs: second }) };
    const { once = false, intervalMs = 10_000 } = opts;
    if (typeof once !== 'boolean') throw new InvalidArgumentError('once', 'must be a boolean');
    validateMs(intervalMs, 'intervalMs');
    this.life.begin(opts.signal === undefined ? {} : { signal: opts.signal });
    const timeoutMs = this.timeoutMs ?? Math.min(intervalMs, 2000);
    const queue = new StreamQueue<HealthReport>({
      capacity: 4,
      overflow: 'coalesce',
      onReturn: () => void this.stop(),
    });
    this.queue = queue;
    if (this.life.isStopping) {
      queue.end();
      return queue;
    }
    this.clients = this.ctx.endpoints.map((endpoint) =>
      createClient([endpoint], {
        ...this.ctx.clientOptions,
        faultHandling: singleAttemptFaults,
      }),
    );
    this.loop = this.run(once, intervalMs, timeoutMs);
    void this.loop.then(() => this.stop());
    return queue;
  }

  /**
   * Stops checking and ends the stream; resolves once no check, timer or client is left (an
   * in-flight check ends by its deadline). Idempotent, never rejects.
   */
  stop(): Promise<void> {
    return this.life.stop();
  }

  /** Same as `stop()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  private async run(once: boolean, intervalMs: number, timeoutMs: number): Promise<void> {
    const signal = this.life.signal;
    let last: string | undefined;
    try {
      while (!signal.aborted) {
        const startedAt = monotonicMs();
        const report = await this.check(timeoutMs);
        if (isAborted(signal)) break;
        const sig = signature(report);
        if (sig !== last) {
          last = sig;
          this.queue?.push(report);
        }
        if (once) break;
        const wait = Math.max(0, startedAt + intervalMs - monotonicMs());
        await delay(wait, signal).catch(() => undefined);
      }
    } catch (err) {
      // Only a bug in building a report lands here: say so on the stream, then end.
      this.queue?.push({
        status: ClusterStatus.Unknown,
        members: [],
        checkedAt: new Date(),
        error: err instanceof Error ? err : new Error(String(err)),
      });
    } finally {
      for (const c of this.clients) c.close();
      this.clients = [];
      this.queue?.end();
    }
  }

  private async check(timeoutMs: number): Promise<HealthReport> {
    const checkedAt = new Date();
    const statuses = await Promise.all(
      this.clients.map(async (client, i) => {
        const endpoint = this.ctx.endpoints[i] ?? '?';
        const t0 = monotonicMs();
        try {
          const st = await client.maintenance.status({ deadline: Date.now() + timeoutMs });
          return { endpoint, st, latencyMs: monotonicMs() - t0 };
        } catch (err) {
          return { endpoint, error: this.ctx.toError(err, `status of ${endpoint}`) };
        }
      }),
    );
    // The leader as seen by the answering member with the newest term.
    let leaderId: string | undefined;
    let term = -1n;
    for (const s of statuses) {
      if (s.st !== undefined && s.st.leader !== '0' && BigInt(s.st.raftTerm) > term) {
        term = BigInt(s.st.raftTerm);
        leaderId = s.st.leader;
      }
    }
    const members = statuses.map((s): MemberHealth => {
      if (s.st === undefined) return { endpoint: s.endpoint, healthy: false, error: s.error };
      return memberHealth(s.endpoint, s.st, s.latencyMs, leaderId);
    });
    const healthy = members.filter((m) => m.healthy).length;
    const status =
      healthy === members.length
        ? ClusterStatus.Healthy
        : healthy > members.length / 2
          ? ClusterStatus.Degraded
          : ClusterStatus.Unhealthy;
    const leaderMember = members.find((m) => m.isLeader === true);
    const leader = leaderMember?.endpoint ?? (leaderId === undefined ? undefined : hex(leaderId));
    return { status, members, checkedAt, ...(leader === undefined ? {} : { leader }) };
  }
}

function memberHealth(
  endpoint: string,
  st: IStatusResponse,
  latencyMs: number,
  leaderId: string | undefined,
): MemberHealth {
  const memberId = st.header.member_id;
  let error: Error | undefined;
  if (st.leader === '0') {
    error = new UnavailableError(`${endpoint} has no raft leader (quorum lost or electing)`);
  } else if (st.errors.length > 0) {
    error = new UnavailableError(`${endpoint} reports: ${st.errors.join('; ')}`);
  }
  return {
    endpoint,
    healthy: error === undefined,
    latencyMs,
    ...(error === undefined ? {} : { error }),
    memberId: hex(memberId),
    isLeader: leaderId !== undefined && memberId === leaderId,
    raftIndex: Number(st.raftIndex),
    raftTerm: Number(st.raftTerm),
    dbSize: Number(st.dbSize),
    version: st.version,
  };
}

function hex(id: string): string {
  return BigInt(id).toString(16);
}

/** What counts as a change: status, leader, and each member's health, error kind and role. */
function signature(r: HealthReport): string {
  return JSON.stringify([
    r.status,
    r.leader,
    r.members.map((m) => [
      m.healthy,
      m.error === undefined ? '' : `${m.error.name}:${(m.error as { code?: string }).code ?? ''}`,
      m.isLeader === true,
    ]),
  ]);
}
