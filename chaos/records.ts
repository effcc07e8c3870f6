/**
 * What the chaos run writes down: one JSON object per line, from every worker incarnation, the
 * nemesis and the history recorder. Times are epoch ms with sub-ms precision
 * (clock.ts: each process's `performance.now()` placed on the wall clock), comparable across the
 * processes of one machine.
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { ObserverChange } from '../src/index.js';

interface Base {
  /** Epoch ms. */
  t: number;
}

/**
 * Which lock recipe a hold is of: the mutex, a semaphore permit, one side of the RWMutex, or one
 * of a MultiLock's mutexes.
 */
export type Recipe = 'mutex' | 'semaphore' | 'read' | 'write' | 'multi';

/** The paths (under `multi/`) the workers' MultiLocks take two of. */
export const MULTI_PATHS = ['a', 'b', 'c'] as const;

/** The queues the workers produce to and consume from: a `Queue`, and a `PriorityQueue`. */
export type QueueName = 'fifo' | 'priority';

/** Which queue an enqueue or dequeue record is of (older records, without one: the fifo one). */
export function queueOf(r: { queue?: QueueName }): QueueName {
  return r.queue ?? 'fifo';
}

/** The counters incremented under a lock: the mutex's, and the RWMutex writers'. */
export type Counter = 'mutex' | 'rw';

/** Participants of the double barrier the workers meet at. */
export const BARRIER_COUNT = 2;

/** Whose an ephemeral key's value is: worker slot, incarnation, cycle and update number. */
export interface EphemeralOwner {
  w: string;
  inc: number;
  c: number;
  n: number;
}

/** An ephemeral key's value as the workers write it (the vandal writes {@link VANDAL_VALUE}). */
export function ephemeralValue(w: string, inc: number, c: number, n: number): string {
  return JSON.stringify({ w, inc, c, n } satisfies EphemeralOwner);
}

/** The value the vandal writes (without a lease) over an ephemeral key. */
export const VANDAL_VALUE = 'vandal';

/** Whose a value is (undefined: the vandal's, or not an ephemeral key's). */
export function ephemeralOwner(value: string): EphemeralOwner | undefined {
  let v: Partial<EphemeralOwner> | null;
  try {
    v = JSON.parse(value) as Partial<EphemeralOwner> | null;
  } catch {
    return undefined;
  }
  return typeof v?.w === 'string' && typeof v.inc === 'number' ? (v as EphemeralOwner) : undefined;
}

/** Permits of the semaphore the workers share. */
export const SEMAPHORE_PERMITS = 2;

/** The accounts the workers transfer between with `conn.stm`, and what each holds at first. */
export const ACCOUNTS = 5;
export const OPENING_BALANCE = 100;

/** A worker incarnation's records carry `w` (worker slot) and `inc` (incarnation). */
interface WorkerBase extends Base {
  w: string;
  inc: number;
}

export type WorkerRecord = WorkerBase &
  (
    | { kind: 'start'; pid: number }
    /** A keepalive ack: the lease is surely alive until `deadlineAt` (epoch ms). */
    | { kind: 'deadline'; lease: string; deadlineAt: number }
    /** This process closed (and so revoked) or lost a session. */
    | { kind: 'session'; lease: string; state: 'closed' | 'lost' }
    /**
     * A lock recipe's hold began (`deadlineAt`: its session's deadline at that moment). Records
     * from before the semaphore and RWMutex were added have no `recipe` (the mutex) and no
     * `lease` (the key's last segment).
     */
    | {
        kind: 'lock.acquired';
        recipe?: Recipe;
        token: string;
        key: string;
        lease?: string;
        deadlineAt: number;
        /** Got by `tryLock()` (the mutex), not by a waiting call. */
        tried?: boolean;
        /** `lock.revision`: etcd's revision of the read that granted it. */
        revision?: number;
        /**
         * When the library granted it (its lock.acquire diagnostic's `grantedAt`, read just before
         * its last clock check; older records: when the diagnostic came); `t` is when we logged it.
         */
        grantedAt?: number;
      }
    | { kind: 'lock.ended'; token: string; how: 'released' | 'lost' }
    /**
     * One increment of a counter under its lock (`unknown`: no answer, may have landed);
     * `counter` absent: the mutex's.
     */
    | {
        kind: 'inc';
        counter?: Counter;
        token: string;
        outcome: 'ok' | 'failed' | 'unknown';
        value?: number;
        revision?: number;
      }
    /**
     * One `add(1)` of the counter recipe, or (`via: 'cas'`) a read and `compareAndSet(v, v + 1)`:
     * `ok` with the value written; a compare-and-set that found another value is `failed`.
     */
    | { kind: 'add'; outcome: 'ok' | 'failed' | 'unknown'; value?: number; via?: 'add' | 'cas' }
    /** One item enqueued (`ok`: at `key`); `queue` absent: the fifo one. */
    | {
        kind: 'enqueue';
        item: string;
        outcome: 'ok' | 'failed' | 'unknown';
        key?: string;
        queue?: QueueName;
      }
    /** One dequeue (`ok`: `item`, taken from `key` by the delete at `revision`). */
    | {
        kind: 'dequeue';
        queue?: QueueName;
        outcome: 'ok' | 'failed' | 'unknown';
        item?: string;
        key?: string;
        revision?: number;
      }
    /** One STM transfer of `amount` between accounts (`ok`: committed at `revision`). */
    | {
        kind: 'transfer';
        outcome: 'ok' | 'failed' | 'unknown';
        from: number;
        to: number;
        amount: number;
        revision?: number;
      }
    /** The double barrier: `enter()` or `leave()` returned, for the participant key `key`. */
    | { kind: 'barrier'; phase: 'entered' | 'left'; key: string }
    /**
     * An ephemeral key's `create()` resolved (cycle `c`), or its `delete()` did (`revision`: of a
     * read made after it).
     */
    | { kind: 'eph'; key: string; phase: 'created' | 'deleted'; c: number; revision?: number }
    /** What an ephemeral key's error stream said. */
    | { kind: 'eph.error'; key: string; message: string; code?: string }
    /** `revision`: the leader event's, etcd's revision of the read that found it first. */
    | { kind: 'lead.gained'; token: string; key: string; deadlineAt: number; revision?: number }
    | { kind: 'lead.ended'; token: string; how: string }
    /**
     * A term of `elector.run(fn)` began (fn called; `revision`: the grant's), or ended (fn's
     * signal aborted, or fn returned).
     */
    | { kind: 'run.started'; token: string; key: string; deadlineAt: number; revision?: number }
    | { kind: 'run.ended'; token: string; how: string }
    | { kind: 'work'; token: string; outcome: 'ok' | 'failed' | 'unknown'; revision?: number }
    | { kind: 'obs.start'; from: number }
    | { kind: 'obs.event'; type: 'put' | 'delete'; key: string; value: string; revision: number }
    | { kind: 'obs.resync'; revision: number; snapshot: Record<string, string> }
    | { kind: 'tracker'; revision: number; names: string[]; error?: string }
    | { kind: 'error'; where: string; message: string; code?: string }
    | { kind: 'unhandled'; message: string }
    | { kind: 'exit'; code: number }
  );

/** The fault injector's records. */
export interface FaultRecord extends Base {
  kind: 'fault';
  phase: 'start' | 'end';
  /** What kind of fault (`member-kill`, `worker-pause-long`, `proxy-blackhole-short`, ...). */
  fault: string;
  /** Whom it hit (`m1`, `w3`, `cluster`). */
  target: string;
  /** Pairs a start with its end. */
  id: number;
}

/** The vandal deleted an ephemeral key, or wrote {@link VANDAL_VALUE} over it without a lease. */
export interface VandalRecord extends Base {
  kind: 'vandal';
  key: string;
  act: 'delete' | 'overwrite';
  /** The revision of the act. */
  revision: number;
}

/**
 * A member reported a raft term higher than any seen before: a leader election. A new leader
 * restarts every lease's TTL, plus its election timeout (etcd's lessor `Promote`), so a dead
 * worker's lease can outlive the fault that caused the election (e.g. a member resumed from a
 * pause calls one) by that much.
 */
export interface RaftRecord extends Base {
  kind: 'raft';
  term: number;
  /** The leader's member id (hex) as the reporting member saw it. */
  leader: string;
  /** The member that reported it (`m0`...). */
  member: string;
  /** The extension etcd adds to every lease on promotion: the cluster's election timeout, ms. */
  extendMs: number;
}

/** One event of etcd's history under the chaos root, as the recorder (an observer) saw it. */
export interface HistoryRecord extends Base, ObserverChange {
  kind: 'history';
}

/** The recorder had to re-list: history it needed was gone (the run cannot be checked fully). */
export interface HistoryGapRecord extends Base {
  kind: 'history.gap';
  revision: number;
}

/** What the controller saw at the end. */
export interface FinalRecord extends Base {
  kind: 'final';
  /** The mutex counter's value in etcd at the end. */
  counter: number;
  /** The RWMutex writers' counter's value at the end (absent in runs before it existed). */
  rwCounter?: number;
  /** Registration names under the services path, read just before the workers were stopped. */
  services: string[];
  /** When the workers were told to stop (what trackers show after that is not checked). */
  stoppedAt: number;
  /** Leases left in etcd after every worker stopped. */
  leasesLeft: number;
  /** Exit code of each worker incarnation that was told to stop (`w#inc` -> code). */
  exits: Record<string, number | null>;
  /** Revision of the writer's last write (every live observer must have reached it). */
  lastWrite: number;
  /**
   * The ephemeral keys (key -> value), read with the services; `ephemeralAt`: when that read
   * began. Absent in runs before the ephemeral keys.
   */
  ephemeral?: Record<string, string>;
  ephemeralAt?: number;
  ephemeralRevision?: number;
}

export type ChaosRecord =
  | WorkerRecord
  | FaultRecord
  | VandalRecord
  | RaftRecord
  | HistoryRecord
  | HistoryGapRecord
  | FinalRecord;

/** A run's own files in its `--out` directory: its records, and the report made of them. */
export function isRunFile(name: string): boolean {
  return name.endsWith('.jsonl') || name === 'summary.md' || name === 'report.html';
}

/**
 * Removes an earlier run's files from `dir` (the logs append: a second run into the same
 * directory would be checked together with the first); anything else there stays.
 */
export function clearRun(dir: string): void {
  for (const name of readdirSync(dir)) if (isRunFile(name)) rmSync(join(dir, name));
}

/** Reads JSON-lines files (a torn last line of a killed process is skipped). */
export function readRecords(files: readonly string[]): ChaosRecord[] {
  const out: ChaosRecord[] = [];
  for (const file of files) {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (line.trim() === '') continue;
      try {
        out.push(JSON.parse(line) as ChaosRecord);
      } catch {
        // a line cut short by kill -9
      }
    }
  }
  return out.sort((a, b) => a.t - b.t);
}

/** The parameters a check needs. */
export interface RunParams {
  /** Session TTL of the workers, in seconds. */
  ttl: number;
  /** The counter incremented under the lock. */
  counterKey: string;
  /** The lock's key prefix (`lockPath + '/'`): holders' keys live here. */
  lockPrefix: string;
  /** The counter RWMutex writers increment. */
  rwCounterKey: string;
  /** Where RWMutex writers' keys live (`rwPath + '/write/'`). */
  rwWritePrefix: string;
  /** The counter recipe's key. */
  addsKey: string;
  /** The queue's items' prefix (`queuePath + '/'`). */
  queuePrefix: string;
  /** The priority queue's items' prefix (`pqueuePath + '/'`). */
  pqueuePrefix: string;
  /** The double barrier's path + '/' (its `waiters/` and `ready` are under it). */
  barrierPrefix: string;
  /** The STM accounts' prefix (account `i` is `accountPrefix + i`). */
  accountPrefix: string;
  /** The key leaders write their fenced work to. */
  workKey: string;
  /** The election's key prefix (`electionPath + '/'`). */
  electionPrefix: string;
  /** The key `elector.run(fn)`'s terms write to, and that election's key prefix. */
  runWorkKey: string;
  runElectionPrefix: string;
  /** The prefix the workers' observers watch (filled by the writer). */
  observedPrefix: string;
  /** Each worker's own ephemeral key is `ephemeralPrefix + w`. */
  ephemeralPrefix: string;
  /** Each worker's cycled ephemeral key is `ephemeralCyclePrefix + w`. */
  ephemeralCyclePrefix: string;
  /** The ephemeral key every worker wants. */
  ephemeralSharedKey: string;
}

/** Where a run under `root` keeps what the checker looks at (the workers use the same paths). */
export function runParams(root: string, ttl: number): RunParams {
  return {
    ttl,
    counterKey: `${root}/counter`,
    lockPrefix: `${root}/lock/`,
    rwCounterKey: `${root}/rwcounter`,
    rwWritePrefix: `${root}/rw/write/`,
    addsKey: `${root}/adds`,
    queuePrefix: `${root}/jobs/`,
    pqueuePrefix: `${root}/pjobs/`,
    barrierPrefix: `${root}/meet/`,
    accountPrefix: `${root}/accounts/`,
    workKey: `${root}/work`,
    electionPrefix: `${root}/election/`,
    runWorkKey: `${root}/runwork`,
    runElectionPrefix: `${root}/run-election/`,
    observedPrefix: `${root}/obs/`,
    ephemeralPrefix: `${root}/eph/`,
    ephemeralCyclePrefix: `${root}/eph-cycle/`,
    ephemeralSharedKey: `${root}/eph-shared`,
  };
}

/** A holder's name: worker slot and incarnation. */
export function holder(r: { w: string; inc: number }): string {
  return `${r.w}#${r.inc}`;
}

/** The records of one kind a worker wrote. */
export type W<K extends WorkerRecord['kind']> = Extract<WorkerRecord, { kind: K }>;

/** Every record of `kind` a worker wrote. */
export function byKind<K extends WorkerRecord['kind']>(
  records: readonly ChaosRecord[],
  kind: K,
): W<K>[] {
  return records.filter((r): r is W<K> => r.kind === kind && 'w' in r);
}

/** Puts of `key` in etcd's history, in revision order. */
export function writesOf(history: readonly HistoryRecord[], key: string): HistoryRecord[] {
  return history.filter((h) => h.key === key && h.type === 'put');
}
