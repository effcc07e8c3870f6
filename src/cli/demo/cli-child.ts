/**
 * An `etcdc ... --json` child process of the demo, like a real service instance: the demo reads
 * its JSON records, waits on them with deadlines, and stops it (SIGINT), crashes it (SIGKILL) or
 * freezes it (SIGSTOP, then SIGCONT).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** One line of the child's `--json` output. */
export type CliRecord = Readonly<Record<string, unknown>>;

const CLI = fileURLToPath(new URL('../main.js', import.meta.url));
/** How many of the child's last stderr lines a failed wait quotes. */
const STDERR_TAIL = 5;

export class CliChild {
  readonly child: ChildProcess;
  /** Resolves with the exit code (null when a signal ended it). */
  readonly exited: Promise<number | null>;
  private readonly listeners = new Set<(r: CliRecord, at: number) => void>();
  /** Fail every pending `next()` once the child's output ended, so no waiter's timer outlives it. */
  private readonly onEnd = new Set<() => void>();
  private ended = false;
  /**
   * The child's last stderr lines. Its diagnostics (a JSON `error` line when it lost a lock) are
   * the demo's to narrate; they are quoted only when a wait on the child fails.
   */
  private readonly stderrTail: string[] = [];

  constructor(
    readonly identity: string,
    args: readonly string[],
  ) {
    this.child = spawn(process.execPath, [CLI, ...args, '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    createInterface({ input: this.child.stderr as NodeJS.ReadableStream }).on('line', (line) => {
      this.stderrTail.push(line);
      if (this.stderrTail.length > STDERR_TAIL) this.stderrTail.shift();
    });
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code) => {
        resolve(code);
      }),
    );
    const lines = createInterface({ input: this.child.stdout as NodeJS.ReadableStream });
    // After the last line (a record printed just before exiting still counts).
    lines.once('close', () => {
      this.ended = true;
      for (const f of [...this.onEnd]) f();
    });
    lines.on('line', (line) => {
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch {
        return;
      }
      if (typeof rec !== 'object' || rec === null) return;
      const at = performance.now();
      for (const l of [...this.listeners]) l(rec as CliRecord, at);
    });
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Calls `listener` with every record from now on, and when it arrived (`performance.now()`). */
  onRecord(listener: (r: CliRecord, at: number) => void): void {
    this.listeners.add(listener);
  }

  /**
   * Resolves with what `match` makes of the first record (from now on) it does not return
   * undefined for; rejects at the deadline or when the child's output ends first.
   */
  next<T>(match: (r: CliRecord, at: number) => T | undefined, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.listeners.delete(listener);
        this.onEnd.delete(ended);
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(`${this.identity}: no matching output within ${timeoutMs} ms${this.said()}`),
        );
      }, timeoutMs);
      const listener = (r: CliRecord, at: number): void => {
        const found = match(r, at);
        if (found === undefined) return;
        done();
        resolve(found);
      };
      const ended = (): void => {
        done();
        reject(new Error(`${this.identity} exited${this.said()}`));
      };
      if (this.ended) {
        ended();
        return;
      }
      this.listeners.add(listener);
      this.onEnd.add(ended);
    });
  }

  /** Its last stderr lines, for an error message. */
  private said(): string {
    return this.stderrTail.length === 0 ? '' : `; its stderr: ${this.stderrTail.join(' | ')}`;
  }

  /** SIGINT: the child lets go of what it holds (resigns, releases) and exits. */
  async stop(): Promise<void> {
    if (this.alive) this.child.kill('SIGINT');
    await this.exited;
  }

  /** SIGKILL: a crash; its lease expires after the TTL. Ends a frozen child too. */
  async kill(): Promise<void> {
    if (this.alive) this.child.kill('SIGKILL');
    await this.exited;
  }

  /** SIGSTOP: the process stops dead (a long GC pause, a VM migration); nothing of it runs. */
  freeze(): void {
    if (this.alive) this.child.kill('SIGSTOP');
  }

  /** SIGCONT: it runs again, from where it stopped. */
  resume(): void {
    if (this.alive) this.child.kill('SIGCONT');
  }
}
