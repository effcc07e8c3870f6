/**
 * A chaos worker's loops over the writes whose answer can be lost: adds to a counter, a queue's
 * producer and consumer, STM transfers. Each call's outcome is written down for the checker.
 */
import { ACCOUNTS } from './records.js';
import {
  conn,
  errorFields,
  id,
  inc,
  log,
  outcomeOf,
  path,
  pause,
  signal,
  stopped,
} from './worker-context.js';

/**
 * The counter, queue and STM loops wait this long or up to twice as long between calls: enough
 * for thousands of each in a long run, while leaving the lock loops the CPU (at 20-90 ms, seed
 * 7004 held the mutex 1,314 times in 600 s; seed 7002, without these loops, 4,097).
 */
const TOOLBOX_PACE_MS = 100;

/**
 * The counter recipe: `add(1)` over and over. The README promises an add either resolves with
 * its value, lands exactly once, or rejects without landing (`OutcomeUnknownError` aside).
 */
export async function adderLoop(): Promise<void> {
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
export async function producerLoop(): Promise<void> {
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
export async function consumerLoop(): Promise<void> {
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
        { signal },
      );
      if (done.result) log({ ...transfer, outcome: 'ok', revision: Number(done.revision) });
    } catch (err) {
      log({ ...transfer, outcome: outcomeOf(err), ...errorFields(err) });
    }
    await pause(TOOLBOX_PACE_MS + Math.random() * TOOLBOX_PACE_MS);
  }
}
