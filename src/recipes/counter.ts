/**
 * A shared integer counter. Go has no such recipe, so the layout is ours, chosen to be readable by
 * anything: **one key, `path`, whose value is the integer in decimal** (`'-12'`, `'4000'`), no
 * lease (the count outlives its writers); a missing key reads as 0.
 *
 * Every change is a compare-and-swap: `If(ModRevision(path) = seen) Then(Put(path, new))`, so
 * concurrent adds never overwrite each other; a lost race re-reads in the same round trip (the
 * failure branch) and tries again. Each write also carries a receipt
 * (`<parent>/__<name>.counter/receipts/<leaseHex>.<n>`, under the session's lease): an add whose
 * answer was lost is resolved, never sent twice, so the count stays exact through timeouts and
 * member failures.
 *
 * Values are JavaScript safe integers (|n| <= 2^53 - 1); anything else in the key is a
 * ValueFormatError, and an add that would leave that range is refused before it is written.
 */
import type { IKeyValue } from 'etcd3';
import { InvalidArgumentError, ValueFormatError } from '../errors.js';
import { persist, RecipeLife, type CallOptions, type CallScope } from '../engines/call-scope.js';
import type { ConnectorContext } from '../engines/context.js';
import { checkSessionOptions, HeldSession, type SessionOptions } from '../engines/held-session.js';
import { bookkeepingDir, modifiedAt, putOp } from '../engines/keys.js';
import { guardedTxn, ReceiptBook } from '../engines/receipts.js';
import { rangeOp } from '../engines/ranges.js';
import { validatePath } from '../paths.js';

/** Options of `conn.newCounter(path, options)`: the session of the receipts. */
export type CounterOptions = SessionOptions;

/** What we last knew of the key: its value and mod revision (`'0'`: missing). */
interface Seen {
  readonly value: number;
  readonly modRevision: string;
}

/**
 * A counter on the key `path`, made by `conn.newCounter(path)`.
 *
 * ```ts
 * const hits = conn.newCounter(conn.constructPath('stats', 'hits'));
 * await hits.add(1);          // -> the new value
 * await hits.get();
 * await hits.compareAndSet(10, 0);
 * ```
 */
export class Counter implements AsyncDisposable {
  private readonly life: RecipeLife;
  private readonly held: HeldSession;
  private readonly book: ReceiptBook;
  private readonly keyBuf: Buffer;
  private seen: Seen | undefined;

  /** @internal Use `conn.newCounter(path, options)`. */
  constructor(
    private readonly ctx: ConnectorContext,
    /** The counter's key. */
    readonly path: string,
    options?: CounterOptions,
  ) {
    validatePath(path, ctx.root);
    if (path === ctx.root) {
      throw new InvalidArgumentError('path', 'a counter cannot be the namespace root itself');
    }
    const { ttl, bound } = checkSessionOptions(options);
    this.keyBuf = Buffer.from(path);
    const what = `counter ${path}`;
    this.held = new HeldSession(ctx, ttl, what, bound);
    this.book = new ReceiptBook(ctx, `${bookkeepingDir(path, 'counter')}/receipts`, this.held);
    this.life = new RecipeLife(ctx, what, () => this.held.close());
  }

  /** The current value (a linearizable read; 0 when the key does not exist). */
  async get(options?: CallOptions): Promise<number> {
    const scope = this.life.scope(options);
    return (await this.read(scope)).value;
  }

  /**
   * Adds `delta` (a safe integer, may be negative) and resolves with the new value. Retries
   * lost races until it lands, and etcd's transient failures up to the call deadline.
   *
   * @throws InvalidArgumentError bad delta (before any I/O)
   * @throws ValueFormatError the key holds no integer, or the sum would not be a safe integer
   * @throws OutcomeUnknownError the answer was lost and it could not be told whether it landed
   */
  async add(delta: number, options?: CallOptions): Promise<number> {
    checkInteger(delta, 'delta');
    const scope = this.life.scope(options);
    return persist(
      this.ctx,
      scope,
      `add to ${this.path}`,
      async () => {
        let seen = this.seen ?? (await this.read(scope));
        for (;;) {
          const next = this.sum(seen.value, delta);
          const landed = await this.swap(scope, seen, next, `add ${delta}`);
          if (landed === true) return next;
          seen = landed;
        }
      },
      this.ctx.callTimeoutMs,
    );
  }

  /**
   * Sets the value to `next` only if it is `expected` now. Resolves `true` when it did, `false`
   * when the value was something else (read afresh, never from a stale cache).
   */
  async compareAndSet(expected: number, next: number, options?: CallOptions): Promise<boolean> {
    checkInteger(expected, 'expected');
    checkInteger(next, 'next');
    const scope = this.life.scope(options);
    return persist(
      this.ctx,
      scope,
      `compare-and-set ${this.path}`,
      async () => {
        let seen = this.seen ?? (await this.read(scope));
        for (;;) {
          // Decide "not expected" only on a fresh read.
          if (seen.value !== expected) seen = await this.read(scope);
          if (seen.value !== expected) return false;
          const landed = await this.swap(scope, seen, next, `set ${next}`);
          if (landed === true) return true;
          seen = landed;
        }
      },
      this.ctx.callTimeoutMs,
    );
  }

  /** Ends pending calls (ClosedError) and releases the session. Idempotent. */
  close(): Promise<void> {
    return this.life.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** One compare-and-swap from `seen` to `next`: true, or what the key holds now. */
  private async swap(
    scope: CallScope,
    seen: Seen,
    next: number,
    tag: string,
  ): Promise<true | Seen> {
    const outcome = await guardedTxn(
      this.ctx,
      this.book,
      scope.signal,
      `${tag} ${this.path}`,
      `${tag}@${seen.modRevision}`,
      {
        // Nobody wrote the counter since we read it (mod revision 0: it still does not exist).
        compare: [modifiedAt(this.keyBuf, seen.modRevision)],
        success: [putOp(this.keyBuf, String(next))],
        // Somebody did: what it holds now, for the next try without another round trip.
        failure: [rangeOp({ key: this.keyBuf })],
      },
    );
    if (outcome.kind === 'committed') {
      this.seen = { value: next, modRevision: outcome.response.header.revision };
      return true;
    }
    if (outcome.kind === 'applied') {
      this.seen = { value: next, modRevision: String(outcome.revision) };
      return true;
    }
    const now = this.parse(outcome.response.responses[0]?.response_range.kvs[0]);
    this.seen = now;
    return now;
  }

  private async read(scope: CallScope): Promise<Seen> {
    const res = await persist(
      this.ctx,
      scope,
      `read ${this.path}`,
      () => this.ctx.client.kv.range({ key: this.keyBuf }, this.ctx.callOptions()),
      this.ctx.callTimeoutMs,
    );
    const seen = this.parse(res.kvs[0]);
    this.seen = seen;
    return seen;
  }

  private parse(kv: IKeyValue | undefined): Seen {
    if (kv === undefined) return { value: 0, modRevision: '0' };
    const text = kv.value.toString();
    const value = /^-?\d{1,16}$/.test(text) ? Number(text) : NaN;
    if (!Number.isSafeInteger(value)) {
      throw new ValueFormatError(
        this.path,
        `holds ${JSON.stringify(text.slice(0, 40))}, not an integer`,
      );
    }
    return { value, modRevision: kv.mod_revision };
  }

  private sum(value: number, delta: number): number {
    const next = value + delta;
    if (!Number.isSafeInteger(next)) {
      throw new ValueFormatError(
        this.path,
        `${value} + ${delta} is outside the safe integer range`,
      );
    }
    return next;
  }
}

function checkInteger(n: unknown, argument: string): void {
  if (typeof n !== 'number' || !Number.isSafeInteger(n)) {
    throw new InvalidArgumentError(argument, `must be a safe integer, got ${String(n)}`);
  }
}
