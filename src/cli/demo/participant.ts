/**
 * A demo participant: `etcdc elect --json` in a child process, so the demo can stop it (SIGINT,
 * it resigns) or crash it (SIGKILL, its lease must expire) like a real service instance.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

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

const CLI = fileURLToPath(new URL('../main.js', import.meta.url));

export class Participant {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  last: ParticipantStatus | undefined;
  private readonly listeners = new Set<(s: ParticipantStatus) => void>();
  /** Fail every pending `next()` once the child's output ended, so no waiter's timer outlives it. */
  private readonly onEnd = new Set<() => void>();
  private ended = false;

  constructor(
    readonly identity: string,
    args: readonly string[],
    onStatus: (s: ParticipantStatus) => void,
  ) {
    this.child = spawn(process.execPath, [CLI, ...args, '--json'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code) => {
        resolve(code);
      }),
    );
    const lines = createInterface({ input: this.child.stdout as NodeJS.ReadableStream });
    // After the last line (a status printed just before exiting still counts).
    lines.once('close', () => {
      this.ended = true;
      for (const f of [...this.onEnd]) f();
    });
    lines.on('line', (line) => {
      let rec: {
        event?: string;
        status?: string;
        token?: string;
        suspended?: boolean;
        leader?: string;
      };
      try {
        rec = JSON.parse(line) as typeof rec;
      } catch {
        return;
      }
      if (rec.event !== 'status') return;
      const status: ParticipantStatus = {
        identity,
        status: rec.status === 'leader' ? 'leader' : 'follower',
        suspended: rec.suspended === true,
        at: performance.now(),
        ...(rec.token === undefined ? {} : { token: rec.token }),
        ...(rec.leader === undefined ? {} : { leader: rec.leader }),
      };
      this.last = status;
      onStatus(status);
      for (const l of [...this.listeners]) l(status);
    });
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves with the first status (from now on) that satisfies `ok`, or rejects at the deadline. */
  next(ok: (s: ParticipantStatus) => boolean, timeoutMs: number): Promise<ParticipantStatus> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.listeners.delete(listener);
        this.onEnd.delete(ended);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.identity}: no matching status within ${timeoutMs} ms`));
      }, timeoutMs);
      const listener = (s: ParticipantStatus): void => {
        if (!ok(s)) return;
        done();
        resolve(s);
      };
      const ended = (): void => {
        done();
        reject(new Error(`${this.identity} exited`));
      };
      if (this.ended) {
        ended();
        return;
      }
      this.listeners.add(listener);
      this.onEnd.add(ended);
    });
  }

  /** SIGINT: the participant resigns and exits. */
  async stop(): Promise<void> {
    if (this.alive) this.child.kill('SIGINT');
    await this.exited;
  }

  /** SIGKILL: a crash; its lease expires after the TTL. */
  async kill(): Promise<void> {
    if (this.alive) this.child.kill('SIGKILL');
    await this.exited;
  }
}
