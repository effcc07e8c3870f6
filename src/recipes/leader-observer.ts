/**
 * Follows an election without taking part (Go's `Election.Observe`, `etcdctl elect --listen`):
 * reads the oldest key under `path + '/'`, then watches the prefix from just after that read.
 * A put on the leader key updates its value; the leader key's deletion triggers a re-read (who is
 * next is not in the event); a put while nobody leads is the new leader. Events at or below the
 * last read's revision are already in that read and are skipped, so nothing is applied twice.
 */
import { ClosedError, InvalidStateError } from '../errors.js';
import { AsyncQueue } from '../internal/async-queue.js';
import type { ConnectorContext } from '../internal/context.js';
import { toConnectorError } from '../internal/etcd-rpc.js';
import { Backoff, delay, isAborted } from '../internal/timers.js';
import { firstCreated, Latch } from '../internal/wait-delete.js';
import { openWatch, type WatchEvent, type WatchStream } from '../internal/watch-stream.js';
import { validatePath } from '../paths.js';

/** Who leads an election, as seen by an observer. */
export interface LeaderInfo {
  /** The leader's identity (its key's value), or undefined when nobody campaigns. */
  readonly leader: string | undefined;
  /** The leader key (`path + '/' + leaseId(hex)`). */
  readonly key: string | undefined;
  /** Create revision of the leader key: the leader's fencing token, as a decimal string. */
  readonly revision: string | undefined;
  /** Set when etcd could not be read; the other fields are the last known state. */
  readonly error?: Error;
}

/** Options of {@link LeaderObserver.start}. */
export interface LeaderObserverStartOptions {
  /** Stops the observer when it fires. */
  signal?: AbortSignal;
}

interface Leader {
  key: string;
  value: string;
  revision: string;
}

/**
 * Follows who leads the election on `path`, without campaigning. The constructor does no I/O.
 * Also reachable as `elector.observe()`.
 */
export class LeaderObserver implements AsyncDisposable {
  /** The election's key prefix, `path + '/'`. */
  readonly prefix: string;
  /** Resolves when the observer has stopped (after `stop()`, `signal`, or leaving the loop). */
  readonly done: Promise<void>;

  private queue: AsyncQueue<LeaderInfo> | undefined;
  private readonly controller = new AbortController();
  private readonly wake = new Latch();
  private running: Promise<void> = Promise.resolve();
  private stopping: Promise<void> | undefined;
  private untrack: (() => void) | undefined;
  private resolveDone!: () => void;
  private current: Leader | undefined;
  /** Events up to this revision are in the last read. */
  private readRevision = 0;
  /** The leader key was deleted: only a read can tell who is next. */
  private needRead = false;
  /** Events that arrive during a re-read wait here, to be applied on top of it. */
  private held: WatchEvent[] | undefined;
  /** Set by the watch when its history is gone (an object: written from a callback). */
  private readonly watchState = { compacted: false };
  private lastEmitted: LeaderInfo | undefined;

  constructor(
    private readonly ctx: ConnectorContext,
    readonly path: string,
  ) {
    validatePath(path, ctx.root);
    this.prefix = path + '/';
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
  }

  /**
   * Starts following; the stream yields the leader after the first read and on every change
   * (latest state; a slow reader skips intermediate leaders).
   *
   * @throws InvalidStateError called twice; ClosedError after `stop()` or the connector's close
   */
  start(options: LeaderObserverStartOptions = {}): AsyncIterable<LeaderInfo> {
    this.ctx.assertOpen();
    if (this.stopping !== undefined) throw new ClosedError('leader observer');
    if (this.queue !== undefined) throw new InvalidStateError('start() was already called');
    this.queue = new AsyncQueue<LeaderInfo>({
      capacity: 4,
      overflow: 'coalesce',
      keep: (i) => i.error !== undefined,
      onReturn: () => void this.stop(),
    });
    this.untrack = this.ctx.track({ close: () => this.stop() });
    const { signal } = options;
    if (signal !== undefined) {
      if (signal.aborted) void this.stop();
      else signal.addEventListener('abort', () => void this.stop(), { once: true });
    }
    this.running = this.run(this.controller.signal);
    return this.queue;
  }

  /** Ends the stream; resolves when no watch or timer of this observer is left. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.controller.abort(new ClosedError('leader observer'));
      this.wake.fire();
      await this.running;
      this.queue?.end();
      this.untrack?.();
      this.resolveDone();
    })();
    return this.stopping;
  }

  /** Same as `stop()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  private async run(signal: AbortSignal): Promise<void> {
    const backoff = new Backoff(100, 2000);
    while (!signal.aborted) {
      let stream: WatchStream | undefined;
      try {
        this.held = undefined;
        await this.read();
        backoff.reset();
        this.watchState.compacted = false;
        stream = openWatch({
          client: this.ctx.client,
          key: this.prefix,
          prefix: true,
          startRevision: this.readRevision + 1,
          onEvents: (events) => {
            this.onEvents(events);
          },
          onCompacted: () => {
            this.watchState.compacted = true;
            this.wake.fire();
          },
        });
        for (;;) {
          this.wake.reset();
          if (isAborted(signal) || this.compactedNow()) break;
          if (this.needRead) {
            this.held = [];
            await this.read();
            const held = this.held;
            this.held = undefined;
            this.onEvents(held);
            continue;
          }
          await this.wake.wait();
        }
      } catch (err) {
        if (isAborted(signal)) break;
        this.emit({ ...this.info(), error: toConnectorError(err, `observe ${this.path}`) });
        await delay(backoff.next(), signal).catch(() => undefined);
      } finally {
        await stream?.close();
      }
    }
  }

  private compactedNow(): boolean {
    return this.watchState.compacted;
  }

  /** Reads the oldest key; its revision becomes the floor for the events applied after it. */
  private async read(): Promise<void> {
    const res = await this.ctx.client.kv.range(firstCreated(this.prefix), this.ctx.callOptions());
    const kv = res.kvs[0];
    this.current =
      kv === undefined
        ? undefined
        : { key: kv.key.toString(), value: kv.value.toString(), revision: kv.create_revision };
    this.readRevision = Number(res.header.revision);
    this.needRead = false;
    this.emit(this.info());
  }

  private onEvents(events: readonly WatchEvent[]): void {
    if (this.held !== undefined) {
      this.held.push(...events);
      return;
    }
    for (const e of events) {
      if (e.revision <= this.readRevision || this.needRead) continue;
      const cur = this.current;
      if (cur === undefined) {
        // Nobody led, so this key is the only one: it leads.
        if (e.type === 'put') {
          this.current = { key: e.key, value: e.value, revision: String(e.createRevision) };
        }
      } else if (e.key === cur.key) {
        if (e.type === 'delete') {
          this.needRead = true;
          this.wake.fire();
        } else {
          this.current = { ...cur, value: e.value };
        }
      }
    }
    if (!this.needRead) this.emit(this.info());
  }

  private info(): LeaderInfo {
    const cur = this.current;
    return { leader: cur?.value, key: cur?.key, revision: cur?.revision };
  }

  private emit(info: LeaderInfo): void {
    const last = this.lastEmitted;
    if (
      info.error === undefined &&
      last !== undefined &&
      last.error === undefined &&
      last.key === info.key &&
      last.leader === info.leader &&
      last.revision === info.revision
    ) {
      return;
    }
    this.lastEmitted = info;
    this.queue?.push(info);
  }
}
