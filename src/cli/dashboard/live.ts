/**
 * The dashboard's live model: one inspector (one reflector of the namespace, or of `--path`, on
 * the connector's shared watch stream) and one health monitor feed the latest state and a rolling
 * log of changes; the server sends both to every page. Nothing here polls etcd per key: keys come
 * from the watch, lease TTLs from the inspector's batches, member health from the monitor's round.
 */
import type { EtcdConnector } from '../../connector.js';
import { diffRecipes, type RecipeView } from '../../engines/layouts/index.js';
import type { HealthReport } from '../../recipes/health-monitor.js';
import type { InspectorState, LeaseTtl } from '../../recipes/inspector.js';

/** What a page gets as its whole state (JSON). */
export interface PageState {
  /** The server's clock when the state was sent, so the page can count lease TTLs down. */
  readonly now: number;
  /** The watched path. */
  readonly path: string;
  readonly revision: number;
  /** False while the watch cannot reach etcd (the rest is the last known state). */
  readonly connected: boolean;
  readonly error?: string;
  readonly health?: PageHealth;
  readonly recipes: readonly RecipeView[];
  readonly leases: Readonly<Record<string, LeaseTtl>>;
}

export interface PageHealth {
  readonly status: string;
  readonly checkedAt: number;
  readonly leader?: string;
  readonly members: readonly {
    readonly endpoint: string;
    readonly healthy: boolean;
    readonly isLeader: boolean;
    readonly latencyMs?: number;
    readonly memberId?: string;
    readonly version?: string;
    readonly raftIndex?: number;
    readonly dbSize?: number;
    readonly error?: string;
  }[];
}

/** One line of the rolling log. */
export interface LogLine {
  readonly time: number;
  readonly level: 'info' | 'warn';
  /** The recipe's kind and path, for recipe changes. */
  readonly kind?: string;
  readonly path?: string;
  readonly text: string;
}

export interface LiveOptions {
  /** The subtree to watch (absolute, in the namespace). */
  path: string;
  healthIntervalMs: number;
  leaseRefreshMs: number;
  /** Lines the log keeps. */
  logSize: number;
}

/** A change of the state (`state`) or a new log line (`log`). */
export type LiveListener = (change: { state?: PageState; log?: LogLine }) => void;

export class LiveView {
  private inspected: InspectorState | undefined;
  private health: HealthReport | undefined;
  private readonly lines: LogLine[] = [];
  private readonly listeners = new Set<LiveListener>();
  private readonly loops: Promise<void>[] = [];
  private readonly stopAll: (() => Promise<void>)[] = [];

  constructor(
    private readonly conn: EtcdConnector,
    private readonly options: LiveOptions,
  ) {}

  /** Starts the inspector and the health monitor; their failures end up in the log. */
  start(): void {
    const inspector = this.conn.newInspector(this.options.path, {
      leaseRefreshMs: this.options.leaseRefreshMs,
    });
    const monitor = this.conn.newHealthMonitor({
      timeoutMs: Math.min(this.options.healthIntervalMs, 2000),
    });
    this.stopAll.push(
      () => inspector.stop(),
      () => monitor.stop(),
    );
    const inspecting = inspector.start();
    this.loops.push(
      (async () => {
        for await (const state of inspecting) this.onInspected(state);
        const error = await inspecting.closed;
        if (error !== undefined) this.note('warn', `the watch ended: ${error.message}`);
      })(),
      (async () => {
        for await (const report of monitor.start(false, this.options.healthIntervalMs)) {
          this.onHealth(report);
        }
      })(),
    );
  }

  /** Ends both; resolves when nothing of them runs. Idempotent, never rejects. */
  async stop(): Promise<void> {
    await Promise.allSettled(this.stopAll.map((stop) => stop()));
    await Promise.allSettled(this.loops);
    this.listeners.clear();
  }

  subscribe(listener: LiveListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The log, oldest first. */
  get log(): readonly LogLine[] {
    return this.lines;
  }

  /** The whole state now. */
  state(): PageState {
    const s = this.inspected;
    const error = s?.error;
    const unreachable = error !== undefined && error.name !== 'CompactedError';
    return {
      now: Date.now(),
      path: this.options.path,
      revision: s?.revision ?? 0,
      connected: s !== undefined && !unreachable,
      ...(error === undefined ? {} : { error: error.message }),
      ...(this.health === undefined ? {} : { health: pageHealth(this.health) }),
      recipes: s?.recipes ?? [],
      leases: Object.fromEntries(s?.leases ?? []),
    };
  }

  private onInspected(next: InspectorState): void {
    const prev = this.inspected;
    this.inspected = next;
    if (prev === undefined) {
      this.logLine({
        time: Date.now(),
        level: 'info',
        text: `watching ${next.path} from revision ${next.revision}: ${next.recipes.length} recipe(s)`,
      });
    } else {
      for (const change of diffRecipes(prev.recipes, next.recipes)) {
        this.logLine({ time: Date.now(), level: 'info', ...change });
      }
    }
    const was = prev?.error?.message;
    if (next.error !== undefined && next.error.message !== was) {
      this.note('warn', next.error.message);
    } else if (next.error === undefined && was !== undefined) {
      this.note('info', 'etcd can be reached again; nothing was missed');
    }
    this.emit({ state: this.state() });
  }

  private onHealth(next: HealthReport): void {
    const prev = this.health;
    this.health = next;
    for (const text of healthChanges(prev, next)) {
      this.logLine({
        time: next.checkedAt.getTime(),
        level: next.status === 'healthy' ? 'info' : 'warn',
        text,
      });
    }
    this.emit({ state: this.state() });
  }

  private note(level: LogLine['level'], text: string): void {
    this.logLine({ time: Date.now(), level, text });
  }

  private logLine(line: LogLine): void {
    this.lines.push(line);
    if (this.lines.length > this.options.logSize)
      this.lines.splice(0, this.lines.length - this.options.logSize);
    this.emit({ log: line });
  }

  private emit(change: { state?: PageState; log?: LogLine }): void {
    for (const listener of this.listeners) listener(change);
  }
}

function pageHealth(r: HealthReport): PageHealth {
  return {
    status: r.status,
    checkedAt: r.checkedAt.getTime(),
    ...(r.leader === undefined ? {} : { leader: r.leader }),
    members: r.members.map((m) => ({
      endpoint: m.endpoint,
      healthy: m.healthy,
      isLeader: m.isLeader === true,
      ...(m.latencyMs === undefined ? {} : { latencyMs: m.latencyMs }),
      ...(m.memberId === undefined ? {} : { memberId: m.memberId }),
      ...(m.version === undefined ? {} : { version: m.version }),
      ...(m.raftIndex === undefined ? {} : { raftIndex: m.raftIndex }),
      ...(m.dbSize === undefined ? {} : { dbSize: m.dbSize }),
      ...(m.error === undefined ? {} : { error: m.error.message }),
    })),
  };
}

/** What a new health report says that the last one did not, for the log. */
export function healthChanges(prev: HealthReport | undefined, next: HealthReport): string[] {
  if (prev === undefined) {
    const healthy = next.members.filter((m) => m.healthy).length;
    return [`cluster ${next.status}: ${healthy} of ${next.members.length} member(s) healthy`];
  }
  const lines: string[] = [];
  const before = new Map(prev.members.map((m) => [m.endpoint, m]));
  for (const m of next.members) {
    const was = before.get(m.endpoint);
    if (was?.healthy === m.healthy) continue;
    lines.push(
      m.healthy
        ? `member ${m.endpoint} is healthy again`
        : `member ${m.endpoint} is unhealthy: ${m.error?.message ?? 'no answer'}`,
    );
  }
  if (prev.leader !== next.leader && next.leader !== undefined) {
    lines.push(`raft leader: ${next.leader}`);
  }
  if (prev.status !== next.status) lines.push(`cluster ${next.status}`);
  return lines;
}
