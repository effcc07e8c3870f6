/**
 * The one watch engine of the library: every watch of a connector shares one gRPC Watch stream
 * (as Go's `watchGrpcStream`), by watch id, and never loses or repeats an event.
 *
 * - **Ids.** Each watch gets an id of ours (`watch_id` in the create request, honoured since etcd
 *   3.4). etcd answers creates in the order it got them, so a `created` answer that carries no
 *   usable id (a refusal says -1; an older server picks its own) belongs to the oldest create in
 *   flight.
 * - **Resume.** A watcher's resume point is *its last delivered event's revision + 1* (etcd3's
 *   own watcher resumes from a response header's revision, which during catch-up runs ahead of
 *   the events sent, and so loses them: docs/faults.md). A header revision is trusted only on a
 *   periodic progress notification of that watcher, which etcd sends in order and only once the
 *   watcher caught up. After the stream breaks, every watcher is created again from its own
 *   resume point.
 * - **Liveness** is probed per stream, not per watch: a stream silent for `silenceMs` gets a
 *   progress request (answered with watch id -1, by a side channel that can overtake events in
 *   etcd 3.4, so it proves liveness only); unanswered for `silenceMs` more, the host's channels
 *   are dropped and the stream re-dialled, possibly to another member.
 * - **Slow consumers** never stall the stream: a paused watcher is cancelled at etcd and created
 *   again from its resume point when its consumer catches up; memory stays bounded.
 * - **No silent waits**: when no stream can be established within `dialTimeoutMs`, every watcher
 *   hears `unavailable` with the reason; a final reason (authentication, TLS, permission) ends
 *   the watchers instead.
 */
import { FilterType, type Etcd3, type IWatchRequest, type IWatchResponse } from 'etcd3';
import { observed, publish } from '../diagnostics.js';
import {
  AuthenticationFailedError,
  ClosedError,
  EtcdConnectorError,
  PermissionDeniedError,
  TlsError,
  RequestFailedError,
  TimeoutError,
  UnavailableError,
} from '../errors.js';
import { applyResponse, matchCreated, type ResumePoint } from './resume-point.js';
import { openStream, type FailureMemory, type OpenedStream } from './rpc.js';
import { Backoff, monotonicMs } from './timers.js';
import type { MuxWatch, WatchListener, WatchStatus, WatchTarget } from './watch-types.js';

export interface WatchMuxOptions {
  client: Etcd3;
  failures: FailureMemory;
  /** Quiet time before probing the stream, and the probe's deadline, in ms. Default 2000. */
  silenceMs?: number;
  /** How long a stream may take to come up before watchers hear `unavailable`. */
  dialTimeoutMs: number;
  /** An unused stream is kept this long, so watches that come and go do not re-dial. */
  lingerMs?: number;
  /**
   * The stream came up, went down, or was closed for want of watches (`idle`: no news about the
   * connection either way). For the connector's connection state.
   */
  onConnection?(state: 'up' | 'down' | 'idle'): void;
}

/** Counters for tests and benchmarks. */
export interface WatchMuxStats {
  /** Watches registered (paused ones included). */
  readonly watchers: number;
  /** gRPC Watch streams opened so far. */
  readonly streamsOpened: number;
  /** A stream is open now. */
  readonly streamOpen: boolean;
  /** Watch create requests sent so far. */
  readonly createsSent: number;
  /** Events received so far (progress notifications carry none). */
  readonly eventsReceived: number;
}

type Opened = OpenedStream<IWatchRequest, IWatchResponse>;

/** Where a watcher stands on the current stream. */
const enum Phase {
  /** Not on the stream: no stream yet, paused, or waiting to be created. */
  Off,
  /** Create sent, `created` not yet received. */
  Creating,
  Active,
}

class Watcher implements MuxWatch, ResumePoint {
  next: number;
  fragments: ResumePoint['fragments'];
  phase = Phase.Off;
  id = '';
  /** Wants to be on the stream (not paused, not closed). */
  wanted = true;
  closed = false;
  /** Kept as given: a string costs less than a pooled Buffer kept alive for the watch's life. */
  readonly key: string | Buffer;
  readonly rangeEnd: Buffer | undefined;
  readonly deletesOnly: boolean;

  constructor(
    private readonly mux: WatchMux,
    target: WatchTarget,
    readonly listener: WatchListener,
  ) {
    this.key = target.key;
    this.rangeEnd = target.rangeEnd;
    this.deletesOnly = target.deletesOnly === true;
    this.next = target.startRevision;
  }

  get nextRevision(): number {
    return this.next;
  }

  pause(): void {
    if (this.closed || !this.wanted) return;
    this.mux.setWanted(this, false);
    this.mux.detach(this);
  }

  resume(): void {
    if (this.closed || this.wanted) return;
    this.mux.setWanted(this, true);
    this.mux.attachWatcher(this);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.mux.setWanted(this, false);
    this.mux.remove(this);
  }
}

/** Watch id etcd uses for answers that belong to no watcher (progress requests, refusals). */
const NO_WATCH = '-1';

export class WatchMux {
  private readonly client: Etcd3;
  private readonly silenceMs: number;
  private readonly lingerMs: number;
  private readonly watchers = new Set<Watcher>();
  private readonly byId = new Map<string, Watcher>();
  /** Creates sent on the current stream and not yet answered, oldest first. */
  private pending: Watcher[] = [];
  private nextId = 1;
  private holds = 0;
  /** Watchers that want to be on the stream (not paused). */
  private wantedCount = 0;
  private stream: Opened | undefined;
  private opening = false;
  private closed = false;
  /** The current stream answered something: it is up. */
  private up = false;
  private streamsOpened = 0;
  private createsSent = 0;
  private eventsReceived = 0;
  private readonly backoff = new Backoff(50, 1000);
  private reconnectTimer: NodeJS.Timeout | undefined;
  private silenceTimer: NodeJS.Timeout | undefined;
  private lingerTimer: NodeJS.Timeout | undefined;
  private dialTimer: NodeJS.Timeout | undefined;
  private lastHeardAt = 0;
  private probeSentAt: number | undefined;
  /** Why the last attempt failed, for the `unavailable` report. */
  private lastError: EtcdConnectorError | undefined;
  /** Watchers were told `unavailable` and wait for `connected`. */
  private reportedDown = false;
  /** When the stream went down after having been up (for the resume diagnostic). */
  private downSince: number | undefined;

  constructor(private readonly opts: WatchMuxOptions) {
    this.client = opts.client;
    this.silenceMs = opts.silenceMs ?? 2000;
    this.lingerMs = opts.lingerMs ?? 5000;
  }

  get stats(): WatchMuxStats {
    return {
      watchers: this.watchers.size,
      streamsOpened: this.streamsOpened,
      streamOpen: this.stream !== undefined,
      createsSent: this.createsSent,
      eventsReceived: this.eventsReceived,
    };
  }

  /** Starts a watch. Does its I/O in the background. */
  watch(target: WatchTarget, listener: WatchListener): MuxWatch {
    if (!Number.isSafeInteger(target.startRevision) || target.startRevision < 0) {
      throw new RangeError(`startRevision must be an integer >= 0, got ${target.startRevision}`);
    }
    const w = new Watcher(this, target, listener);
    if (this.closed) {
      w.closed = true;
      queueMicrotask(() => {
        listener.onEnded(new ClosedError('watch'));
      });
      return w;
    }
    this.watchers.add(w);
    this.wantedCount++;
    this.attachWatcher(w);
    if (this.reportedDown) {
      const error = this.lastError ?? new UnavailableError('watch: etcd is unreachable');
      queueMicrotask(() => {
        if (!w.closed && this.reportedDown) listener.onStatus?.({ state: 'unavailable', error });
      });
    }
    return w;
  }

  /** @internal */
  setWanted(w: Watcher, wanted: boolean): void {
    if (w.wanted === wanted) return;
    w.wanted = wanted;
    this.wantedCount += wanted ? 1 : -1;
  }

  /**
   * Keeps the stream open without a watch (its liveness probe then tells the connection's state).
   * Returns the release function.
   */
  hold(): () => void {
    this.holds++;
    this.ensureStream();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holds--;
      this.maybeLinger();
    };
  }

  /** Ends every watch (with ClosedError) and the stream. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const all = [...this.watchers];
    this.dropStream(false);
    this.clearTimers();
    for (const w of all) this.end(w, new ClosedError('watch'));
  }

  /** @internal Puts a wanted watcher on the stream (creating the stream if needed). */
  attachWatcher(w: Watcher): void {
    if (this.closed || w.closed || !w.wanted) return;
    this.cancelLinger();
    const s = this.stream;
    if (s === undefined) {
      this.ensureStream();
      return;
    }
    // Paused and resumed before its create was answered: the create still stands.
    if (w.phase === Phase.Off) this.sendCreate(s, w);
  }

  /** @internal Takes a watcher off the stream (pause or close); it stays registered if paused. */
  detach(w: Watcher): void {
    w.fragments = undefined;
    if (w.phase === Phase.Active) {
      this.byId.delete(w.id);
      w.phase = Phase.Off;
      this.stream?.stream.write({ cancel_request: { watch_id: w.id } });
    }
    // A watcher still Creating is cancelled when its `created` arrives (it is no longer wanted).
  }

  /** @internal */
  remove(w: Watcher): void {
    this.detach(w);
    this.watchers.delete(w);
    this.maybeLinger();
  }

  private ensureStream(): void {
    if (this.closed || this.stream !== undefined || this.opening) return;
    if (this.reconnectTimer !== undefined) return;
    this.connect();
  }

  private connect(): void {
    if (this.closed || this.stream !== undefined || this.opening) return;
    if (!this.needed()) return;
    this.opening = true;
    this.armDialTimer();
    openStream<IWatchRequest, IWatchResponse>(this.client, 'Watch', 'watch', {
      requireLeader: true,
    }).then(
      (opened) => {
        this.opening = false;
        if (this.closed || !this.needed()) {
          cancel(opened);
          return;
        }
        this.attachStream(opened);
      },
      (err: unknown) => {
        this.opening = false;
        this.failed(err);
      },
    );
  }

  /** A stream is wanted: by a watcher that is not paused, or by a hold. */
  private needed(): boolean {
    return this.holds > 0 || this.wantedCount > 0;
  }

  private attachStream(opened: Opened): void {
    this.stream = opened;
    this.streamsOpened++;
    this.up = false;
    this.pending = [];
    this.byId.clear();
    this.probeSentAt = undefined;
    this.lastHeardAt = monotonicMs();
    const { stream } = opened;
    stream.on('data', (res: IWatchResponse) => {
      if (this.stream === opened) this.onResponse(res);
    });
    const onBroken = (err?: unknown): void => {
      if (this.stream !== opened) return;
      this.dropStream(false);
      this.failed(err ?? new UnavailableError('the watch stream ended'));
    };
    // Always listening for 'error': a cancelled stream still emits one.
    stream.on('error', onBroken);
    stream.on('end', () => {
      onBroken();
    });
    for (const w of this.watchers) {
      w.phase = Phase.Off;
      w.fragments = undefined;
      if (w.wanted) this.sendCreate(opened, w);
    }
    if (this.holds > 0 && this.pending.length === 0) {
      // Nothing to create: ask for progress so the stream proves itself at once.
      this.probeSentAt = monotonicMs();
      stream.write({ progress_request: {} });
    }
    this.armSilence(this.silenceMs);
  }

  private sendCreate(s: Opened, w: Watcher): void {
    const id = String(this.nextId++);
    w.id = id;
    w.phase = Phase.Creating;
    w.fragments = undefined;
    this.byId.set(id, w);
    this.pending.push(w);
    this.createsSent++;
    s.stream.write({
      create_request: {
        key: typeof w.key === 'string' ? Buffer.from(w.key) : w.key,
        ...(w.rangeEnd === undefined ? {} : { range_end: w.rangeEnd }),
        start_revision: String(w.next),
        progress_notify: true,
        prev_kv: false,
        ...(w.deletesOnly ? { filters: [FilterType.Noput] } : {}),
        // Huge revisions come in pieces we reassemble, instead of one message over gRPC's limit.
        fragment: true,
        watch_id: id,
      },
    });
  }

  private onResponse(res: IWatchResponse): void {
    this.lastHeardAt = monotonicMs();
    this.probeSentAt = undefined;
    if (!this.up) this.streamUp();
    if (res.created) {
      this.onCreated(res);
      return;
    }
    const id = res.watch_id;
    if (id === NO_WATCH) return; // a progress request's answer: liveness only
    const w = this.byId.get(id);
    // Unknown: cancelled by us meanwhile (its late events are below no one's resume point).
    if (w?.phase !== Phase.Active) return;
    const compactRevision = Number(res.compact_revision);
    if (compactRevision > 0) {
      this.byId.delete(id);
      this.finish(w);
      safely(() => {
        w.listener.onCompacted(compactRevision);
      });
      return;
    }
    if (res.canceled) {
      // etcd ended the watch for a reason of its own (e.g. permissions changed).
      this.byId.delete(id);
      this.end(w, cancelError(res.cancel_reason));
      return;
    }
    this.deliver(w, res);
  }

  private onCreated(res: IWatchResponse): void {
    const w = matchCreated(this.pending, (id) => this.byId.get(id), res.watch_id);
    if (w === undefined) return;
    const i = this.pending.indexOf(w);
    if (i !== -1) this.pending.splice(i, 1);
    this.byId.delete(w.id);
    const compactRevision = Number(res.compact_revision);
    if (compactRevision > 0 || res.canceled) {
      // Refused at creation (compacted history, permissions): the watch ends, unless the
      // watcher was closed meanwhile (then nobody is listening).
      const wasClosed = w.closed;
      this.finish(w);
      if (wasClosed) return;
      if (compactRevision > 0) {
        safely(() => {
          w.listener.onCompacted(compactRevision);
        });
      } else {
        safely(() => {
          w.listener.onEnded(cancelError(res.cancel_reason));
        });
      }
      return;
    }
    // An older etcd picks its own ids.
    w.id = res.watch_id;
    if (!w.wanted) {
      w.phase = Phase.Off;
      this.stream?.stream.write({ cancel_request: { watch_id: w.id } });
      return;
    }
    w.phase = Phase.Active;
    this.byId.set(w.id, w);
    const revision = Number(res.header.revision);
    // From now: etcd started it at its revision + 1; a reconnect resumes from there, not from now.
    if (w.next === 0) w.next = revision + 1;
    const l = w.listener;
    if (l.onCreated !== undefined) {
      safely(() => {
        l.onCreated?.(revision);
      });
    }
  }

  private deliver(w: Watcher, res: IWatchResponse): void {
    const d = applyResponse(w, res);
    const l = w.listener;
    if (d.kind === 'events') {
      this.eventsReceived += d.events.length;
      if (observed('etcd-connector:watch.delivery')) {
        const last = d.events[d.events.length - 1]?.revision ?? 0;
        const lagRevisions = Math.max(0, Number(res.header.revision) - last);
        publish('etcd-connector:watch.delivery', () => ({ events: d.events.length, lagRevisions }));
      }
      safely(() => {
        l.onEvents(d.events);
      });
    } else if (d.kind === 'progress' && l.onProgress !== undefined) {
      safely(() => {
        l.onProgress?.(d.revision);
      });
    }
  }

  private streamUp(): void {
    if (this.downSince !== undefined) {
      const downMs = monotonicMs() - this.downSince;
      publish('etcd-connector:watch.resume', () => ({ watchers: this.watchers.size, downMs }));
      this.downSince = undefined;
    }
    this.up = true;
    this.backoff.reset();
    this.lastError = undefined;
    clearTimeout(this.dialTimer);
    this.dialTimer = undefined;
    this.opts.onConnection?.('up');
    if (this.reportedDown) {
      this.reportedDown = false;
      this.broadcast({ state: 'connected' });
    }
  }

  /** Opening or running the stream failed: final errors end the watchers, others retry. */
  private failed(err: unknown): void {
    if (this.closed) return;
    const error = this.opts.failures.toError(err, 'watch');
    this.lastError = error;
    if (this.up) {
      this.up = false;
      this.downSince = monotonicMs();
      this.opts.onConnection?.('down');
      this.armDialTimer();
    }
    if (isFinalForStreams(error)) {
      // Wrong password, rejected TLS material: every watcher ends; a new watch tries again.
      const all = [...this.watchers];
      clearTimeout(this.dialTimer);
      this.dialTimer = undefined;
      for (const w of all) this.end(w, error);
      return;
    }
    this.scheduleReconnect();
  }

  /** Reports `unavailable` to every watcher if no stream came up within the dial timeout. */
  private armDialTimer(): void {
    if (this.dialTimer !== undefined || this.reportedDown) return;
    this.dialTimer = setTimeout(() => {
      this.dialTimer = undefined;
      if (this.closed || this.up) return;
      this.reportedDown = true;
      const error =
        this.lastError ??
        new TimeoutError(`watch: no answer from etcd within ${this.opts.dialTimeoutMs} ms`);
      this.broadcast({ state: 'unavailable', error });
    }, this.opts.dialTimeoutMs);
  }

  private broadcast(status: WatchStatus): void {
    for (const w of [...this.watchers]) {
      const l = w.listener;
      if (l.onStatus !== undefined) {
        safely(() => {
          l.onStatus?.(status);
        });
      }
    }
  }

  /** Drops the current stream (and with `resetHost` the host's channels). */
  private dropStream(resetHost: boolean): void {
    const s = this.stream;
    if (s === undefined) return;
    this.stream = undefined;
    this.pending = [];
    this.byId.clear();
    for (const w of this.watchers) {
      w.phase = Phase.Off;
      w.fragments = undefined;
    }
    clearTimeout(this.silenceTimer);
    this.silenceTimer = undefined;
    if (resetHost) s.resetHost();
    cancel(s);
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer !== undefined || !this.needed()) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.connect();
    }, this.backoff.next());
  }

  private armSilence(ms: number): void {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(
      () => {
        this.silenceTimer = undefined;
        this.checkSilence();
      },
      Math.max(1, ms),
    );
  }

  /** Quiet or dead? Probe a quiet stream; drop one whose probe went unanswered. */
  private checkSilence(): void {
    const s = this.stream;
    if (this.closed || s === undefined) return;
    const now = monotonicMs();
    if (this.probeSentAt !== undefined) {
      const waited = now - this.probeSentAt;
      if (waited >= this.silenceMs) {
        this.dropStream(true);
        this.failed(
          new UnavailableError(`watch: no answer from etcd for ${Math.round(waited)} ms`),
        );
        return;
      }
      this.armSilence(this.silenceMs - waited);
      return;
    }
    const quiet = now - this.lastHeardAt;
    if (quiet < this.silenceMs) {
      this.armSilence(this.silenceMs - quiet);
      return;
    }
    this.probeSentAt = now;
    s.stream.write({ progress_request: {} });
    this.armSilence(this.silenceMs);
  }

  /** Closes an unused stream after the linger time. */
  private maybeLinger(): void {
    if (this.closed || this.needed() || this.lingerTimer !== undefined) return;
    if (this.stream === undefined && !this.opening) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = undefined;
      return;
    }
    this.lingerTimer = setTimeout(() => {
      this.lingerTimer = undefined;
      if (this.needed()) return;
      // Paused watchers stay registered; they re-open a stream when they resume.
      const wasUp = this.up;
      this.dropStream(false);
      this.up = false;
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = undefined;
      if (wasUp) this.opts.onConnection?.('idle');
    }, this.lingerMs);
    this.lingerTimer.unref();
  }

  private cancelLinger(): void {
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
  }

  /** Takes a watcher out of the bookkeeping (it ended). */
  private finish(w: Watcher): void {
    w.phase = Phase.Off;
    w.closed = true;
    this.setWanted(w, false);
    this.watchers.delete(w);
    this.maybeLinger();
  }

  private end(w: Watcher, error: EtcdConnectorError): void {
    this.finish(w);
    safely(() => {
      w.listener.onEnded(error);
    });
  }

  private clearTimers(): void {
    for (const t of [this.reconnectTimer, this.silenceTimer, this.lingerTimer, this.dialTimer]) {
      clearTimeout(t);
    }
    this.reconnectTimer = this.silenceTimer = this.lingerTimer = this.dialTimer = undefined;
  }
}

/** A listener's bug must not break the stream that every other watch shares. */
function safely(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    queueMicrotask(() => {
      throw err;
    });
  }
}

/**
 * Failures of the stream that retrying cannot fix: credentials and TLS material. Anything else
 * (a member going away, an error we do not know) is retried on a fresh stream.
 */
function isFinalForStreams(error: EtcdConnectorError): boolean {
  return (
    error instanceof AuthenticationFailedError ||
    error instanceof PermissionDeniedError ||
    error instanceof TlsError
  );
}

function cancelError(reason: string): EtcdConnectorError {
  const text = reason === '' ? 'no reason given' : reason;
  if (/permission denied/i.test(text)) {
    return new PermissionDeniedError(`etcd refused the watch: ${text}`);
  }
  return new RequestFailedError(`etcd canceled the watch: ${text}`);
}

function cancel(s: Opened): void {
  try {
    s.stream.cancel();
  } catch {
    // already closed
  }
}
