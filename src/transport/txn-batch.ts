/**
 * Transactions of many recipes in one gRPC call. A thousand electors starting at once (or a
 * thousand followers re-reading after their leaders' lease was revoked) each send one small
 * transaction; etcd accepts a transaction whose operations are themselves transactions (etcd
 * 3.3+), so while one call is in flight the next ones queue and then go together, each keeping
 * its own compare and branches. A call costs the client far more CPU and memory than the bytes
 * it carries; this turns a thousand of them into a handful.
 *
 * Nothing is batched while nothing is in flight: a lone transaction goes at once, as before.
 * All transactions of a batch are applied at one revision, in order — as if sent back to back —
 * and that is why writes to one queue never share a batch: keys created in one transaction share
 * its revision, and a queue ordered by create revision (an election, a lock) must never see two
 * keys with one revision (two holders with one fencing token). Each write names its queue
 * (`exclusive`); a batch takes at most one transaction per name.
 * If etcd refuses the whole batch for a reason one member may have caused (a lease not found,
 * permission denied, a key written twice), every transaction is sent again on its own, so only
 * the one at fault fails.
 */
import type { Etcd3, ITxnRequest, ITxnResponse } from 'etcd3';
import { SessionLostError, type EtcdConnectorError } from '../errors.js';

/** Calls out at once; more transactions wait and go together in the next batch. */
const MAX_IN_FLIGHT = 4;

interface Pending {
  request: ITxnRequest;
  exclusive: string | undefined;
  resolve: (res: ITxnResponse) => void;
  reject: (err: unknown) => void;
}

export interface TxnBatcherOptions {
  client: Etcd3;
  callOptions: () => { deadline: Date };
  /** Maps a failure to our typed error (the connector's `toError`). */
  toError: (err: unknown, what: string) => EtcdConnectorError;
  /** Transactions per batch at most (etcd's `--max-txn-ops` is 128 by default). */
  maxBatch?: number;
}

export class TxnBatcher {
  private queue: Pending[] = [];
  private inFlight = 0;
  private readonly maxBatch: number;

  constructor(private readonly opts: TxnBatcherOptions) {
    this.maxBatch = opts.maxBatch ?? 64;
  }

  /**
   * Commits `request` (alone, or with others queued meanwhile). Rejects with etcd's error.
   * `exclusive`: a name (e.g. a queue's prefix) no other transaction of the same batch may have.
   */
  txn(request: ITxnRequest, exclusive?: string): Promise<ITxnResponse> {
    return new Promise((resolve, reject) => {
      this.queue.push({ request, exclusive, resolve, reject });
      this.flush();
    });
  }

  /**
   * Sends what is queued while fewer than `MAX_IN_FLIGHT` calls are out: under light load every
   * transaction goes alone at once; under load the queue fills while calls are out and goes in
   * batches.
   */
  private flush(): void {
    while (this.queue.length > 0 && this.inFlight < MAX_IN_FLIGHT) {
      const batch = this.take();
      this.inFlight++;
      void this.send(batch).finally(() => {
        this.inFlight--;
        this.flush();
      });
    }
  }

  /**
   * The next batch, in queue order: up to `maxBatch` transactions, at most one per exclusive
   * name (the others stay queued in their order, for the next batch).
   */
  private take(): Pending[] {
    const batch: Pending[] = [];
    const names = new Set<string>();
    const rest: Pending[] = [];
    for (const p of this.queue) {
      const clash = p.exclusive !== undefined && names.has(p.exclusive);
      if (batch.length >= this.maxBatch || clash) {
        rest.push(p);
        continue;
      }
      if (p.exclusive !== undefined) names.add(p.exclusive);
      batch.push(p);
    }
    this.queue = rest;
    return batch;
  }

  private async send(batch: Pending[]): Promise<void> {
    const [only] = batch;
    if (batch.length === 1 && only !== undefined) {
      await this.one(only);
      return;
    }
    let res: ITxnResponse;
    try {
      res = await this.opts.client.kv.txn(
        { success: batch.map((p) => ({ request_txn: p.request })) },
        this.opts.callOptions(),
      );
    } catch (err) {
      const error = this.opts.toError(err, 'batched transaction');
      if (error.retryable && !(error instanceof SessionLostError)) {
        // etcd unreachable or slow: each would have failed the same way.
        for (const p of batch) p.reject(err);
        return;
      }
      // A refusal one member may have caused: each on its own, so only that one fails.
      await Promise.all(batch.map((p) => this.one(p)));
      return;
    }
    batch.forEach((p, i) => {
      const nested = res.responses[i]?.response_txn;
      if (nested === undefined) {
        p.reject(new Error('etcd returned no result for a batched transaction'));
        return;
      }
      p.resolve({ header: res.header, succeeded: nested.succeeded, responses: nested.responses });
    });
  }

  private async one(p: Pending): Promise<void> {
    try {
      p.resolve(await this.opts.client.kv.txn(p.request, this.opts.callOptions()));
    } catch (err) {
      p.reject(err);
    }
  }
}
