/**
 * Follows an election without taking part (Go's `Election.Observe`, `etcdctl elect --listen`), on
 * the reflector: the candidates under `path + '/'` are listed at one revision and then followed
 * change by change; the leader is the candidate with the lowest create revision. A leader's value
 * change (proclaim) and a leader's departure are both seen in order, and a compaction while cut
 * off leads to a fresh listing — nothing is inferred from a single event.
 */
import type { ConnectorContext } from '../engines/context.js';
import type { StartOptions } from '../engines/lifecycle.js';
import { ReflectedStream } from '../engines/reflected-stream.js';
import type { ReflectorListener } from '../engines/reflector.js';
import { validatePath } from '../paths.js';
import type { RecipeStream, StreamQueue } from '../transport/stream-queue.js';
import { prefixTarget, type WatchEvent } from '../transport/watch-types.js';

/** Who leads an election, as seen by an observer. */
export interface LeaderInfo {
  /** The leader's identity (its key's value), or undefined when nobody campaigns. */
  readonly leader: string | undefined;
  /** The leader key (`path + '/' + leaseId(hex)`). */
  readonly key: string | undefined;
  /** Create revision of the leader key: the leader's fencing token, as a decimal string. */
  readonly revision: string | undefined;
  /**
   * Set while etcd cannot be reached (UnavailableError, TimeoutError; the other fields are the
   * last known state and the observer keeps trying); cleared by the next state.
   */
  readonly error?: Error;
}

interface Candidate {
  readonly createRevision: number;
  value: string;
}

/**
 * Follows who leads the election on `path`, without campaigning. Create it with
 * `conn.newLeaderObserver(path)`; no I/O before `start()`. Also reachable as `elector.observe()`.
 */
export class LeaderObserver implements AsyncDisposable {
  /** The election's key prefix, `path + '/'`. */
  readonly prefix: string;

  private readonly stream: ReflectedStream<LeaderInfo>;
  private readonly candidates = new Map<string, Candidate>();
  private leaderKey: string | undefined;
  private lastEmitted: LeaderInfo | undefined;

  /** @internal Use `conn.newLeaderObserver(path)`. */
  constructor(
    private readonly ctx: ConnectorContext,
    readonly path: string,
  ) {
    validatePath(path, ctx.root);
    this.prefix = path + '/';
    this.stream = new ReflectedStream({ ctx, name: 'leader observer' });
  }

  /**
   * Starts following; the stream yields the leader after the first read and on every change
   * (latest state; a slow reader skips intermediate leaders). It ends on `stop()`, `signal`,
   * `conn.close()` or `break`, and with a final error (permission denied, authentication, TLS).
   *
   * @throws InvalidStateError called twice; ClosedError after `stop()` or the connector's close
   */
  start(options: StartOptions = {}): RecipeStream<LeaderInfo> {
    const range = prefixTarget(this.prefix);
    return this.stream.open(
      options,
      { ctx: this.ctx, what: `observe ${this.path}`, list: [range], watch: range },
      (queue) => this.feed(queue),
    );
  }

  /** The reflector's listener. */
  private feed(queue: StreamQueue<LeaderInfo>): ReflectorListener {
    return {
      onSnapshot: (snapshot) => {
        this.candidates.clear();
        for (const kv of snapshot.kvs) {
          this.candidates.set(kv.key.toString(), {
            createRevision: Number(kv.create_revision),
            value: kv.value.toString(),
          });
        }
        this.leaderKey = this.oldest();
        this.emit(this.info());
      },
      onEvents: (events) => {
        this.apply(events);
      },
      onStatus: (status) => {
        if (status.state === 'unavailable') this.emit({ ...this.info(), error: status.error });
        else this.emit(this.info(), true);
      },
      onEnd: (error) => {
        if (error !== undefined) queue.fail(error);
        void this.stop();
      },
    };
  }

  /** Ends the stream; resolves when no watch or timer of this observer is left. Idempotent. */
  stop(): Promise<void> {
    return this.stream.stop();
  }

  /** Same as `stop()`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  private apply(events: readonly WatchEvent[]): void {
    let leaderGone = false;
    for (const e of events) {
      if (e.type === 'put') {
        const known = this.candidates.get(e.key);
        if (known !== undefined) known.value = e.value;
        else this.candidates.set(e.key, { createRevision: e.createRevision, value: e.value });
        // Nobody led: the first candidate to arrive leads.
        this.leaderKey ??= e.key;
      } else {
        this.candidates.delete(e.key);
        if (e.key === this.leaderKey) leaderGone = true;
      }
    }
    if (leaderGone) this.leaderKey = this.oldest();
    this.emit(this.info());
  }

  /** The candidate with the lowest create revision (O(candidates), only when the leader left). */
  private oldest(): string | undefined {
    let best: string | undefined;
    let bestRevision = Infinity;
    for (const [key, c] of this.candidates) {
      if (c.createRevision < bestRevision) {
        best = key;
        bestRevision = c.createRevision;
      }
    }
    return best;
  }

  private info(): LeaderInfo {
    const key = this.leaderKey;
    const c = key === undefined ? undefined : this.candidates.get(key);
    return {
      leader: c?.value,
      key: c === undefined ? undefined : key,
      revision: c === undefined ? undefined : String(c.createRevision),
    };
  }

  private emit(info: LeaderInfo, force = false): void {
    const last = this.lastEmitted;
    if (
      !force &&
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
    this.stream.push(info);
  }
}
