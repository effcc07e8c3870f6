/**
 * A chaos worker's lock loops: the mutex (with a fenced counter), a semaphore, an RWMutex (its
 * writers with a fenced counter of their own) and MultiLocks, on one loop that writes each hold
 * down.
 */
import { subscribe } from 'node:diagnostics_channel';
import { setTimeout as wait } from 'node:timers/promises';
import { clockOrigin, fromLibrary } from './clock.js';
import { MULTI_PATHS, SEMAPHORE_PERMITS, type Counter, type Recipe } from './records.js';
import {
  conn,
  errorFields,
  id,
  impatient,
  inc,
  log,
  path,
  pause,
  session,
  signal,
  stopped,
  ttl,
} from './worker-context.js';
import {
  AbortError,
  EtcdConnectorError,
  type DiagnosticMessages,
  type Lock,
  type MultiLockHandle,
  type SessionHandle,
} from '../src/index.js';
import { anySignal } from '../src/transport/timers.js';

/**
 * What the library said of each grant (`key|token` ->), from its lock.acquire diagnostic: when
 * (read just before its last clock check, so a pause between the grant and our log line, seed
 * 9012: 4.2 s, or even between that check and the diagnostic, seed 20261129, 3 workers: 4.5 s,
 * does not make a grant look late), under which lease (a mutex handed over between two callers
 * of this worker holds under the connector's spare session), and its deadline then.
 */
const grants = new Map<string, { grantedAt: number; lease: string; deadlineAt: number }>();
subscribe('etcd-connector:lock.acquire', (m) => {
  const msg = m as DiagnosticMessages['etcd-connector:lock.acquire'];
  grants.set(`${msg.key}|${msg.token}`, {
    grantedAt: fromLibrary(msg.grantedAt),
    lease: msg.lease,
    deadlineAt: fromLibrary(msg.deadlineAt),
  });
});

/** The locks a hold is made of: one, or a MultiLock's. */
function locksOf(held: Lock | MultiLockHandle): readonly Lock[] {
  return 'locks' in held ? held.locks : [held];
}

/**
 * One lock recipe's loop, the same for each: a session; then acquire (giving up after a while,
 * as `impatient()` does: an aborted wait must leave no key behind to block the others), log,
 * `work`, log the end, release, a short pause, until the session is gone; then a new session.
 * `recipes` makes the recipe objects of a session and returns the acquiring call; `work` says
 * whether it saw the hold lost. A MultiLock's locks are each written down, as holds of their own
 * paths.
 */
async function holdLoop<H extends Lock | MultiLockHandle>(
  where: string,
  recipes: (s: SessionHandle) => () => Promise<[Recipe, H, { tried?: boolean }?]>,
  work: (recipe: Recipe, held: H) => Promise<boolean>,
): Promise<void> {
  while (!stopped()) {
    const s = await session(`${where} session`);
    if (s === undefined) return;
    const acquire = recipes(s);
    while (!stopped() && s.isAlive()) {
      let recipe: Recipe;
      let held: H;
      let how: { tried?: boolean } | undefined;
      try {
        [recipe, held, how] = await acquire();
      } catch (err) {
        if (stopped()) break;
        // Given up waiting (see `impatient()`): the same session waits again.
        if (err instanceof AbortError) continue;
        log({ kind: 'error', where, ...errorFields(err) });
        break;
      }
      const locks = locksOf(held);
      for (const l of locks) {
        const grant = `${l.key}|${l.token.revision}`;
        const said = grants.get(grant);
        log({
          kind: 'lock.acquired',
          grantedAt: said?.grantedAt,
          recipe,
          token: l.token.revision,
          revision: l.revision,
          key: l.key,
          lease: said?.lease ?? s.leaseId,
          deadlineAt: said?.deadlineAt ?? clockOrigin + s.deadline,
          ...how,
        });
        grants.delete(grant);
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
 * A read-modify-write of `counter` under a held lock: read, fenced write of value + 1, one to
 * three times (holds of different lengths; shorter ones hand the lock over more often). Says
 * whether the lock turned out lost (a refused fence).
 */
async function increments(counter: Counter, held: Lock): Promise<boolean> {
  const key = path(counter === 'mutex' ? 'counter' : 'rwcounter');
  const token = held.token.revision;
  const times = 1 + Math.floor(Math.random() * 3);
  for (let i = 0; i < times && !held.signal.aborted && !stopped(); i++) {
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
    signal: anySignal([held.signal, signal]),
  }).catch(() => undefined);
  return false;
}

/**
 * The mutex guards the counter: lock, read, fenced write of value + 1 (1-3 times), unlock. One
 * time in four it tries first (`tryLock()`), and waits only when the lock is held elsewhere.
 * `shared`: on the connector's session of the TTL rather than a given one, as most services
 * lock — so a release may hand the lock to another such loop of this worker under the spare
 * session (engines/lock-handoff.ts).
 */
export function counterLoop(shared = false): Promise<void> {
  return holdLoop(
    shared ? 'lock shared' : 'lock',
    (s) => {
      const mutex = conn.newMutex(path('lock'), shared ? { ttl } : { session: s });
      return async () => {
        const tried = Math.random() < 0.25 ? await mutex.tryLock() : undefined;
        if (tried !== undefined) return ['mutex', tried, { tried: true }];
        return ['mutex', await mutex.lock({ signal: impatient() })];
      };
    },
    (_recipe, held) => increments('mutex', held),
  );
}

/** The semaphore: a permit held for a few ms; the checker counts the holders at each moment. */
export function semaphoreLoop(): Promise<void> {
  return holdLoop(
    'semaphore',
    (s) => {
      const sem = conn.newSemaphore(path('sem'), SEMAPHORE_PERMITS, { session: s });
      return async () => ['semaphore', await sem.acquire({ signal: impatient() })];
    },
    (_recipe, held) => dwell(held),
  );
}

/**
 * The RWMutex: mostly readers, who hold for a few ms; writers increment a counter of their own
 * under the write lock (a lost update there means two writers at once).
 */
export function rwLoop(): Promise<void> {
  return holdLoop(
    'rwmutex',
    (s) => {
      const rw = conn.newRWMutex(path('rw'), { session: s });
      return async () =>
        Math.random() < 0.3
          ? ['write', await rw.lock({ signal: impatient() })]
          : ['read', await rw.rlock({ signal: impatient() })];
    },
    (recipe, held) => (recipe === 'write' ? increments('rw', held) : dwell(held)),
  );
}

/** A MultiLock over two of three paths, held for a few ms: taken in one order, so no deadlock. */
export function multiLockLoop(): Promise<void> {
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
        return ['multi', await multi.lock({ signal: impatient() })];
      };
    },
    (_recipe, held) => dwell(held),
  );
}
