/**
 * An in-process FIFO in front of an etcd key that several callers would share.
 *
 * Go's Mutex key is `path/<lease hex>`, and a connector shares one session (lease) per TTL among
 * all its recipes: two `lock()` calls of one connector on one path would name the *same* key, and
 * both would believe they hold it (Go has the same trap with two Mutexes on one Session). So the
 * caller that wants such a key first passes this gate, one at a time per connector and key, and
 * leaves it only once the key is gone from etcd (or its session ended). In-process waiters queue
 * here without extra etcd keys; etcd's queue still sees one key per process in arrival order.
 */
import { AbortError } from '../errors.js';

interface Waiter {
  admit: () => void;
}

/** One gate per connector and key; a gate with nobody in it or before it is forgotten. */
export class LocalGates {
  private readonly gates = new Map<string, Waiter[]>();

  /**
   * Waits until the gate of `key` is ours (first come, first served); resolves with the function
   * that lets the next caller in (idempotent).
   *
   * @throws AbortError `signal` fired first (nothing is held then)
   */
  enter(key: string, signal?: AbortSignal): Promise<() => void> {
    const release = this.tryEnter(key);
    if (release !== undefined) return Promise.resolve(release);
    if (signal?.aborted === true) return Promise.reject(new AbortError({ cause: signal.reason }));
    const queue = this.gates.get(key);
    if (queue === undefined) throw new Error('unreachable: a busy gate has a queue');
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        admit: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this.releaser(key));
        },
      };
      const onAbort = (): void => {
        const i = queue.indexOf(waiter);
        if (i !== -1) queue.splice(i, 1);
        reject(new AbortError({ cause: signal?.reason }));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      queue.push(waiter);
    });
  }

  /** The gate of `key` if nobody is in it or waiting for it, else undefined. Never waits. */
  tryEnter(key: string): (() => void) | undefined {
    if (this.gates.has(key)) return undefined;
    this.gates.set(key, []);
    return this.releaser(key);
  }

  /** Callers inside or waiting, for tests. */
  busy(key: string): boolean {
    return this.gates.has(key);
  }

  private releaser(key: string): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const queue = this.gates.get(key);
      const next = queue?.shift();
      if (next === undefined) this.gates.delete(key);
      else next.admit();
    };
  }
}
