/**
 * A chaos worker's toolbox loops: the writes whose answer can be lost (adds and compare-and-sets
 * to a counter, a producer and a consumer of two queues — a Queue, a PriorityQueue —, STM
 * transfers) and a double barrier. Each call's outcome is written down for the checker.
 */
import { AbortError, TooManyParticipantsError } from '../src/index.js';
import { ACCOUNTS, BARRIER_COUNT, type QueueName } from './records.js';
import {
  conn,
  errorFields,
  id,
  impatient,
  inc,
  log,
  outcomeOf,
  path,
  pause,
  signal,
  stopped,
  ttl,
} from './worker-context.js';
import { anySignal } from '../src/transport/timers.js';

/**
 * The counter, queue and STM loops wait this long or up to twice as long between calls: enough
 * for thousands of each in a long run, while leaving the lock loops the CPU (at 20-90 ms, seed
 * 7004 held the mutex 1,314 times in 600 s; seed 7002, without these loops, 4,097).
 */
const TOOLBOX_PACE_MS = 100;

/**
 * The counter recipe: `add(1)` over and over, and now and then a read and `compareAndSet(v, v +
 * 1)`, each given up after a while (see `impatient()`). The README promises an add either
 * resolves with its value, lands exactly once, or rejects without landing
 * (`OutcomeUnknownError` aside); a compare-and-set that says false never lands.
 */
export async function adderLoop(): Promise<void> {
  const counter = conn.newCounter(path('adds'));
  while (!stopped()) {
    const via = Math.random() < 0.3 ? 'cas' : 'add';
    try {
      let value: number | undefined;
      if (via === 'add') value = await counter.add(1, { signal: impatient() });
      else {
        const seen = await counter.get({ signal });
        if (await counter.compareAndSet(seen, seen + 1, { signal: impatient() })) value = seen + 1;
      }
      log({ kind: 'add', via, outcome: value === undefined ? 'failed' : 'ok', value });
    } catch (err) {
      log({ kind: 'add', via, outcome: outcomeOf(err), ...errorFields(err) });
    }
    await pause(TOOLBOX_PACE_MS + Math.random() * TOOLBOX_PACE_MS);
  }
}

/** The two queues (their objects made once per worker: they share one claim loop each). */
const queues = {
  fifo: conn.newQueue(path('jobs')),
  priority: conn.newPriorityQueue(path('pjobs')),
} as const satisfies Record<QueueName, unknown>;

/**
 * The queues' producer: items `<worker>#<incarnation>:<n>`, each enqueued once (or given up
 * after a while: see `impatient()`), to either queue (to the priority queue at a random priority
 * of 0-3).
 */
export async function producerLoop(): Promise<void> {
  for (let n = 0; !stopped(); n++) {
    const item = `${id}#${inc}:${n}`;
    const queue: QueueName = Math.random() < 0.5 ? 'fifo' : 'priority';
    try {
      const key =
        queue === 'fifo'
          ? await queues.fifo.enqueue(item, { signal: impatient() })
          : await queues.priority.enqueue(item, Math.floor(Math.random() * 4), {
              signal: impatient(),
            });
      log({ kind: 'enqueue', queue, item, outcome: 'ok', key });
    } catch (err) {
      log({ kind: 'enqueue', queue, item, outcome: outcomeOf(err), ...errorFields(err) });
    }
    await pause(TOOLBOX_PACE_MS + Math.random() * TOOLBOX_PACE_MS);
  }
}

/** How long the consumer waits on one queue before it tries the other, in ms. */
const CONSUMER_TURN_MS = 500;

/**
 * The queues' consumer: takes from one queue, then the other, giving up on an empty one after
 * {@link CONSUMER_TURN_MS} (an abort that may come while its claim is in flight: the README
 * promises the item is delivered all the same). Each item it is given, written down at once.
 */
export async function consumerLoop(): Promise<void> {
  for (let turn = 0; !stopped(); turn++) {
    const queue: QueueName = turn % 2 === 0 ? 'fifo' : 'priority';
    const turnOver = AbortSignal.timeout(CONSUMER_TURN_MS);
    try {
      const { key, value, revision } = await queues[queue].dequeueItem({
        signal: anySignal([signal, turnOver]),
      });
      log({ kind: 'dequeue', queue, outcome: 'ok', item: value, key, revision: Number(revision) });
    } catch (err) {
      const outcome = outcomeOf(err);
      // Given up (the turn is over, or the worker stops) having taken nothing: nothing to say.
      if (outcome === 'unknown' || !(stopped() || turnOver.aborted)) {
        log({ kind: 'dequeue', queue, outcome, ...errorFields(err) });
        if (!stopped()) await pause(100);
      }
    }
  }
}

/**
 * The double barrier: meet {@link BARRIER_COUNT} - 1 other worker (an `enter()` given up after a
 * while: see `impatient()`; one that finds the barrier full fails, as promised), stay a moment,
 * leave together. Each pass written down with its participant key.
 */
export async function barrierLoop(): Promise<void> {
  // Under the run's TTL: a participant killed inside holds the others' leave until its lease
  // ends (the liveness row allows TTL + 2 s; the default session would be 10 s).
  const barrier = conn.newDoubleBarrier(path('meet'), BARRIER_COUNT, { ttl });
  while (!stopped()) {
    try {
      await barrier.enter({ signal: impatient() });
      const key = barrier.key ?? '';
      log({ kind: 'barrier', phase: 'entered', key });
      await pause(5 + Math.random() * 25);
      await barrier.leave({ signal });
      log({ kind: 'barrier', phase: 'left', key });
    } catch (err) {
      const expected = err instanceof AbortError || err instanceof TooManyParticipantsError;
      if (!stopped() && !expected) log({ kind: 'error', where: 'barrier', ...errorFields(err) });
    }
    await pause(TOOLBOX_PACE_MS + Math.random() * TOOLBOX_PACE_MS);
  }
}

/**
 * STM transfers: a random amount from one account to another, if it is there, given up after a
 * while (see `impatient()`). The README promises the total never changes and a transfer commits
 * once or, rejected, not at all.
 */
export async function transferLoop(): Promise<void> {
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
        { signal: impatient() },
      );
      if (done.result) log({ ...transfer, outcome: 'ok', revision: Number(done.revision) });
    } catch (err) {
      log({ ...transfer, outcome: outcomeOf(err), ...errorFields(err) });
    }
    await pause(TOOLBOX_PACE_MS + Math.random() * TOOLBOX_PACE_MS);
  }
}
