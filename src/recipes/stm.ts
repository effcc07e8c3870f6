/**
 * Software transactional memory over etcd: `conn.stm(fn, options)` — a port of Go's
 * `clientv3/concurrency/stm.go` semantics. `fn` reads and writes through `tx`; reads are
 * recorded, writes buffered; then one transaction commits the writes only if nothing `fn` relied
 * on changed. A conflict runs `fn` again, until it commits or the caller's signal fires (not a
 * fixed 3 tries like etcd3's).
 *
 * Isolation levels (Go's, with Go's names in kebab case):
 * - `serializable-snapshot` (default): every read of an attempt is at the revision of its first
 *   read; the commit requires every read key unchanged *and* every written key unchanged since
 *   that revision (write conflicts too).
 * - `serializable`: reads at the first read's revision; the commit requires the read keys
 *   unchanged.
 * - `repeatable-reads`: reads are member-local (serializable) and each key is read once per
 *   attempt; the commit requires the read keys unchanged.
 * - `read-committed`: member-local reads; the commit has no conditions.
 *
 * As in Go, a failed commit of the two serializable levels reads every read key in its failure
 * branch, and the next attempt starts from those values (the read set prefetched: no round trip
 * to read them again). Beyond Go: a commit whose answer was lost is resolved through a receipt
 * (`<namespace>/__stm/receipts/<leaseHex>.<n>`, under a session's lease) instead of being run
 * again — which could apply it twice. Read-only transactions need none.
 *
 * `fn` may run several times: it must have no side effects besides `tx`.
 */
import type { ICompare, IKeyValue, IRangeRequest, IRequestOp, ITxnResponse } from 'etcd3';
import { CompareResult, CompareTarget } from 'etcd3';
import {
  AbortError,
  EtcdConnectorError,
  InvalidArgumentError,
  InvalidStateError,
  OutcomeUnknownError,
  TransactionConflictError,
} from '../errors.js';
import { RecipeLife, type CallScope } from '../engines/call-scope.js';
import type { ConnectorContext } from '../engines/context.js';
import { DEFAULT_TTL, HeldSession } from '../engines/held-session.js';
import { deleteOp, modifiedAt, putOp } from '../engines/keys.js';
import { guardedTxn, ReceiptBook, type GuardedOutcome } from '../engines/receipts.js';
import { rangeOp } from '../engines/ranges.js';
import { validatePath, validateValue } from '../paths.js';
import { Backoff, delay, isAborted } from '../transport/timers.js';

/** Go's isolation levels; Go's constant names are accepted too. */
export type Isolation =
  | 'serializable-snapshot'
  | 'serializable'
  | 'repeatable-reads'
  | 'read-committed'
  | 'SerializableSnapshot'
  | 'Serializable'
  | 'RepeatableReads'
  | 'ReadCommitted';

/** The levels as the code below knows them. */
type Level = 'serializable-snapshot' | 'serializable' | 'repeatable-reads' | 'read-committed';

const LEVELS: Readonly<Record<Isolation, Level>> = {
  'serializable-snapshot': 'serializable-snapshot',
  serializable: 'serializable',
  'repeatable-reads': 'repeatable-reads',
  'read-committed': 'read-committed',
  SerializableSnapshot: 'serializable-snapshot',
  Serializable: 'serializable',
  RepeatableReads: 'repeatable-reads',
  ReadCommitted: 'read-committed',
};

/** Options of `conn.stm(fn, options)`. */
export interface StmOptions {
  /** Default `serializable-snapshot` (Go's `NewSTM` default). */
  isolation?: Isolation;
  /**
   * Gives up: between attempts, or while waiting for etcd. Rejects with AbortError, or with
   * TransactionConflictError when attempts had conflicted. Nothing is written after it fired.
   */
  signal?: AbortSignal;
  /** Keys to read in one round trip before `fn` runs (Go's `WithPrefetch`). */
  prefetch?: readonly string[];
  /** Give up after this many conflicting attempts (TransactionConflictError). Default: never. */
  maxAttempts?: number;
}

/** What `fn` works with during one attempt. */
export interface StmTx {
  /** The value of `key` (undefined when it does not exist), or what this attempt put there. */
  get(key: string): Promise<string | undefined>;
  /** The values of `keys`, read in one round trip. */
  getMany(keys: readonly string[]): Promise<(string | undefined)[]>;
  /** The mod revision of `key` as read (`'0'` when it does not exist). */
  rev(key: string): Promise<string>;
  /** Buffers a put; it is written on commit. */
  put(key: string, value: string): void;
  /** Buffers a delete. */
  delete(key: string): void;
}

/** A committed transaction. */
export interface StmResult<T> {
  /** What `fn` returned in the attempt that committed. */
  readonly result: T;
  /** The revision of the commit (for a read-only transaction: of its check). */
  readonly revision: string;
  /** Attempts it took (1: no conflict). */
  readonly attempts: number;
}

/** A read as `fn` saw it. */
interface Read {
  readonly kv: IKeyValue | undefined;
  /** Header revision of the response that carried it. */
  readonly revision: bigint;
}

/** A read of this attempt failed: the attempt cannot commit, whatever `fn` did with the error. */
class AttemptFailed extends Error {
  constructor(readonly error: EtcdConnectorError) {
    super(error.message, { cause: error });
  }
}

/** One run of `fn`. */
class Attempt implements StmTx {
  readonly reads = new Map<string, Read>();
  readonly writes = new Map<string, string | undefined>();
  /** The revision of the first read (serializable levels read everything else there). */
  private baseRevision: bigint | undefined;
  failure: EtcdConnectorError | undefined;
  private over = false;
  /** Reads in flight: a commit waits for them (`fn` may not have awaited every `get`). */
  readonly pending = new Set<Promise<unknown>>();

  constructor(
    private readonly ctx: ConnectorContext,
    private readonly isolation: Level,
    /** The failed commit's reads, for the serializable levels (Go's prefetch). */
    private readonly prefetched: Map<string, Read>,
    private readonly signal: AbortSignal,
  ) {}

  end(): void {
    this.over = true;
  }

  async get(key: string): Promise<string | undefined> {
    this.check(key);
    if (this.writes.has(key)) return this.writes.get(key);
    return (await this.fetch([key]))[0]?.kv?.value.toString();
  }

  async getMany(keys: readonly string[]): Promise<(string | undefined)[]> {
    const given: unknown = keys;
    if (!Array.isArray(given)) throw new InvalidArgumentError('keys', 'must be an array');
    for (const k of keys) this.check(k);
    const unwritten = keys.filter((k) => !this.writes.has(k));
    await this.fetch(unwritten);
    return keys.map((k) =>
      this.writes.has(k) ? this.writes.get(k) : this.reads.get(k)?.kv?.value.toString(),
    );
  }

  async rev(key: string): Promise<string> {
    this.check(key);
    return (await this.fetch([key]))[0]?.kv?.mod_revision ?? '0';
  }

  put(key: string, value: string): void {
    this.check(key);
    validateValue(key, value, this.ctx.maxRequestBytes);
    this.writes.set(key, value);
  }

  delete(key: string): void {
    this.check(key);
    this.writes.set(key, undefined);
  }

  /** Reads `keys` not read yet in one transaction (Go's fetch); returns their reads in order. */
  fetch(keys: readonly string[]): Promise<Read[]> {
    const p = this.fetchNow(keys);
    this.pending.add(p);
    const done = (): void => {
      this.pending.delete(p);
    };
    p.then(done, done);
    return p;
  }

  private async fetchNow(keys: readonly string[]): Promise<Read[]> {
    const serializable =
      this.isolation === 'serializable-snapshot' || this.isolation === 'serializable';
    if (serializable) {
      // Go moves prefetched reads into the read set as they are asked for.
      for (const k of keys) {
        const pre = this.prefetched.get(k);
        if (pre !== undefined && !this.reads.has(k)) {
          this.prefetched.delete(k);
          this.reads.set(k, pre);
          this.baseRevision ??= pre.revision;
        }
      }
    }
    const missing = [...new Set(keys.filter((k) => !this.reads.has(k)))];
    if (missing.length > 0) {
      if (this.failure !== undefined) throw new AttemptFailed(this.failure);
      const options: Partial<IRangeRequest> =
        serializable && this.baseRevision !== undefined
          ? { revision: this.baseRevision.toString(), serializable: true }
          : serializable
            ? {}
            : { serializable: true };
      let res: ITxnResponse;
      try {
        res = await this.ctx.client.kv.txn(
          { success: missing.map((k) => rangeOp({ key: Buffer.from(k), ...options })) },
          this.ctx.callOptions(),
        );
      } catch (err) {
        // Remembered: `fn` may catch it, but this attempt will not commit.
        this.failure ??= this.ctx.toError(err, 'transaction read');
        throw new AttemptFailed(this.failure);
      }
      const revision = BigInt(res.header.revision);
      missing.forEach((k, i) => {
        this.reads.set(k, { kv: res.responses[i]?.response_range.kvs[0], revision });
      });
      // The serializable levels read everything after the first read at its revision.
      if (serializable) this.baseRevision ??= revision;
    }
    return keys.map((k) => this.reads.get(k) ?? { kv: undefined, revision: 0n });
  }

  private check(key: unknown): void {
    if (this.over) throw new InvalidStateError('the transaction attempt is over: tx is stale');
    if (isAborted(this.signal)) throw new AbortError({ cause: this.signal.reason });
    validatePath(key, this.ctx.root, 'key');
  }
}

/** Runs transactions for one connector: one session and receipt book for all of them. */
export class StmRunner {
  private readonly life: RecipeLife;
  private readonly held: HeldSession;
  private readonly book: ReceiptBook;

  constructor(private readonly ctx: ConnectorContext) {
    this.held = new HeldSession(ctx, DEFAULT_TTL, 'transactions');
    this.book = new ReceiptBook(ctx, `${ctx.root}/__stm/receipts`, this.held);
    this.life = new RecipeLife(ctx, 'transactions', () => this.held.close());
  }

  /** See `conn.stm()`. */
  async run<T>(fn: (tx: StmTx) => Promise<T> | T, options: StmOptions = {}): Promise<StmResult<T>> {
    if (typeof fn !== 'function') throw new InvalidArgumentError('fn', 'must be a function');
    const asked: string = options.isolation ?? 'serializable-snapshot';
    const isolation = Object.hasOwn(LEVELS, asked) ? LEVELS[asked as Isolation] : undefined;
    if (isolation === undefined) {
      throw new InvalidArgumentError(
        'options.isolation',
        `must be one of ${Object.keys(LEVELS).join(', ')}`,
      );
    }
    const maxAttempts = options.maxAttempts ?? Infinity;
    if (maxAttempts !== Infinity && (!Number.isSafeInteger(maxAttempts) || maxAttempts < 1)) {
      throw new InvalidArgumentError('options.maxAttempts', 'must be an integer >= 1');
    }
    const prefetch = options.prefetch ?? [];
    for (const k of prefetch) validatePath(k, this.ctx.root, 'options.prefetch');
    const scope = this.life.scope(options);
    let prefetched = new Map<string, Read>();
    let conflicts = 0;
    const backoff = new Backoff(50, 1000);
    for (let attempts = 1; ; attempts++) {
      if (isAborted(scope.signal)) throw this.gaveUp(scope, conflicts);
      const attempt = new Attempt(this.ctx, isolation, prefetched, scope.signal);
      prefetched = new Map();
      let result: T;
      let outcome: GuardedOutcome | { kind: 'read-only'; response: ITxnResponse } | undefined;
      try {
        if (prefetch.length > 0) await attempt.fetch(prefetch);
        result = await fn(attempt);
        // A read `fn` started but did not await still counts: its key goes into the compares.
        await Promise.allSettled([...attempt.pending]);
        if (attempt.failure !== undefined) throw new AttemptFailed(attempt.failure);
        outcome = await this.commit(attempt, isolation, scope);
      } catch (err) {
        const failure = err instanceof AttemptFailed ? err.error : undefined;
        if (failure === undefined) {
          // A commit that may have landed says so, given up or not (never "aborted": nothing
          // written).
          if (err instanceof OutcomeUnknownError) throw err;
          if (isAborted(scope.signal)) throw this.gaveUp(scope, conflicts);
          if (err instanceof EtcdConnectorError && err.retryable) {
            // The commit failed and was not applied (a lost answer is resolved first).
            await this.pause(backoff, scope, conflicts);
            continue;
          }
          throw err; // fn's own error, or a final one of etcd: nothing was written
        }
        if (!failure.retryable) throw failure;
        await this.pause(backoff, scope, conflicts);
        continue;
      } finally {
        attempt.end();
      }
      if (outcome.kind === 'committed' || outcome.kind === 'read-only') {
        if (outcome.response.succeeded) {
          return { result, revision: outcome.response.header.revision, attempts };
        }
      } else if (outcome.kind === 'applied') {
        return { result, revision: String(outcome.revision), attempts };
      }
      // A conflict: the failure branch read the read set again (serializable levels).
      conflicts += 1;
      if (conflicts >= maxAttempts) throw new TransactionConflictError(conflicts);
      if (isolation === 'serializable-snapshot' || isolation === 'serializable') {
        const revision = BigInt(outcome.response.header.revision);
        [...attempt.reads.keys()].forEach((k, i) => {
          prefetched.set(k, { kv: outcome.response.responses[i]?.response_range.kvs[0], revision });
        });
      }
      backoff.reset();
    }
  }

  /** Ends pending transactions (ClosedError) and releases the session. Idempotent. */
  close(): Promise<void> {
    return this.life.close();
  }

  private async commit(
    attempt: Attempt,
    isolation: Level,
    scope: CallScope,
  ): Promise<GuardedOutcome | { kind: 'read-only'; response: ITxnResponse }> {
    const readKeys = [...attempt.reads.keys()];
    const compare: ICompare[] = [];
    if (isolation !== 'read-committed') {
      // Every key read is as it was read (Go's isKeyCurrent; mod revision 0: still missing).
      for (const [k, r] of attempt.reads) compare.push(modifiedAt(k, r.kv?.mod_revision ?? '0'));
    }
    if (isolation === 'serializable-snapshot') {
      // Every key written is unchanged since the first read (Go's rset.first(): the lowest
      // header revision of the reads) — write conflicts abort too.
      let first: bigint | undefined;
      for (const r of attempt.reads.values())
        if (first === undefined || r.revision < first) first = r.revision;
      if (first !== undefined) {
        for (const k of attempt.writes.keys()) {
          compare.push({
            key: Buffer.from(k),
            target: CompareTarget.Mod,
            result: CompareResult.Less,
            mod_revision: (first + 1n).toString(),
          });
        }
      }
    }
    const success: IRequestOp[] = [...attempt.writes].map(([k, v]) =>
      v === undefined ? deleteOp(k) : putOp(k, v),
    );
    // The serializable levels read the read set again on a conflict, to retry without re-reading.
    const failure =
      isolation === 'serializable-snapshot' || isolation === 'serializable'
        ? readKeys.map((k) => rangeOp({ key: Buffer.from(k) }))
        : [];
    scope.check();
    if (success.length === 0) {
      // Nothing to write: no receipt needed (repeating a check is harmless).
      try {
        const response = await this.ctx.client.kv.txn(
          { compare, success, failure },
          this.ctx.callOptions(),
        );
        return { kind: 'read-only', response };
      } catch (err) {
        throw this.ctx.toError(err, 'transaction check');
      }
    }
    return guardedTxn(this.ctx, this.book, scope.signal, 'transaction commit', `stm`, {
      compare,
      success,
      failure,
    });
  }

  private async pause(backoff: Backoff, scope: CallScope, conflicts: number): Promise<void> {
    try {
      await delay(backoff.next(), scope.signal);
    } catch {
      throw this.gaveUp(scope, conflicts);
    }
  }

  /** The scope ended: after conflicts a TransactionConflictError, else its reason. */
  private gaveUp(scope: CallScope, conflicts: number): EtcdConnectorError {
    const reason = scope.reason();
    if (conflicts > 0 && reason instanceof AbortError) {
      return new TransactionConflictError(conflicts, { cause: reason });
    }
    return reason;
  }
}
