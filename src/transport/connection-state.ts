/**
 * The connector's connection state in Apache Curator's vocabulary, derived from what the shared
 * streams see: the watch stream (its liveness probe) and every session's keepalive stream.
 *
 * - `connected`: the first stream came up.
 * - `suspended`: a stream went silent or broke; leases may be about to expire ("leaders and lock
 *   holders should pause").
 * - `lost`: a session's lease was lost ("consider leadership and locks gone").
 * - `reconnected`: every stream is up again after `suspended` or `lost` ("re-check, don't
 *   assume": the recipes re-check by themselves).
 */
import { StreamQueue, type RecipeStream } from './stream-queue.js';

export type ConnectionState = 'connected' | 'suspended' | 'lost' | 'reconnected';

/** How many undelivered states a slow reader keeps; `lost` is never dropped. */
const CAPACITY = 8;

export class ConnectionMonitor {
  private readonly sources = new Map<object, boolean>();
  private current: ConnectionState | undefined;
  private readonly subscribers = new Set<StreamQueue<ConnectionState>>();

  /** The latest state, or undefined before any stream came up. */
  get state(): ConnectionState | undefined {
    return this.current;
  }

  /** A stream reports that it is up (answering) or down (silent, broken, unreachable). */
  set(source: object, up: boolean): void {
    const before = this.sources.get(source);
    this.sources.set(source, up);
    if (before !== up) this.recompute();
  }

  /** A source ended (closed, or idle): it no longer says anything about the connection. */
  remove(source: object): void {
    if (this.sources.delete(source)) this.recompute();
  }

  /** A session's lease was lost. */
  lost(source: object): void {
    this.sources.delete(source);
    this.emit('lost');
    this.recompute();
  }

  /**
   * The states from now on; the current one first if known. Ends with `close()` or when the
   * reader leaves (then `onLeave` runs).
   */
  subscribe(onLeave: () => void): RecipeStream<ConnectionState> {
    const queue: StreamQueue<ConnectionState> = new StreamQueue<ConnectionState>({
      capacity: CAPACITY,
      overflow: 'coalesce',
      keep: (s) => s === 'lost',
      onReturn: () => {
        this.subscribers.delete(queue);
        onLeave();
      },
    });
    if (this.current !== undefined) queue.push(this.current);
    this.subscribers.add(queue);
    void queue.closed.then(() => this.subscribers.delete(queue));
    return queue;
  }

  /** Ends one subscription. */
  end(stream: RecipeStream<ConnectionState>): void {
    for (const q of this.subscribers) {
      if (q === stream) {
        this.subscribers.delete(q);
        q.end();
      }
    }
  }

  /** Ends every subscription. */
  close(): void {
    for (const q of [...this.subscribers]) q.end();
    this.subscribers.clear();
  }

  private recompute(): void {
    let anyDown = false;
    let anyUp = false;
    for (const up of this.sources.values()) {
      if (up) anyUp = true;
      else anyDown = true;
    }
    const c = this.current;
    if (c === undefined) {
      if (anyUp && !anyDown) this.emit('connected');
    } else if (c === 'connected' || c === 'reconnected') {
      if (anyDown) this.emit('suspended');
    } else if (anyUp && !anyDown) {
      this.emit('reconnected');
    }
  }

  private emit(state: ConnectionState): void {
    if (state === this.current && state !== 'lost') return;
    this.current = state;
    for (const q of this.subscribers) q.push(state);
  }
}
