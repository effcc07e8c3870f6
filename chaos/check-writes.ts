/** Writes made under a fence: tokens alive and increasing, and no lost update of a counter. */
import {
  byKind,
  holder,
  writesOf,
  type ChaosRecord,
  type Counter,
  type FinalRecord,
  type HistoryRecord,
} from './records.js';
import { Tally, type Verdict } from './verdict.js';

interface Fenced {
  token?: string;
  n?: number;
  w?: string;
  inc?: number;
}

function parse(value: string): Fenced {
  try {
    return JSON.parse(value) as Fenced;
  } catch {
    return {};
  }
}

/**
 * Every fenced write in etcd's history carries a token that (a) is at least every earlier one's
 * and (b) was the create revision of a key that still existed under the lock (or election) prefix
 * at the write's revision — i.e. the fence held when etcd applied it.
 */
export function checkFencing(
  name: string,
  history: readonly HistoryRecord[],
  key: string,
  prefix: string,
): Verdict {
  const tally = new Tally(name, 'writes');
  // Lifetime of every key under the prefix: create revision -> deleted at revision.
  const alive = new Map<string, { key: string; until: number }>();
  for (const h of history) {
    if (!h.key.startsWith(prefix)) continue;
    if (h.type === 'put' && h.version === 1) {
      alive.set(String(h.createRevision), { key: h.key, until: Infinity });
    } else if (h.type === 'delete') {
      for (const v of alive.values())
        if (v.key === h.key && v.until === Infinity) v.until = h.revision;
    }
  }
  let last = 0n;
  for (const w of writesOf(history, key)) {
    tally.checked++;
    const token = parse(w.value).token;
    if (token === undefined) {
      tally.fail(`write at ${w.revision} carries no token`);
      continue;
    }
    if (BigInt(token) < last) {
      tally.fail(`write at ${w.revision} has token ${token} after token ${last}: a stale token`);
    }
    if (BigInt(token) > last) last = BigInt(token);
    const life = alive.get(token);
    if (life === undefined || Number(token) > w.revision || life.until <= w.revision) {
      tally.fail(
        `write at ${w.revision} under token ${token}, whose key ` +
          (life === undefined ? 'never existed' : `was gone since ${life.until}`),
      );
    }
  }
  return tally.verdict();
}

/**
 * A counter (the mutex's, or the RWMutex writers'): each write is the previous value + 1 (no
 * increment lost or applied twice), the final value is the number of writes, and every
 * acknowledged increment is in the history.
 */
export function checkCounter(
  history: readonly HistoryRecord[],
  records: readonly ChaosRecord[],
  counter: Counter,
  key: string,
  final: FinalRecord | undefined,
): Verdict {
  const tally = new Tally(
    counter === 'mutex' ? 'no lost update (counter)' : "no lost update (RWMutex writers' counter)",
    'increments',
  );
  const writes = writesOf(history, key);
  let expected = 1;
  for (const w of writes) {
    const n = parse(w.value).n;
    if (n !== expected) {
      tally.fail(
        `write at ${w.revision} set ${String(n)}, expected ${expected}: an update was lost`,
      );
    }
    expected = (n ?? expected) + 1;
  }
  const byRevision = new Map(writes.map((w) => [w.revision, parse(w.value).n]));
  const incs = byKind(records, 'inc').filter((i) => (i.counter ?? 'mutex') === counter);
  let acked = 0;
  let unknown = 0;
  for (const i of incs) {
    if (i.outcome === 'unknown') unknown++;
    if (i.outcome !== 'ok') continue;
    acked++;
    if (i.revision === undefined || byRevision.get(i.revision) !== i.value) {
      tally.fail(
        `acknowledged increment to ${String(i.value)} at ${String(i.revision)} is not in etcd's history`,
      );
    }
  }
  tally.checked = acked;
  const dead = diedInFlight(writes, incs, final);
  if (writes.length < acked || writes.length > acked + unknown + dead) {
    tally.fail(
      `${writes.length} increments landed, but ${acked} were acknowledged, ${unknown} unanswered ` +
        `and ${dead} in flight when their worker was killed`,
    );
  }
  const value = counter === 'mutex' ? final?.counter : (final?.rwCounter ?? 0);
  if (value !== undefined && value !== writes.length) {
    tally.fail(`final counter ${value}, but ${writes.length} increments landed`);
  }
  return tally.verdict();
}

/**
 * Landed increments a killed worker sent but could not log: a write in flight when the worker
 * was killed can still land (seed 5021: sent as a member was paused, applied when it
 * resumed, 1.2 s after its sender died). Its value names the writer; at most one per killed
 * incarnation (a worker increments one at a time), and none the incarnation logged an outcome
 * for.
 */
function diedInFlight(
  writes: readonly HistoryRecord[],
  incs: readonly Extract<ChaosRecord, { kind: 'inc' }>[],
  final: FinalRecord | undefined,
): number {
  if (final === undefined) return 0;
  const logged = new Set(incs.map((i) => `${holder(i)}|${i.value}`));
  const counted = new Set<string>();
  for (const w of writes) {
    const v = parse(w.value);
    if (v.w === undefined || v.inc === undefined) continue;
    const who = holder({ w: v.w, inc: v.inc });
    if (final.exits[who] !== undefined || counted.has(who)) continue;
    if (!logged.has(`${who}|${String(v.n)}`)) counted.add(who);
  }
  return counted.size;
}
