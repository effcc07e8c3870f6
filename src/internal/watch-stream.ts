/**
 * The one watch engine of the library: a raw etcd watch that never loses or repeats an event.
 *
 * etcd3's own Watcher resumes from the last response header's revision + 1, but during catch-up
 * the header runs ahead of the events actually sent, so a cut connection loses them (FAULTS.md).
 * Here the resume point is always *the last delivered event's revision + 1*; a header revision is
 * trusted only on a periodic progress notification of our own watcher, which etcd sends through the
 * same ordered channel as the events and only once the watcher has caught up.
 *
 * A blackholed connection (socket open, nothing flowing) looks like a quiet key, so after
 * `silenceMs` without a response the engine asks for a progress response (`progress_request`); if
 * that gets no answer within `silenceMs` either, it drops the host's channels and reconnects.
 * etcd 3.4 answers a progress request from a side channel that can overtake events (etcd issue
 * 15220), so such an answer proves liveness only and never moves the resume point.
 */
import { Range, type Etcd3, type IEvent, type IWatchRequest, type IWatchResponse } from 'etcd3';
import { openStream, type OpenedStream } from './etcd-rpc.js';
import { Backoff, monotonicMs } from './timers.js';

/** One change of one key, as etcd reported it. */
export interface WatchEvent {
  type: 'put' | 'delete';
  /** Full etcd key, utf8. */
  key: string;
  /** `''` for a delete. */
  value: string;
  /** Mod revision of the event. */
  revision: number;
  /** `0` for a delete. */
  createRevision: number;
  version: number;
  /** Lease id as a decimal string (`'0'` when none). */
  lease: string;
}

/** What to watch, from where, and whom to tell. */
export interface WatchStreamOptions {
  client: Etcd3;
  key: string;
  /** Watch the raw etcd prefix range of `key` exactly as given (pass `'path/'` for children). */
  prefix: boolean;
  /** First revision to deliver (>= 1). */
  startRevision: number;
  /** Events in revision order, never repeated, never skipped; one revision's events together. */
  onEvents(events: readonly WatchEvent[]): void;
  /**
   * History before the resume point is gone; the stream has stopped. The caller re-lists and opens
   * a new one.
   */
  onCompacted(compactRevision: number): void;
  /**
   * etcd canceled the watch for another reason (e.g. permission denied); the stream has stopped.
   * Without this callback the engine retries on a fresh stream with backoff, forever.
   */
  onCanceled?(reason: string): void;
  /**
   * Everything up to `revision` has been delivered. Comes from etcd's periodic progress
   * notifications only (`--experimental-watch-progress-notify-interval`, default 10 min).
   */
  onProgress?(revision: number): void;
  onStateChange?(state: 'connected' | 'reconnecting'): void;
  /** Quiet time before probing the stream, and the probe's deadline, in ms. Default 2000. */
  silenceMs?: number;
}

/** A running watch; see {@link openWatch}. */
export interface WatchStream {
  /** Stops reading from etcd (HTTP/2 flow control then throttles the server). */
  pause(): void;
  resume(): void;
  /** The revision the watch continues from: last delivered event's revision + 1. */
  readonly nextRevision: number;
  /** Cancels the stream and clears every timer; resolves when nothing is left. Idempotent. */
  close(): Promise<void>;
}

type Opened = OpenedStream<IWatchRequest, IWatchResponse>;

/** Opens a gap-free watch; see {@link WatchStreamOptions}. Does its I/O in the background. */
export function openWatch(options: WatchStreamOptions): WatchStream {
  if (!Number.isSafeInteger(options.startRevision) || options.startRevision < 1) {
    throw new RangeError(`startRevision must be an integer >= 1, got ${options.startRevision}`);
  }
  return new Watch(options);
}

class Watch implements WatchStream {
  private next: number;
  private readonly keyBytes: Buffer;
  private readonly rangeEnd: Buffer | undefined;
  private readonly silenceMs: number;
  private readonly backoff = new Backoff(50, 1000);
  private stopped = false;
  private closing: Promise<void> | undefined;
  private paused = false;
  private current: Opened | undefined;
  private opening: Promise<void> | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private silenceTimer: NodeJS.Timeout | undefined;
  private lastHeardAt = 0;
  private probeSentAt: number | undefined;
  private watchId: string | undefined;
  /** Events of a fragmented response, held until its last fragment. */
  private fragments: IEvent[] = [];
  private state: 'connected' | 'reconnecting' | undefined;

  constructor(private readonly opts: WatchStreamOptions) {
    this.next = opts.startRevision;
    this.keyBytes = Buffer.from(opts.key);
    this.rangeEnd = opts.prefix ? Range.prefix(this.keyBytes).end : undefined;
    this.silenceMs = opts.silenceMs ?? 2000;
    this.connect();
  }

  get nextRevision(): number {
    return this.next;
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.current?.stream.pause?.();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    // Nothing was read while paused: silence only counts from now.
    this.lastHeardAt = monotonicMs();
    this.probeSentAt = undefined;
    this.current?.stream.resume?.();
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.halt();
    await this.opening;
  }

  /** Stops everything synchronously; an open in flight cancels its stream on arrival. */
  private halt(): void {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.silenceTimer);
    this.reconnectTimer = this.silenceTimer = undefined;
    const s = this.current;
    this.current = undefined;
    if (s !== undefined) cancel(s);
  }

  private connect(): void {
    if (this.stopped || this.current !== undefined || this.opening !== undefined) return;
    this.opening = openStream<IWatchRequest, IWatchResponse>(this.opts.client, 'Watch', 'watch', {
      requireLeader: true,
    }).then(
      (opened) => {
        this.opening = undefined;
        if (this.stopped) cancel(opened);
        else this.attach(opened);
      },
      () => {
        this.opening = undefined;
        this.scheduleReconnect();
      },
    );
  }

  private attach(opened: Opened): void {
    this.current = opened;
    this.fragments = [];
    this.watchId = undefined;
    this.probeSentAt = undefined;
    this.lastHeardAt = monotonicMs();
    const { stream } = opened;
    stream.on('data', (res: IWatchResponse) => {
      if (this.current === opened) this.onResponse(res);
    });
    const onBroken = (): void => {
      if (this.current === opened) this.drop(false);
    };
    // Always listening for 'error': a cancelled stream still emits one.
    stream.on('error', onBroken);
    stream.on('end', onBroken);
    if (this.paused) stream.pause?.();
    stream.write({
      create_request: {
        key: this.keyBytes,
        ...(this.rangeEnd === undefined ? {} : { range_end: this.rangeEnd }),
        start_revision: String(this.next),
        progress_notify: true,
        prev_kv: false,
        // Huge revisions come in pieces we reassemble, instead of one message over gRPC's limit.
        fragment: true,
      },
    });
    this.armSilence(this.silenceMs);
  }

  private onResponse(res: IWatchResponse): void {
    this.lastHeardAt = monotonicMs();
    this.probeSentAt = undefined;
    const compactRevision = Number(res.compact_revision);
    if (compactRevision > 0) {
      // Canceled by etcd: history from our resume point is gone. Stop before telling the caller.
      this.halt();
      this.opts.onCompacted(compactRevision);
      return;
    }
    if (res.canceled) {
      // Not a compaction (e.g. permissions): the caller decides, or we try a fresh stream.
      if (this.opts.onCanceled === undefined) {
        this.drop(false);
      } else {
        this.halt();
        this.opts.onCanceled(res.cancel_reason === '' ? 'no reason given' : res.cancel_reason);
      }
      return;
    }
    if (res.created) {
      this.watchId = res.watch_id;
      this.backoff.reset();
      this.setState('connected');
      return;
    }
    // A progress request's answer (watch id -1) may overtake events in etcd 3.4: liveness only.
    if (res.watch_id !== this.watchId) return;
    if (res.fragment) {
      this.fragments.push(...res.events);
      return;
    }
    let raw = res.events;
    if (this.fragments.length > 0) {
      raw = this.fragments.concat(raw);
      this.fragments = [];
    }
    if (raw.length === 0) {
      // A periodic progress notification: sent in order, and only once the watcher caught up.
      const revision = Number(res.header.revision);
      if (revision + 1 > this.next) this.next = revision + 1;
      this.opts.onProgress?.(revision);
      return;
    }
    const events: WatchEvent[] = [];
    for (const e of raw) {
      const ev = toEvent(e);
      // Never repeat: anything below the resume point was delivered already.
      if (ev.revision >= this.next) events.push(ev);
    }
    const last = events[events.length - 1];
    if (last === undefined) return;
    this.next = last.revision + 1;
    this.opts.onEvents(events);
  }

  /** Drops the current stream (and with `resetHost` the host's channels) and reconnects. */
  private drop(resetHost: boolean): void {
    const s = this.current;
    if (s === undefined) return;
    this.current = undefined;
    this.fragments = [];
    clearTimeout(this.silenceTimer);
    this.silenceTimer = undefined;
    if (resetHost) s.resetHost();
    cancel(s);
    this.setState('reconnecting');
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer !== undefined) return;
    this.setState('reconnecting');
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
    const s = this.current;
    if (this.stopped || s === undefined) return;
    const now = monotonicMs();
    if (this.paused) {
      // We are not reading, so silence means nothing; look again later.
      this.armSilence(this.silenceMs);
      return;
    }
    if (this.probeSentAt !== undefined) {
      const waited = now - this.probeSentAt;
      if (waited >= this.silenceMs) {
        this.drop(true);
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

  private setState(state: 'connected' | 'reconnecting'): void {
    if (this.state === state || this.stopped) return;
    this.state = state;
    this.opts.onStateChange?.(state);
  }
}

function cancel(s: Opened): void {
  try {
    s.stream.cancel();
  } catch {
    // already closed
  }
}

function toEvent(e: IEvent): WatchEvent {
  const kv = e.kv;
  const isDelete = e.type === 'Delete';
  return {
    type: isDelete ? 'delete' : 'put',
    key: kv.key.toString('utf8'),
    value: isDelete ? '' : kv.value.toString('utf8'),
    revision: Number(kv.mod_revision),
    createRevision: isDelete ? 0 : Number(kv.create_revision),
    version: isDelete ? 0 : Number(kv.version),
    lease: isDelete ? '0' : kv.lease,
  };
}
