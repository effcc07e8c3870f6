/**
 * An in-process FIFO in front of an etcd key that several callers would share.
 *
 * Go's Mutex key is `path/<lease hex>`, and a connector shares one session (lease) per TTL among
 * all its recipes: two `lock()` calls of one connector on one path would name the *same* key, and
 * both would believe they hold it (Go has the same trap with two Mutexes on one Session). So the
 * caller that wants such a key first passes this gate, one at a time per connector and key, and
 * leaves it only once the key is gone from etcd (or its session ended). In-process waiters queue
 * here without extra etcd keys; etcd's queue still sees one key per process in arrival order.
 *
 * The caller inside may also hand the gate over: the first waiter comes in with what the caller
 * gives it (a mutex's release that queued that waiter in the same transaction,
 * engines/lock-handoff.ts), and the caller's own `leave` does nothing any more.
 */
import { AbortError } from '../errors.js';

/** What a caller gets when it comes in. */
export interface GatePass<H> {
  /** Lets the next caller in (idempotent; nothing once the gate was handed over). */
  readonly leave: () => void;
  /** What the caller before it handed over, if it came in that way. */
  readonly handoff?: H;
}

interface Waiter<H> {
  /** Takes a hand-over (false: wants to come in only by the gate's normal turn). */
  readonly acceptsHandoff: boolean;
  admit(handoff?: H): void;
}

interface Gate<H> {
  readonly queue: Waiter<H>[];
  /** Who is inside: only its `leave` counts. */
  occupant: object;
}

/** One gate per connector and key; a gate with nobody in it or before it is forgotten. */
export class LocalGates<H = never> {
  private readonly gates = new Map<string, Gate<H>>();

  /**
   * Waits until the gate of `key` is ours (first come, first served).
   *
   * @param acceptsHandoff this caller may come in by a hand-over (see the file comment)
   * @throws AbortError `signal` fired first (nothing is held then)
   */
  enter(key: string, signal?: AbortSignal, acceptsHandoff = false): Promise<GatePass<H>> {
    const leave = this.tryEnter(key);
    if (leave !== undefined) return Promise.resolve({ leave });
    if (signal?.aborted === true) return Promise.reject(new AbortError({ cause: signal.reason }));
    const gate = this.gates.get(key);
    if (gate === undefined) throw new Error('unreachable: a busy gate has a queue');
    return new Promise((resolve, reject) => {
      const waiter: Waiter<H> = {
        acceptsHandoff,
        admit: (handoff) => {
          signal?.removeEventListener('abort', onAbort);
          const pass = { leave: this.occupy(key, gate) };
          resolve(handoff === undefined ? pass : { ...pass, handoff });
        },
      };
      const onAbort = (): void => {
        const i = gate.queue.indexOf(waiter);
        if (i !== -1) gate.queue.splice(i, 1);
        reject(new AbortError({ cause: signal?.reason }));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      gate.queue.push(waiter);
    });
  }

  /** The gate of `key` if nobody is in it or waiting for it, else undefined. Never waits. */
  tryEnter(key: string): (() => void) | undefined {
    if (this.gates.has(key)) return undefined;
    const gate: Gate<H> = { queue: [], occupant: {} };
    this.gates.set(key, gate);
    return this.occupy(key, gate);
  }

  /** True when the first waiter at `key` takes a hand-over. */
  nextTakesHandoff(key: string): boolean {
    return this.gates.get(key)?.queue[0]?.acceptsHandoff === true;
  }

  /**
   * Hands the gate of `key` to its first waiter with `handoff`, if that waiter takes one; the
   * caller inside must then be done with the key (its `leave` no longer does anything). False
   * when nobody waits there to take it (the caller stays inside).
   */
  handOver(key: string, handoff: H): boolean {
    const gate = this.gates.get(key);
    const next = gate?.queue[0];
    if (next?.acceptsHandoff !== true) return false;
    gate?.queue.shift();
    next.admit(handoff);
    return true;
  }

  /** Callers inside or waiting, for tests. */
  busy(key: string): boolean {
    return this.gates.has(key);
  }

  /** Makes a new occupant of `gate`; returns its leave. */
  private occupy(key: string, gate: Gate<H>): () => void {
    const me = {};
    gate.occupant = me;
    return () => {
      if (gate.occupant !== me) return;
      gate.occupant = {};
      const next = gate.queue.shift();
      if (next === undefined) {
        if (this.gates.get(key) === gate) this.gates.delete(key);
      } else {
        next.admit();
      }
    };
  }
}
