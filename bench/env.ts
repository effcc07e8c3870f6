/**
 * What every bench case gets: the etcd endpoints, the repetition policy, raw etcd3 clients that are
 * closed after the case, our library (loaded lazily so the peers can be measured while a recipe is
 * still missing), notes for the report, and line-oriented child processes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { uniqueName } from '../src/testing/index.js';
import { now } from './stats.js';

/** Our public module. */
export type Ours = typeof import('../src/index.js');

/** A line a child wrote, stamped with the parent's monotonic clock on arrival. */
export interface Line {
  readonly text: string;
  readonly at: number;
}

const children = new Set<LineProcess>();

/** Kills every child still running (synchronously: also usable from an 'exit' handler). */
export function killAllChildren(): void {
  for (const child of children) child.kill('SIGKILL');
}

/** A child process whose stdout is read line by line. */
export class LineProcess {
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly #lines: Line[] = [];
  #cursor = 0;
  #stderr = '';
  #wake: (() => void) | undefined;
  #exitCode: number | null | undefined;

  constructor(command: string, args: readonly string[], env?: NodeJS.ProcessEnv) {
    this.proc = spawn(command, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: env ?? process.env,
    });
    children.add(this);
    const out = this.proc.stdout;
    const err = this.proc.stderr;
    if (out === null || err === null) throw new Error('child without pipes');
    createInterface({ input: out }).on('line', (text) => {
      this.#lines.push({ text, at: now() });
      this.#wake?.();
    });
    err.on('data', (chunk: Buffer) => {
      this.#stderr = (this.#stderr + chunk.toString()).slice(-2000);
    });
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code) => {
        this.#exitCode = code;
        children.delete(this);
        this.#wake?.();
        resolve(code);
      });
      this.proc.on('error', () => {
        this.#exitCode = null;
        children.delete(this);
        this.#wake?.();
        resolve(null);
      });
    });
  }

  /** True until the process exited. */
  get running(): boolean {
    return this.#exitCode === undefined;
  }

  /**
   * Resolves with the next unread line that satisfies `match` (lines before it are consumed).
   * Rejects when the process exits first or `timeoutMs` passes.
   */
  async waitLine(match: (text: string) => boolean, timeoutMs: number, what: string): Promise<Line> {
    const deadline = now() + timeoutMs;
    for (;;) {
      while (this.#cursor < this.#lines.length) {
        const line = this.#lines[this.#cursor++];
        if (line !== undefined && match(line.text)) return line;
      }
      const left = deadline - now();
      if (!this.running || left <= 0) {
        const why = this.running
          ? `not within ${timeoutMs} ms`
          : `child exited (${this.#exitCode})`;
        throw new Error(`waiting for ${what}: ${why}; stderr: ${this.#stderr.trim() || '-'}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          this.#wake = undefined;
          resolve();
        };
      });
    }
  }

  /** Waits for the next JSON line of the form `{ "event": name, ... }`. */
  async waitEvent(name: string, timeoutMs: number): Promise<Line & { data: ChildMessage }> {
    const line = await this.waitLine((t) => parseMessage(t)?.event === name, timeoutMs, name);
    return { ...line, data: parseMessage(line.text) ?? { event: name } };
  }

  /** Sends one line to the child's stdin. */
  send(text: string): void {
    this.proc.stdin?.write(`${text}\n`);
  }

  kill(signal: NodeJS.Signals): void {
    if (this.running) this.proc.kill(signal);
  }

  /** Kills the child (SIGKILL) unless it exited, and waits for its exit. Never throws. */
  async stop(graceMs = 0): Promise<void> {
    if (this.running && graceMs > 0) {
      this.proc.stdin?.end();
      const timer = new Promise((resolve) => setTimeout(resolve, graceMs).unref());
      await Promise.race([this.exited, timer]);
    }
    this.kill('SIGKILL');
    await this.exited;
  }
}

/** What bench children print: one JSON object per line. */
export interface ChildMessage {
  readonly event: string;
  readonly [field: string]: unknown;
}

function parseMessage(text: string): ChildMessage | undefined {
  if (!text.startsWith('{')) return undefined;
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value === 'object' && value !== null && 'event' in value) {
      return value as ChildMessage;
    }
  } catch {
    // not ours
  }
  return undefined;
}

/** Path of a compiled bench child script (`bench/children/<name>.ts`). */
export function childScript(name: string): string {
  return fileURLToPath(new URL(`./children/${name}.js`, import.meta.url));
}

let oursModule: Promise<Ours | Error> | undefined;

/** Everything a case needs. */
export class BenchEnv {
  readonly notes: string[] = [];
  readonly #clients = new Set<Etcd3>();

  constructor(
    readonly endpoints: string[],
    readonly quick: boolean,
    readonly etcdctl: string,
  ) {}

  /** `quick` repetitions under `--quick`, else `full`. */
  reps(quick: number, full: number): number {
    return this.quick ? quick : full;
  }

  /** A unique key prefix (starting with `/bench/`), so cases never see each other's keys. */
  prefix(name: string): string {
    return `/bench/${uniqueName(name)}`;
  }

  /** A raw etcd3 client, closed by {@link closeClients} after the case. */
  rawClient(endpoints: readonly string[] = this.endpoints): Etcd3 {
    const client = new Etcd3({ hosts: [...endpoints] });
    this.#clients.add(client);
    return client;
  }

  /** Closes the raw clients of the finished case. */
  closeClients(): void {
    for (const client of this.#clients) client.close();
    this.#clients.clear();
  }

  /** Our library, or undefined (with a note) when it cannot be loaded yet. */
  async ours(): Promise<Ours | undefined> {
    oursModule ??= import('../src/index.js').catch((err: unknown) =>
      err instanceof Error ? err : new Error(String(err)),
    );
    const mod = await oursModule;
    if (!(mod instanceof Error)) return mod;
    this.note(`our library could not be loaded (${mod.message}): our figures are n/a`);
    return undefined;
  }

  /**
   * Runs one measurement of our side. A failure (a recipe that throws, a missing method) becomes a
   * note and `undefined`, so the peers of the case are still measured.
   */
  async guard<T>(what: string, fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (err) {
      this.note(`ours failed in ${what}: ${err instanceof Error ? err.message : String(err)}`);
      return undefined;
    }
  }

  /** Adds a line under the table (deduplicated). */
  note(text: string): void {
    if (!this.notes.includes(text)) this.notes.push(text);
  }

  /** Progress on stderr (the table goes to stdout). */
  log(text: string): void {
    process.stderr.write(`[bench] ${text}\n`);
  }
}

/** A promise with its resolve function exposed. */
export function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Waits `ms` (used only for settling between repetitions, never to wait for a result). */
export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
