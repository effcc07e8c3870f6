/**
 * A chaos worker: one process that runs, at once, a mutex-protected read-modify-write counter
 * (every increment a fenced transaction), a semaphore's permits held for a few ms, an RWMutex's
 * readers and writers (the writers with a fenced counter of their own), a MultiLock over two of
 * three paths, adds to a counter recipe,
 * a producer and a consumer of one queue, STM transfers between accounts, an elector doing fenced
 * leader work, a service registration, a tracker, and an observer of the prefix the writer fills
 * — and writes down everything it does, synchronously, so a kill -9 loses at most the line being
 * written.
 *
 * Args: --id w1 --inc 0 --endpoints a,b,c --ttl 3 --log file --root /chaos
 * Stops cleanly on a `stop` line on stdin (or stdin's end, or SIGTERM).
 */
import { subscribe } from 'node:diagnostics_channel';
import { closeSync, openSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { setTimeout as wait } from 'node:timers/promises';
import { ACCOUNTS, MULTI_PATHS, SEMAPHORE_PERMITS, type Counter, type Recipe } from './records.js';
import {
  EtcdConnector,
  EtcdConnectorError,
  LEStatus,
  type DiagnosticMessages,
  type Lock,
  type MultiLockHandle,
  type SessionHandle,
} from '../src/index.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) {
  args.set(process.argv[i] ?? '', process.argv[i + 1] ?? '');
}
const id = args.get('--id') ?? 'w?';
const inc = Number(args.get('--inc') ?? '0');
const endpoints = (args.get('--endpoints') ?? '').split(',');
const ttl = Number(args.get('--ttl') ?? '3');
const root = args.get('--root') ?? '/chaos';
const logFd = openSync(args.get('--log') ?? `/tmp/${id}.${inc}.jsonl`, 'a');

/** Epoch ms, comparable across processes. */
function now(): number {
  return performance.timeOrigin + performance.now();
}

function log(record: Record<string, unknown>): void {
  writeSync(logFd, `${JSON.stringify({ t: now(), w: id, inc, ...record })}\n`);
}

function errorFields(err: unknown): { message: string; code?: string } {
  const e = err instanceof Error ? err : new Error(String(err));
  return err instanceof EtcdConnectorError
    ? { message: e.message, code: err.code }
    : { message: e.message };
}

process.on('unhandledRejection', (err) => {
  log({ kind: 'unhandled', ...errorFields(err) });
});
process.on('uncaughtException', (err) => {
  log({ kind: 'unhandled', ...errorFields(err) });
  process.exit(1);
});

const stopping = new AbortController();
const { signal } = stopping;
/** True once the worker was told to stop (a call: lint cannot see the signal change). */
const stopped = (): boolean => signal.aborted;
const conn = new EtcdConnector(endpoints, root.slice(1), {
  callTimeoutMs: 2000,
  dialTimeoutMs: 1000,
});
const path = (...s: string[]): string => conn.constructPath(...s);

// Every keepalive ack moves a lease's deadline: written down so the checker can end a hold at
// the deadline a paused or killed holder last knew.
subscribe('etcd-connector:session.keepalive', (m) => {
  const msg = m as DiagnosticMessages['etcd-connector:session.keepalive'];
  log({ kind: 'deadline', lease: msg.leaseId, deadlineAt: msg.deadlineAt });
});

// A session closed here is one this process revoked itself: the checker blames etcd for a lease
// revoked early only if no close was logged before the revocation. Losses are written down too.
subscribe('etcd-connector:session.state', (m) => {
  const msg = m as DiagnosticMessages['etcd-connector:session.state'];
  if (msg.state === 'closed' || msg.state === 'lost') {
    log({ kind: 'session', lease: msg.leaseId, state: msg.state });
  }
});

/** Waits `ms`, or less if the worker is told to stop. */
function pause(ms: number): Promise<void> {
  return wait(ms, undefined, { signal }).catch(() => undefined);
}

/** A session of our TTL for the lock and the election, renewed after a loss. */
async function session(where: string): Promise<SessionHandle | undefined> {
  while (!stopped()) {
    try {
      return await conn.session({ ttl, signal });
    } catch (err) {
      if (stopped()) return undefined;
      log({ kind: 'error', where, ...errorFields(err) });
      await pause(200);
    }
  }
  return undefined;
}

/** The locks a hold is made of: one, or a MultiLock's. */
function locksOf(held: Lock | MultiLockHandle): readonly Lock[] {
  return 'locks' in held ? held.locks : [held];
}

/**
 * One lock recipe's loop, the same for each: a session; then acquire, log, `work`, log the end,
 * release, a short pause, until the session is gone; then a new session. `recipes` makes the
 * recipe objects of a session and returns the acquiring call; `work` says whether it saw the
 * hold lost. A MultiLock's locks are each written down, as holds of their own paths.
 */
async function holdLoop<H extends Lock | MultiLockHandle>(
  where: string,
  recipes: (s: SessionHandle) => () => Promise<[Recipe, H]>,
  work: (recipe: Recipe, held: H) => Promise<boolean>,
): Promise<void> {
  while (!stopped()) {
    const s = await session(`${where} session`);
    if (s === undefined) return;
    const acquire = recipes(s);
    while (!stopped() && s.isAlive()) {
      let recipe: Recipe;
      let held: H;
      try {
        [recipe, held] = await acquire();
      } catch (err) {
        if (!stopped()) log({ kind: 'error', where, ...errorFields(err) });
        break;
      }
      const locks = locksOf(held);
      for (const l of locks) {
        log({
          kind: 'lock.acquired',
          recipe,
          token: l.token.revision,
          key: l.key,
          lease: s.leaseId,
          deadlineAt: performance.timeOrigin + s.deadline,
        });
      }
      const lost = (await work(recipe, held)) || held.signal.aborted;
      // The hold ends when the holder stops acting on it: before unlock() lets the next one in.
      for (const l of locks) {
        log({ kind: 'lock.ended', token: l.token.revision, how: lost ? 'lost' : 'released' });
      }
      if (!lost) {
        try {
          await held.unlock();
        } catch (err) {
          log({ kind: 'error', where: `${where} unlock`, ...errorFields(err) });
        }
      }
      await pause(20 + Math.random() * 80);
    }
    await s.close();
  }
}

/**
 * A read-modify-write of `counter` under a held lock: read, fenced write of value + 1, a few
 * times. Says whether the lock turned out lost (a refused fence).
 */
async function increments(counter: Counter, held: Lock): Promise<boolean> {
  const key = path(counter === 'mutex' ? 'counter' : 'rwcounter');
  const token = held.token.revision;
  for (let i = 0; i < 3 && !held.signal.aborted && !stopped(); i++) {
    let value = 0;
    try {
      const raw = await conn.client.get(key).string();
      value = raw === null ? 0 : (JSON.parse(raw) as { n: number }).n;
    } catch (err) {
      log({ kind: 'error', where: `${counter} counter read`, ...errorFields(err) });
      return false;
    }
    const next = value + 1;
    try {
      const res = await held.fencedTxn([
        conn.client.put(key).value(JSON.stringify({ n: next, token, w: id, inc })),
      ]);
      log({
        kind: 'inc',
        counter,
        token,
        outcome: 'ok',
        value: next,
        revision: Number(res.header.revision),
      });
    } catch (err) {
      // No answer: it may have landed. A refused fence: it did not.
      const code = err instanceof EtcdConnectorError ? err.code : '';
      const outcome =
        code === 'ETCDC_TIMEOUT' || code === 'ETCDC_UNAVAILABLE' ? 'unknown' : 'failed';
      log({ kind: 'inc', counter, token, outcome, value: next, ...errorFields(err) });
      return outcome === 'failed';
    }
  }
  return false;
}

/** Holds for a few ms (less if the hold is lost or the worker stops): a reader, a permit. */
async function dwell(held: Lock | MultiLockHandle): Promise<boolean> {
  await wait(5 + Math.random() * 25, undefined, {
    signal: AbortSignal.any([held.signal, signal]),
  }).catch(() => undefined);
  return false;
}

/** The mutex guards the counter: lock, read, fenced write of value + 1 (a few times), unlock. */
function counterLoop(): Promise<void> {
  return holdLoop(
    'lock',
    (s) => {
      const mutex = conn.newMutex(path('lock'), { session: s });
      return async () => ['mutex', await mutex.lock({ signal })];
    },
    (_recipe, held) => increments('mutex', held),
  );
}

/** The semaphore: a permit held for a few ms; the checker counts the holders at each moment. */
function semaphoreLoop(): Promise<void> {
  return holdLoop(
    'semaphore',
    (s) => {
      const sem = conn.newSemaphore(path('sem'), SEMAPHORE_PERMITS, { session: s });
      return async () => ['semaphore', await sem.acquire({ signal })];
    },
    (_recipe, held) => dwell(held),
  );
}

/**
 * The RWMutex: mostly readers, who hold for a few ms; writers increment a counter of their own
 * under the write lock (a lost update there means two writers at once).
 */
function rwLoop(): Promise<void> {
  return holdLoop(
    'rwmutex',
    (s) => {
      const rw = conn.newRWMutex(path('rw'), { session: s });
      return async () =>
        Math.random() < 0.3
          ? ['write', await rw.lock({ signal })]
          : ['read', await rw.rlock({ signal })];
    },
    (recipe, held) => (recipe === 'write' ? increments('rw', held) : dwell(held)),
  );
}

/** A MultiLock over two of three paths, held for a few ms: taken in one order, so no deadlock. */
function multiLockLoop(): Promise<void> {
  return holdLoop(
    'multilock',
    (s) => {
      const names = MULTI_PATHS.map((p) => path('multi', p));
      return async () => {
        const skip = Math.floor(Math.random() * names.length);
        const multi = conn.newMultiLock(
          names.filter((_, i) => i !== skip),
          { session: s },
        );
        return ['multi', await multi.lock({ signal })];
      };
    },
    (_recipe, held) => dwell(held),
  );
}

/**
 * The counter, queue and STM loops wait this long or up to twice as long between calls: enough
 * for thousands of each in a long run, while leaving the lock loops the CPU (at 20-90 ms, seed
 * 7004 held the mutex 1,314 times in 600 s; seed 7002, without these loops, 4,097).
 */
const TOOLBOX_PACE_MS = 100;

/** What an ended call did: `ok`; `unknown` (its answer was lost: it may have landed); `failed`. */
function outcomeOf(err: unknown): 'unknown' | 'failed' {
  return err instanceof EtcdConnectorError && err.code === 'ETCDC_OUTCOME_UNKNOWN'
    ? 'unknown'
    : 'failed';
}

/**
 * The counter recipe: `add(1)` over and over. The README promises an add either resolves with
 * its value, lands exactly once, or rejects without landing (`OutcomeUnknownError` aside).
 */
async function adderLoop(): Promise<void> {
  const counter = conn.newCounter(path('adds'));
  while (!stopped()) {
    try {
      log({ kind: 'add', outcome: 'ok', value: await counter.add(1, { signal }) });
    } catch (err) {
      log({ kind: 'add', outcome: outcomeOf(err), ...errorFields(err) });
    }
    await pause(TOOLBOX_PACE_MS + Math.random() * TOOLBOX_PACE_MS);
  }
}

/** The queue's producer: items `<worker>#<incarnation>:<n>`, each enqueued once. */
async function producerLoop(): Promise<void> {
  const queue = conn.newQueue(path('jobs'));
  for (let n = 0; !stopped(); n++) {
    const item = `${id}#${inc}:${n}`;
    try {
      log({ kind: 'enqueue', item, outcome: 'ok', key: await queue.enqueue(item, { signal }) });
    } catch (err) {
      log({ kind: 'enqueue', item, outcome: outcomeOf(err), ...errorFields(err) });
    }
    await pause(TOOLBOX_PACE_MS + Math.random() * TOOLBOX_PACE_MS);
  }
}

/** The queue's consumer: each item it is given, written down at once. */
async function consumerLoop(): Promise<void> {
  const queue = conn.newQueue(path('jobs'));
  while (!stopped()) {
    try {
      const { key, value, revision } = await queue.dequeueItem({ signal });
      log({ kind: 'dequeue', outcome: 'ok', item: value, key, revision: Number(revision) });
    } catch (err) {
      const outcome = outcomeOf(err);
      // Stopping: the waiting dequeue gives up, having taken nothing.
      if (!stopped() || outcome === 'unknown')
        log({ kind: 'dequeue', outcome, ...errorFields(err) });
      if (!stopped()) await pause(100);
    }
  }
}

/**
 * STM transfers: a random amount from one account to another, if it is there. The README
 * promises the total never changes and a transfer commits once or, rejected, not at all.
 */
async function transferLoop(): Promise<void> {
  const account = (i: number): string => path('accounts', String(i));
  while (!stopped()) {
    const from = Math.floor(Math.random() * ACCOUNTS);
    const to = (from + 1 + Math.floor(Math.random() * (ACCOUNTS - 1))) % ACCOUNTS;
    const amount = 1 + Math.floor(Math.random() * 10);
    const transfer = { kind: 'transfer', from, to, amount };
    try {
      const done = await conn.stm(
        async (tx) => {
          const balance = Number((await tx.get(account(from))) ?? '0');
          if (balance < amount) return false;
          tx.put(account(from), String(balance - amount));
          tx.put(account(to), String(Number((await tx.get(account(to))) ?? '0') + amount));
          return true;
        },
        { signal },
      );
      if (done.result) log({ ...transfer, outcome: 'ok', revision: Number(done.revision) });
    } catch (err) {
      log({ ...transfer, outcome: outcomeOf(err), ...errorFields(err) });
    }
    await pause(TOOLBOX_PACE_MS + Math.random() * TOOLBOX_PACE_MS);
  }
}

/** The elector: while leader, fenced writes of its token to the work key. */
async function electorLoop(): Promise<void> {
  const work = path('work');
  while (!stopped()) {
    const s = await session('election session');
    if (s === undefined) return;
    const elector = conn.newLeaderElector(path('election'), id, ttl, { session: s });
    let leading: string | undefined;
    let n = 0;
    const stream = elector.start({ signal });
    const writer = (async () => {
      while (!stopped() && !s.signal.aborted) {
        const token = elector.fencingToken;
        if (token !== undefined && elector.isLeader) {
          try {
            const res = await elector.fencedTxn([
              conn.client
                .put(work)
                .value(JSON.stringify({ token: token.revision, w: id, inc, n: n++ })),
            ]);
            log({
              kind: 'work',
              token: token.revision,
              outcome: 'ok',
              revision: Number(res.header.revision),
            });
          } catch (err) {
            const code = err instanceof EtcdConnectorError ? err.code : '';
            const outcome =
              code === 'ETCDC_TIMEOUT' || code === 'ETCDC_UNAVAILABLE' ? 'unknown' : 'failed';
            log({ kind: 'work', token: token.revision, outcome, ...errorFields(err) });
          }
        }
        await pause(100);
      }
    })();
    try {
      for await (const ev of stream) {
        if (ev.status === LEStatus.Leader && ev.token !== undefined) {
          if (leading !== ev.token.revision) {
            if (leading !== undefined) log({ kind: 'lead.ended', token: leading, how: 'new term' });
            leading = ev.token.revision;
            log({
              kind: 'lead.gained',
              token: leading,
              key: ev.token.key,
              deadlineAt: performance.timeOrigin + s.deadline,
            });
          }
        } else if (leading !== undefined) {
          log({
            kind: 'lead.ended',
            token: leading,
            how: ev.suspended ? 'suspended' : (ev.error?.name ?? 'follower'),
          });
          leading = undefined;
        }
      }
    } catch (err) {
      if (!stopped()) log({ kind: 'error', where: 'elector', ...errorFields(err) });
    }
    if (leading !== undefined) log({ kind: 'lead.ended', token: leading, how: 'stopped' });
    await elector.stop();
    await writer;
    await s.close();
  }
}

async function registration(): Promise<void> {
  const reg = conn.newRegistration(path('services'), id);
  for (;;) {
    try {
      const errors = await reg.register(`${id}#${inc}`, ttl, { signal });
      void (async () => {
        for await (const err of errors)
          log({ kind: 'error', where: 'registration', ...errorFields(err) });
      })();
      return;
    } catch (err) {
      if (stopped()) return;
      log({ kind: 'error', where: 'register', ...errorFields(err) });
      await pause(300);
    }
  }
}

async function trackerLoop(): Promise<void> {
  const tracker = conn.newServiceTracker(path('services'));
  try {
    for await (const data of tracker.start({ signal })) {
      log({
        kind: 'tracker',
        revision: data.revision,
        names: [...data.services.keys()],
        ...(data.error === undefined ? {} : { error: data.error.message }),
      });
    }
  } catch (err) {
    if (!stopped()) log({ kind: 'error', where: 'tracker', ...errorFields(err) });
  }
}

async function observerLoop(): Promise<void> {
  const prefix = path('obs');
  let from = 0;
  while (from === 0 && !stopped()) {
    try {
      from = Number((await conn.client.get(prefix).exec()).header.revision) + 1;
    } catch (err) {
      log({ kind: 'error', where: 'observer start', ...errorFields(err) });
      await pause(200);
    }
  }
  if (stopped()) return;
  log({ kind: 'obs.start', from });
  try {
    for await (const ev of conn
      .newObserver(prefix)
      .start({ fromRevision: from, recursive: true, signal })) {
      if (ev.type === 'resync') {
        log({
          kind: 'obs.resync',
          revision: ev.revision,
          snapshot: Object.fromEntries(ev.snapshot),
        });
      } else if (ev.type === 'put' || ev.type === 'delete') {
        log({
          kind: 'obs.event',
          type: ev.type,
          key: ev.key,
          value: ev.value,
          revision: ev.revision,
        });
      }
    }
  } catch (err) {
    if (!stopped()) log({ kind: 'error', where: 'observer', ...errorFields(err) });
  }
}

async function main(): Promise<void> {
  log({ kind: 'start', pid: process.pid });
  const stop = (): void => {
    stopping.abort();
  };
  process.on('SIGTERM', stop);
  createInterface({ input: process.stdin })
    .on('line', (line) => {
      if (line.trim() === 'stop') stop();
    })
    .on('close', stop);
  const running = Promise.all([
    counterLoop(),
    semaphoreLoop(),
    rwLoop(),
    multiLockLoop(),
    adderLoop(),
    producerLoop(),
    consumerLoop(),
    transferLoop(),
    electorLoop(),
    registration(),
    trackerLoop(),
    observerLoop(),
  ]);
  await new Promise<void>((resolve) => {
    signal.addEventListener(
      'abort',
      () => {
        resolve();
      },
      { once: true },
    );
  });
  await running;
  await conn.close();
  log({ kind: 'exit', code: 0 });
  closeSync(logFd);
  // Nothing of ours may keep the process alive now: it exits by itself.
}

main().catch((err: unknown) => {
  log({ kind: 'unhandled', ...errorFields(err) });
  process.exitCode = 1;
});
