/** One etcd process of a test cluster: start, kill, pause, restart. */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClosedError, EtcdStartError } from '../errors.js';
import { registerPid, unregisterPid } from './cleanup.js';
import { isHealthy, memberStatus, type ClientTls } from './http.js';

/** One member of an {@link EtcdCluster}. */
export interface EtcdMember {
  /** etcd's `--name` of the member, unique within its cluster. */
  readonly name: string;
  /** Client URL, `http://127.0.0.1:PORT` (`https://` in a cluster started with `tls`). */
  readonly endpoint: string;
  /** Peer URL, `http://127.0.0.1:PORT`. */
  readonly peerUrl: string;
  /** etcd's `--data-dir` of the member (removed by the cluster's `stop()`). */
  readonly dataDir: string;
  /** Process id while the process lives (also while paused), else `undefined`. */
  readonly pid: number | undefined;
  /** The process lives (it may be paused). */
  readonly running: boolean;
  /** The process is stopped with SIGSTOP. */
  readonly paused: boolean;
  /** SIGKILLs the process (paused or not); resolves once it has exited. Never throws. */
  kill(): Promise<void>;
  /** SIGSTOPs the process: it keeps its sockets but answers nothing, like a stalled machine. */
  pause(): void;
  /** SIGCONTs a paused process. */
  resume(): void;
  /**
   * Starts the member again with the same data dir, name and ports (killing it first if it
   * runs) and resolves when it answers `/health`, which in a multi-member cluster needs quorum:
   * to bring back a majority of members, restart them concurrently.
   *
   * @throws {@link EtcdStartError} when it exits or is not healthy within the start timeout
   * @throws {@link ClosedError} after the cluster was stopped
   */
  restart(): Promise<void>;
}

/** How to run one member. */
export interface MemberSpec {
  binary: string;
  name: string;
  clientPort: number;
  peerPort: number;
  dir: string;
  args: string[];
  logFile: string;
  dataDir: string;
  startTimeoutMs: number;
  /** Set when the member serves clients over TLS: what the kit's own https polls present. */
  clientTls?: ClientTls | undefined;
}

const LOG_TAIL_LINES = 30;

/** The last lines of a log file, or a note why it cannot be read. */
export function logTail(file: string): string {
  try {
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    const tail = lines.slice(-LOG_TAIL_LINES).join('\n');
    return tail === '' ? '(log is empty)' : tail;
  } catch (err) {
    return `(cannot read log: ${err instanceof Error ? err.message : String(err)})`;
  }
}

/** @internal The implementation behind {@link EtcdMember}; only the kit constructs it. */
export class EtcdMemberImpl implements EtcdMember {
  readonly name: string;
  readonly endpoint: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly logFile: string;
  readonly #spec: MemberSpec;
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #running = false;
  #paused = false;
  #exitDescription = 'not started';
  #closed = false;

  constructor(spec: MemberSpec) {
    this.#spec = spec;
    this.name = spec.name;
    const scheme = spec.clientTls === undefined ? 'http' : 'https';
    this.endpoint = `${scheme}://127.0.0.1:${spec.clientPort}`;
    this.peerUrl = `http://127.0.0.1:${spec.peerPort}`;
    this.dataDir = spec.dataDir;
    this.logFile = spec.logFile;
  }

  get pid(): number | undefined {
    return this.#running ? this.#child?.pid : undefined;
  }

  get running(): boolean {
    return this.#running;
  }

  get paused(): boolean {
    return this.#paused;
  }

  /** @internal Spawns the process; its output goes to the member's log file (appended). */
  spawnProcess(): void {
    mkdirSync(this.#spec.dir, { recursive: true });
    const fd = openSync(this.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(this.#spec.binary, this.#spec.args, { stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    const pid = child.pid;
    if (pid === undefined) {
      // spawn failed (ENOENT, EACCES...): the 'error' event follows; swallow it, report here.
      child.on('error', () => undefined);
      throw new EtcdStartError(`etcd member ${this.name}: could not spawn ${this.#spec.binary}`);
    }
    registerPid(pid);
    this.#child = child;
    this.#running = true;
    this.#paused = false;
    this.#exitDescription = 'running';
    this.#exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.#running = false;
        this.#paused = false;
        this.#exitDescription = signal === null ? `exit code ${code ?? '?'}` : `signal ${signal}`;
        unregisterPid(pid);
        resolve();
      });
    });
    child.on('error', () => undefined);
    // A forgotten cluster must not keep the test process alive; the 'exit' handler kills it.
    child.unref();
  }

  /**
   * @internal Polls /health until healthy. Fails at once when the process exits (etcd exits on
   * a bad flag or a taken port), and at `deadline` otherwise.
   */
  async waitReady(deadline: number): Promise<void> {
    const child = this.#child;
    for (;;) {
      if (!this.#running || this.#child !== child) {
        throw this.startError(`exited during start (${this.#exitDescription})`);
      }
      const left = deadline - Date.now();
      if (await this.healthy(Math.max(100, Math.min(1000, left)))) return;
      if (Date.now() >= deadline) throw this.startError('did not become healthy in time');
      await Promise.race([sleep(50), this.#exited]);
    }
  }

  /** @internal Whether the member answers GET /health with `{"health":"true"}`. */
  healthy(timeoutMs = 1000): Promise<boolean> {
    return isHealthy(this.endpoint, timeoutMs, this.#spec.clientTls);
  }

  /** @internal The member's id and the leader it knows of (grpc-gateway status). */
  status(timeoutMs = 1000): Promise<{ memberId: string; leaderId: string }> {
    return memberStatus(this.endpoint, timeoutMs, this.#spec.clientTls);
  }

  /** @internal An EtcdStartError carrying the tail of this member's log. */
  startError(why: string): EtcdStartError {
    return new EtcdStartError(
      `etcd member ${this.name} (${this.endpoint}) ${why}; log ${this.logFile}:\n${logTail(this.logFile)}`,
    );
  }

  /** @internal Whether the log says a port was taken (then a fresh cluster retries on others). */
  portWasTaken(): boolean {
    return logTail(this.logFile).includes('address already in use');
  }

  /** @internal No restart after the cluster was stopped. */
  close(): void {
    this.#closed = true;
  }

  async kill(): Promise<void> {
    const child = this.#child;
    if (child === undefined || !this.#running) return;
    // Keep the event loop alive until the exit is observed (the child is unref'd otherwise).
    child.ref();
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
    await this.#exited;
  }

  pause(): void {
    const pid = this.pid;
    if (pid === undefined || this.#paused) return;
    process.kill(pid, 'SIGSTOP');
    this.#paused = true;
  }

  resume(): void {
    const pid = this.pid;
    if (pid === undefined || !this.#paused) return;
    process.kill(pid, 'SIGCONT');
    this.#paused = false;
  }

  #throwIfClosed(): void {
    if (this.#closed) throw new ClosedError('etcd cluster');
  }

  async restart(): Promise<void> {
    this.#throwIfClosed();
    await this.kill();
    // The cluster may have been stopped while we waited.
    this.#throwIfClosed();
    this.spawnProcess();
    await this.waitReady(Date.now() + this.#spec.startTimeoutMs);
  }
}
