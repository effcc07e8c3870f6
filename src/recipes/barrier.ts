/**
 * A barrier: one key that, while it exists, holds back everyone who `wait()`s on it; deleting it
 * releases them all. Go's `contrib/recipes.Barrier` layout: the key is exactly `path`, value
 * `''`, no lease, so Go processes and ours hold, release and wait on the same barrier.
 *
 * Unlike Go's `Wait`, ours never misses a release: Go watches from its read's revision for a PUT
 * *and then* a DELETE, so a release after any other write in etcd goes unseen (docs/go-layouts.md).
 * Ours decides on its read (no key: released) or on a DELETE strictly after it, and reads again
 * after every other wake-up.
 *
 * The key has no lease (as in Go): a holder that dies leaves the barrier held until someone
 * releases it. Any process may release.
 */
import type { ConnectorContext } from '../engines/context.js';
import { persist, RecipeLife, type CallOptions } from '../engines/call-scope.js';
import { waitUntil } from '../engines/key-wait.js';
import { absent, deleteOp, putOp } from '../engines/keys.js';
import { rangeOp } from '../engines/ranges.js';
import { validatePath } from '../paths.js';

/**
 * A barrier on `path`. Made by `conn.newBarrier(path)`; no I/O before the first call.
 *
 * ```ts
 * await barrier.hold();                 // coordinator: close the gate
 * await barrier.wait({ signal });       // workers: wait until it opens
 * await barrier.release();              // coordinator: open it; every waiter goes
 * ```
 */
export class Barrier implements AsyncDisposable {
  private readonly life: RecipeLife;
  private readonly keyBuf: Buffer;

  /** @internal Use `conn.newBarrier(path)`. */
  constructor(
    private readonly ctx: ConnectorContext,
    /** The barrier key (Go's layout: exactly the path). */
    readonly path: string,
  ) {
    validatePath(path, ctx.root);
    this.keyBuf = Buffer.from(path);
    this.life = new RecipeLife(ctx, `barrier ${path}`);
  }

  /**
   * Holds the barrier: creates its key (value `''`, no lease) unless it exists. Resolves `true`
   * when this call created it, `false` when it was held already (by anyone; or by an earlier try
   * of this call whose answer was lost). Retries etcd's transient failures up to the call
   * deadline.
   *
   * @throws ClosedError / AbortError, or etcd's error
   */
  async hold(options?: CallOptions): Promise<boolean> {
    const scope = this.life.scope(options);
    const res = await persist(
      this.ctx,
      scope,
      `hold ${this.path}`,
      () =>
        this.ctx.client.kv.txn(
          // Go's putNewKV: create the key only if it does not exist, never overwrite.
          { compare: [absent(this.keyBuf)], success: [putOp(this.keyBuf, '')] },
          this.ctx.callOptions(),
        ),
      this.ctx.callTimeoutMs,
    );
    return res.succeeded;
  }

  /**
   * Releases the barrier: deletes its key, and every waiter goes. Resolves `true` when it was
   * held. Safe to repeat.
   */
  async release(options?: CallOptions): Promise<boolean> {
    const scope = this.life.scope(options);
    const res = await persist(
      this.ctx,
      scope,
      `release ${this.path}`,
      () => this.ctx.client.kv.txn({ success: [deleteOp(this.keyBuf)] }, this.ctx.callOptions()),
      this.ctx.callTimeoutMs,
    );
    return Number(res.responses[0]?.response_delete_range.deleted ?? 0) > 0;
  }

  /** Whether the barrier is held now. */
  async isHeld(options?: CallOptions): Promise<boolean> {
    const scope = this.life.scope(options);
    const res = await persist(
      this.ctx,
      scope,
      `read ${this.path}`,
      () =>
        this.ctx.client.kv.range({ key: this.keyBuf, count_only: true }, this.ctx.callOptions()),
      this.ctx.callTimeoutMs,
    );
    return Number(res.count) > 0;
  }

  /**
   * Resolves once the barrier is not held: at once when its key does not exist, else when it is
   * deleted (even if it is held again right after: a release is never missed). Waits through
   * etcd outages until `signal` fires.
   *
   * @throws AbortError `signal` fired; ClosedError the barrier or the connector was closed
   */
  async wait(options?: CallOptions): Promise<void> {
    const scope = this.life.scope(options);
    try {
      await waitUntil<true>({
        ctx: this.ctx,
        what: `wait on barrier ${this.path}`,
        signal: scope.signal,
        check: async () => {
          const res = await this.ctx.client.kv.txn(
            { success: [rangeOp({ key: this.keyBuf, keys_only: true })] },
            this.ctx.callOptions(),
          );
          const held = (res.responses[0]?.response_range.kvs.length ?? 0) > 0;
          if (!held) return { done: true, value: true };
          return {
            done: false,
            revision: Number(res.header.revision),
            watch: [{ key: this.keyBuf }],
            // A delete after our read is a release, whatever follows it.
            decide: (events) => (events.some((e) => e.type === 'delete') ? true : undefined),
          };
        },
      });
    } catch (err) {
      throw scope.translate(err);
    }
  }

  /** Ends pending `wait()`s (ClosedError); the barrier itself stays as it is. Idempotent. */
  close(): Promise<void> {
    return this.life.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
