/**
 * `etcd-connector/metrics`: the library's diagnostics channels as OpenTelemetry instruments,
 * through `@opentelemetry/api` (an optional peer dependency: only this subpath needs it). Export
 * them with any OpenTelemetry SDK reader (Prometheus, OTLP, ...).
 *
 * ```ts
 * import { instrumentMetrics } from 'etcd-connector/metrics';
 * const metrics = instrumentMetrics(); // the global MeterProvider, or { meterProvider }
 * // ... later
 * metrics.dispose();
 * ```
 *
 * @packageDocumentation
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import {
  metrics as otel,
  type Attributes,
  type Meter,
  type MeterProvider,
} from '@opentelemetry/api';
import type { DiagnosticChannel, DiagnosticMessages } from '../diagnostics.js';

/** Options of {@link instrumentMetrics}. */
export interface MetricsOptions {
  /** Where instruments are created. Default: the global provider of `@opentelemetry/api`. */
  meterProvider?: MeterProvider;
  /**
   * Put the recipe's path on lock and leadership instruments as the `path` attribute. Default
   * true; turn off when paths are many (each is a time series).
   */
  pathAttribute?: boolean;
}

/** What {@link instrumentMetrics} returns. */
export interface MetricsHandle {
  /** The meter the instruments live on. */
  readonly meter: Meter;
  /** Stops recording (unsubscribes from every channel). Idempotent. */
  dispose(): void;
}

/** Names of the instruments, and what they measure (the README has the same table). */
export const METRIC_NAMES = {
  leaderStatus: 'etcd_connector.leader.status',
  leaderTransitions: 'etcd_connector.leader.transitions',
  lockWait: 'etcd_connector.lock.wait',
  lockHeld: 'etcd_connector.lock.held',
  lockLost: 'etcd_connector.lock.lost',
  keepaliveRtt: 'etcd_connector.session.keepalive.rtt',
  sessionLost: 'etcd_connector.session.lost',
  watchResumes: 'etcd_connector.watch.resumes',
  watchResyncs: 'etcd_connector.watch.resyncs',
  watchLag: 'etcd_connector.watch.lag',
  callErrors: 'etcd_connector.call.errors',
} as const;

/**
 * Starts recording the library's diagnostics as OpenTelemetry instruments:
 *
 * | instrument | kind | unit | attributes |
 * | --- | --- | --- | --- |
 * | `etcd_connector.leader.status` | up-down counter: elections this process leads now | | path |
 * | `etcd_connector.leader.transitions` | counter | | path, direction (`gained`/`lost`), reason |
 * | `etcd_connector.lock.wait` | histogram: time to acquire | ms | kind, path |
 * | `etcd_connector.lock.held` | histogram: time held (released or lost) | ms | kind, path, outcome |
 * | `etcd_connector.lock.lost` | counter: locks lost while held | | kind, path |
 * | `etcd_connector.session.keepalive.rtt` | histogram | ms | ttl |
 * | `etcd_connector.session.lost` | counter | | ttl |
 * | `etcd_connector.watch.resumes` | counter: the shared watch stream came back | | |
 * | `etcd_connector.watch.resyncs` | counter: history compacted, range re-listed | | |
 * | `etcd_connector.watch.lag` | histogram: revisions behind etcd at delivery | {revision} | |
 * | `etcd_connector.call.errors` | counter | | code, retryable |
 */
export function instrumentMetrics(options: MetricsOptions = {}): MetricsHandle {
  const provider = options.meterProvider ?? otel.getMeterProvider();
  const meter = provider.getMeter('etcd-connector');
  const withPath = options.pathAttribute ?? true;
  const path = (p: string): Attributes => (withPath ? { path: p } : {});

  const leaderStatus = meter.createUpDownCounter(METRIC_NAMES.leaderStatus, {
    description: 'Elections this process leads now',
  });
  const leaderTransitions = meter.createCounter(METRIC_NAMES.leaderTransitions, {
    description: 'Leadership gained and lost',
  });
  const lockWait = meter.createHistogram(METRIC_NAMES.lockWait, {
    description: 'Time from asking for a lock to holding it',
    unit: 'ms',
  });
  const lockHeld = meter.createHistogram(METRIC_NAMES.lockHeld, {
    description: 'Time a lock was held, until released or lost',
    unit: 'ms',
  });
  const lockLost = meter.createCounter(METRIC_NAMES.lockLost, {
    description: 'Locks lost while held (session lost, key deleted, fence refused)',
  });
  const keepaliveRtt = meter.createHistogram(METRIC_NAMES.keepaliveRtt, {
    description: 'Round trip of a lease keepalive',
    unit: 'ms',
  });
  const sessionLost = meter.createCounter(METRIC_NAMES.sessionLost, {
    description: 'Sessions (leases) lost',
  });
  const watchResumes = meter.createCounter(METRIC_NAMES.watchResumes, {
    description: 'Times the shared watch stream came back and re-created its watches',
  });
  const watchResyncs = meter.createCounter(METRIC_NAMES.watchResyncs, {
    description: 'Times history was compacted away and a range was listed again',
  });
  const watchLag = meter.createHistogram(METRIC_NAMES.watchLag, {
    description: "How far delivered events are behind etcd's revision",
    unit: '{revision}',
  });
  const callErrors = meter.createCounter(METRIC_NAMES.callErrors, {
    description: 'Failed calls to etcd, retried or not',
  });

  const handlers: { [N in DiagnosticChannel]: (m: DiagnosticMessages[N]) => void } = {
    'etcd-connector:session.state': (m) => {
      if (m.state === 'lost') sessionLost.add(1, { ttl: m.ttl });
    },
    'etcd-connector:session.keepalive': (m) => {
      keepaliveRtt.record(m.rttMs, { ttl: m.ttl });
    },
    'etcd-connector:leadership.gained': (m) => {
      leaderStatus.add(1, path(m.path));
      leaderTransitions.add(1, { ...path(m.path), direction: 'gained' });
    },
    'etcd-connector:leadership.lost': (m) => {
      leaderStatus.add(-1, path(m.path));
      leaderTransitions.add(1, { ...path(m.path), direction: 'lost', reason: m.reason });
    },
    'etcd-connector:lock.wait': () => undefined,
    'etcd-connector:lock.acquire': (m) => {
      lockWait.record(m.waitMs, { kind: m.kind, ...path(m.path) });
    },
    'etcd-connector:lock.release': (m) => {
      lockHeld.record(m.heldMs, { kind: m.kind, ...path(m.path), outcome: 'released' });
    },
    'etcd-connector:lock.lost': (m) => {
      lockHeld.record(m.heldMs, { kind: m.kind, ...path(m.path), outcome: 'lost' });
      lockLost.add(1, { kind: m.kind, ...path(m.path) });
    },
    'etcd-connector:watch.resume': () => {
      watchResumes.add(1);
    },
    'etcd-connector:watch.resync': () => {
      watchResyncs.add(1);
    },
    'etcd-connector:watch.delivery': (m) => {
      watchLag.record(m.lagRevisions);
    },
    'etcd-connector:call.error': (m) => {
      callErrors.add(1, { code: m.code, retryable: m.retryable });
    },
  };
  const subscribed: [string, (message: unknown) => void][] = [];
  for (const [name, handler] of Object.entries(handlers)) {
    const listener = handler as (message: unknown) => void;
    subscribe(name, listener);
    subscribed.push([name, listener]);
  }
  let disposed = false;
  return {
    meter,
    dispose() {
      if (disposed) return;
      disposed = true;
      for (const [name, listener] of subscribed) unsubscribe(name, listener);
    },
  };
}

export {
  DIAGNOSTIC_CHANNELS,
  type DiagnosticChannel,
  type DiagnosticMessages,
} from '../diagnostics.js';
