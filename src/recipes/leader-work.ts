/**
 * The work loop behind `elector.run(fn)` (Apache Curator's LeaderSelector with auto-requeue): fn
 * runs once per term while this participant leads; its signal aborts the moment leadership can
 * no longer be proven; when fn ends on its own, the participant resigns and queues again.
 *
 * It hears the elector's statuses synchronously (not through the status stream), so a loss
 * aborts fn's signal in the same tick as the session's own deadline timer, and a suspension in
 * the same tick as the keepalive silence that causes it.
 */
import { ClosedError, NotLeaderError } from '../errors.js';
import type { FencingToken } from '../fencing.js';
import { isAborted } from '../transport/timers.js';
import type { CampaignEvent } from './campaign.js';

/** What `elector.run()` runs while leading. */
export type LeaderWorkFn = (signal: AbortSignal, token: FencingToken) => Promise<void> | void;

export interface LeaderWorkOptions {
  fn: LeaderWorkFn;
  /** Told when fn throws while still leading; absent: the error ends the run. */
  onError: ((error: unknown, token: FencingToken) => void) | undefined;
  /** Leader now (checked on the clock). */
  isLeader(): boolean;
  /** Resign the term of `token` and join the queue again. */
  requeue(token: FencingToken): void;
  /** Ends the whole run (fn failed and nobody handles its errors). */
  fail(error: unknown): void;
}

export class LeaderWork {
  /** The term fn runs for, while it runs. */
  private term: { token: FencingToken; controller: AbortController } | undefined;
  /** A term that should run (leader now), not started yet. */
  private wanted: FencingToken | undefined;
  private running: Promise<void> | undefined;
  private ended = false;

  constructor(private readonly opts: LeaderWorkOptions) {}

  /** A status of the elector, synchronously as it is emitted. */
  onEvent(event: CampaignEvent): void {
    if (this.ended) return;
    if (event.status === 'leader' && event.token !== undefined) {
      const term = this.term;
      // A re-announcement of the running term (a proclaim) changes nothing.
      if (term?.token.revision === event.token.revision && !term.controller.signal.aborted) return;
      this.wanted = event.token;
      this.kick();
      return;
    }
    this.wanted = undefined;
    this.term?.controller.abort(
      event.error ??
        new NotLeaderError(
          event.suspended
            ? 'session suspended: leadership cannot be proven until keepalives are answered'
            : 'no longer the leader',
        ),
    );
  }

  /** The run is over: aborts the running term; resolves once fn has settled. */
  async end(): Promise<void> {
    this.ended = true;
    this.wanted = undefined;
    this.term?.controller.abort(new ClosedError('leader elector'));
    await this.running;
  }

  /** Starts the wanted term unless fn is still running (one fn at a time, ever). */
  private kick(): void {
    const token = this.wanted;
    if (token === undefined || this.running !== undefined || this.ended) return;
    this.wanted = undefined;
    if (!this.opts.isLeader()) return;
    const controller = new AbortController();
    this.term = { token, controller };
    this.running = this.runTerm(token, controller).finally(() => {
      this.term = undefined;
      this.running = undefined;
      this.kick();
    });
  }

  private async runTerm(token: FencingToken, controller: AbortController): Promise<void> {
    const signal = controller.signal;
    let failed = false;
    let error: unknown;
    // Not inside the elector's emit: fn starts on its own tick, if the term still stands.
    await Promise.resolve();
    if (signal.aborted) return;
    try {
      await this.opts.fn(signal, token);
    } catch (err) {
      failed = true;
      error = err;
    }
    // Ended by its signal: leadership is already gone (or suspended, or stopping); what fn
    // returned or threw then is the expected end of a term, not a result.
    if (isAborted(signal)) return;
    controller.abort(new NotLeaderError('the leader work returned; the term was resigned'));
    if (failed) {
      if (this.opts.onError === undefined) {
        this.ended = true;
        this.opts.fail(error);
        return;
      }
      try {
        this.opts.onError(error, token);
      } catch {
        // A throwing error handler must not stop the requeue.
      }
    }
    this.opts.requeue(token);
  }
}
