/**
 * A demo participant: `etcdc elect --json` in a child process, so the demo can stop it (SIGINT,
 * it resigns) or crash it (SIGKILL, its lease must expire) like a real service instance.
 */
import { CliChild, type CliRecord } from './cli-child.js';

export interface ParticipantStatus {
  readonly identity: string;
  readonly status: 'leader' | 'follower';
  /** Who leads, as this participant sees it. */
  readonly leader?: string;
  readonly token?: string;
  readonly suspended: boolean;
  /** `performance.now()` when the line arrived. */
  readonly at: number;
}

export class Participant extends CliChild {
  last: ParticipantStatus | undefined;

  constructor(identity: string, args: readonly string[], onStatus: (s: ParticipantStatus) => void) {
    super(identity, args);
    this.onRecord((r, at) => {
      const status = this.statusOf(r, at);
      if (status === undefined) return;
      this.last = status;
      onStatus(status);
    });
  }

  /** Resolves with the first status (from now on) that satisfies `ok`, or rejects at the deadline. */
  nextStatus(ok: (s: ParticipantStatus) => boolean, timeoutMs: number): Promise<ParticipantStatus> {
    return this.next((r, at) => {
      const status = this.statusOf(r, at);
      return status !== undefined && ok(status) ? status : undefined;
    }, timeoutMs);
  }

  private statusOf(r: CliRecord, at: number): ParticipantStatus | undefined {
    if (r.event !== 'status') return undefined;
    const { status, token, leader } = r;
    return {
      identity: this.identity,
      status: status === 'leader' ? 'leader' : 'follower',
      suspended: r.suspended === true,
      at,
      ...(typeof token === 'string' ? { token } : {}),
      ...(typeof leader === 'string' ? { leader } : {}),
    };
  }
}
