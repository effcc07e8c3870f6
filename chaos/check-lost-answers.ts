/**
 * The writes whose answer can be lost (the counter's adds, the queue's enqueues and claims, STM
 * commits): each told apart by the receipt written in its transaction, each landed once, by its
 * worker, and a rejected one never.
 */
import {
  ACCOUNTS,
  byKind,
  holder,
  OPENING_BALANCE,
  queueOf,
  writesOf,
  type ChaosRecord,
  type FinalRecord,
  type HistoryRecord,
  type QueueName,
} from './records.js';
import { Tally, type Verdict } from './verdict.js';

/** What the three checks below share, read once from the run: who wrote, and who died. */
export interface Writers {
  /** Revision -> the incarnation whose receipt was written in it. */
  readonly at: ReadonlyMap<number, string>;
  /** Incarnations killed (never told to stop). */
  readonly dead: ReadonlySet<string>;
}

/** The writers of a run (see {@link receiptWriters} and {@link killed}). */
export function writersOf(
  history: readonly HistoryRecord[],
  records: readonly ChaosRecord[],
  final: FinalRecord | undefined,
): Writers {
  return { at: receiptWriters(history, records), dead: killed(records, final) };
}

/**
 * Who wrote at each revision, told by the receipt (`.../receipts/<leaseHex>.<n>`) the counter and
 * queue put in the same transaction, and the lease's holder (its keepalive records). A lease
 * whose holder died before its first keepalive ack stays unknown.
 */
function receiptWriters(
  history: readonly HistoryRecord[],
  records: readonly ChaosRecord[],
): Map<number, string> {
  const owners = new Map<string, string>();
  for (const d of byKind(records, 'deadline')) owners.set(d.lease, holder(d));
  const out = new Map<number, string>();
  for (const h of history) {
    if (h.type !== 'put') continue;
    const lease = /\/receipts\/([0-9a-f]+)\.\d+$/.exec(h.key)?.[1];
    const who = lease === undefined ? undefined : owners.get(lease);
    if (who !== undefined) out.set(h.revision, who);
  }
  return out;
}

/** Incarnations that were killed (never told to stop): each may have had one call in flight. */
function killed(records: readonly ChaosRecord[], final: FinalRecord | undefined): Set<string> {
  const out = new Set<string>();
  if (final === undefined) return out;
  for (const r of byKind(records, 'start')) {
    if (final.exits[holder(r)] === undefined) out.add(holder(r));
  }
  return out;
}

/**
 * Writes that landed but that their writer never said `ok` to: each must be covered by an
 * `unknown` outcome of that writer, or be the one call a killed writer had in flight. `landed`
 * and `unknowns` per writer (`undefined`: a writer the receipts could not name); the unnamed ones
 * are covered by what is left over from all writers.
 */
function unaccounted(
  tally: Tally,
  what: string,
  landed: ReadonlyMap<string | undefined, number>,
  unknowns: ReadonlyMap<string, number>,
  dead: ReadonlySet<string>,
): void {
  let spare = 0;
  for (const [who, n] of landed) {
    if (who === undefined) continue;
    const allowed = (unknowns.get(who) ?? 0) + (dead.has(who) ? 1 : 0);
    if (n > allowed) {
      tally.fail(
        `${n} ${what} of ${who} landed unacknowledged, but it had ${unknowns.get(who) ?? 0} ` +
          `unanswered${dead.has(who) ? ' and was killed' : ''}: a rejected call landed`,
      );
    }
    spare += Math.max(0, allowed - n);
  }
  for (const [who, n] of unknowns) if (!landed.has(who)) spare += n;
  for (const who of dead) if (!landed.has(who)) spare++;
  const unnamed = landed.get(undefined) ?? 0;
  if (unnamed > spare) {
    tally.fail(`${unnamed} ${what} landed unacknowledged by unknown writers, ${spare} unanswered`);
  }
}

/** Adds one to the count of `key`. */
function bump<K>(map: Map<K, number>, key: K): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

/**
 * The counter recipe (`add(1)` from every worker): each write in etcd's history is the previous
 * value + 1; every value an add returned is one such write, by that add's worker (its receipt),
 * and no two adds returned the same; an add that landed unacknowledged was unanswered
 * (`OutcomeUnknownError`) or in flight when its worker was killed — a rejected add never lands.
 */
export function checkAdds(
  history: readonly HistoryRecord[],
  records: readonly ChaosRecord[],
  key: string,
  { at: writers, dead }: Writers,
): Verdict {
  const tally = new Tally('counter recipe: every add lands once, a rejected one never', 'adds');
  const writes = new Map<number, { revision: number; who: string | undefined }>();
  let previous = 0;
  for (const w of writesOf(history, key)) {
    const n = Number(w.value);
    if (n !== previous + 1) {
      tally.fail(`write at ${w.revision} set ${w.value} after ${previous}: not one add`);
    }
    previous = n;
    writes.set(n, { revision: w.revision, who: writers.get(w.revision) });
  }
  const acked = new Set<number>();
  const unknowns = new Map<string, number>();
  for (const a of byKind(records, 'add')) {
    if (a.outcome === 'unknown') bump(unknowns, holder(a));
    if (a.outcome !== 'ok' || a.value === undefined) continue;
    tally.checked++;
    const w = writes.get(a.value);
    if (acked.has(a.value)) tally.fail(`two adds returned ${a.value}`);
    else if (w === undefined) tally.fail(`${holder(a)}'s add returned ${a.value}, never written`);
    else if (w.who !== undefined && w.who !== holder(a)) {
      tally.fail(`${holder(a)}'s add returned ${a.value}, written by ${w.who} at ${w.revision}`);
    }
    acked.add(a.value);
  }
  const landed = new Map<string | undefined, number>();
  for (const [n, w] of writes) if (!acked.has(n)) bump(landed, w.who);
  unaccounted(tally, 'adds', landed, unknowns, dead);
  return tally.verdict();
}

/**
 * A queue (`queue`, whose items are under `prefix`): every item (named by its producer,
 * `<worker>#<incarnation>:<n>`) is put once; an acknowledged enqueue is in etcd's history at its
 * key, a rejected one never; each claim (an item's delete) is delivered to the claimer (its
 * receipt) and to no one else, unless the claim was unanswered or its claimer killed; no item is
 * delivered twice.
 */
export function checkQueue(
  history: readonly HistoryRecord[],
  records: readonly ChaosRecord[],
  queue: QueueName,
  prefix: string,
  { at: writers, dead }: Writers,
): Verdict {
  const tally = new Tally(
    `${QUEUE_TITLES[queue]}: each item enqueued once, delivered once to its claimer, a rejected one never`,
    'items',
  );
  const ours = (r: { queue?: QueueName }): boolean => queueOf(r) === queue;
  const puts = new Map<string, string>();
  // By key and revision: a priority queue's keys come again (a drained priority restarts its
  // sequence at 0, as Go's does).
  const claims = new Map<string, string | undefined>();
  for (const h of history) {
    if (!h.key.startsWith(prefix)) continue;
    if (h.type === 'put') {
      const twice = puts.get(h.value);
      if (twice !== undefined) tally.fail(`item ${h.value} put twice, at ${twice} and ${h.key}`);
      puts.set(h.value, h.key);
    } else {
      claims.set(`${h.key}@${h.revision}`, writers.get(h.revision));
    }
  }
  // Enqueues: by the producer named in the item (so an unanswered one covers only itself).
  const said = new Set<string>();
  for (const e of byKind(records, 'enqueue').filter(ours)) {
    said.add(e.item);
    const key = puts.get(e.item);
    if (e.outcome === 'failed' && key !== undefined) {
      tally.fail(`${holder(e)}'s enqueue of ${e.item} was rejected, but it is at ${key}`);
    } else if (e.outcome === 'ok') {
      tally.checked++;
      if (key !== e.key) {
        tally.fail(`${holder(e)} enqueued ${e.item} at ${String(e.key)}; etcd has ${String(key)}`);
      }
    }
  }
  const unsaid = new Map<string | undefined, number>();
  for (const item of puts.keys()) {
    if (!said.has(item)) bump(unsaid, item.slice(0, item.lastIndexOf(':')));
  }
  unaccounted(tally, 'enqueues', unsaid, new Map(), dead);
  // Deliveries: each once, each a claim by the one who was given it.
  const delivered = new Set<string>();
  const unknownClaims = new Map<string, number>();
  for (const d of byKind(records, 'dequeue').filter(ours)) {
    if (d.outcome === 'unknown') bump(unknownClaims, holder(d));
    if (d.outcome !== 'ok' || d.key === undefined) continue;
    const claim = `${d.key}@${String(d.revision)}`;
    const who = claims.get(claim);
    if (delivered.has(claim)) tally.fail(`${d.key} (${String(d.item)}) delivered twice`);
    else if (!claims.has(claim)) {
      tally.fail(`${holder(d)} was given ${d.key} at ${String(d.revision)}: no such claim`);
    } else if (who !== undefined && who !== holder(d)) {
      tally.fail(`${holder(d)} was given ${d.key}, claimed by ${who}`);
    }
    delivered.add(claim);
  }
  const undelivered = new Map<string | undefined, number>();
  for (const [claim, who] of claims) if (!delivered.has(claim)) bump(undelivered, who);
  unaccounted(tally, 'claims', undelivered, unknownClaims, dead);
  return tally.verdict();
}

/** How the verdicts name each queue. */
const QUEUE_TITLES = {
  fifo: 'queue',
  priority: 'priority queue',
} as const satisfies Record<QueueName, string>;

/**
 * STM transfers: the accounts open together at `OPENING_BALANCE` each, and every later revision
 * that touches them keeps the total; a committed transfer is the one revision it names, moving
 * its amount from its account to the other, written by its worker (its receipt); a transfer that
 * landed unacknowledged was unanswered or in flight when its worker was killed.
 */
export function checkTransfers(
  history: readonly HistoryRecord[],
  records: readonly ChaosRecord[],
  prefix: string,
  { at: writers, dead }: Writers,
): Verdict {
  const tally = new Tally(
    'STM transfers: the total kept, each committed once, by its worker',
    'transfers',
  );
  const total = ACCOUNTS * OPENING_BALANCE;
  const balances = new Map<string, number>();
  // Each revision after the opening: how much each account moved.
  const moves = new Map<number, Map<string, number>>();
  let opened: number | undefined;
  const settle = (revision: number | undefined): void => {
    if (revision === undefined) return;
    let sum = 0;
    for (const b of balances.values()) sum += b;
    if (opened === undefined) {
      opened = revision;
      if (sum !== total || balances.size !== ACCOUNTS) {
        tally.fail(`the accounts opened at ${revision} with ${sum} in ${balances.size}`);
      }
    } else if (sum !== total) {
      tally.fail(`the accounts held ${sum} in all at revision ${revision}, not ${total}`);
    }
  };
  let current: number | undefined;
  for (const h of history) {
    if (!h.key.startsWith(prefix)) continue;
    if (h.revision !== current) settle(current);
    current = h.revision;
    const account = h.key.slice(prefix.length);
    const was = balances.get(account) ?? 0;
    const now = h.type === 'put' ? Number(h.value) : 0;
    if (h.type === 'put') balances.set(account, now);
    else balances.delete(account);
    if (opened !== undefined) {
      const moved = moves.get(h.revision) ?? new Map<string, number>();
      moved.set(account, now - was);
      moves.set(h.revision, moved);
    }
  }
  settle(current);
  tally.checked = moves.size;
  const unknowns = new Map<string, number>();
  const acked = new Set<number>();
  for (const tr of byKind(records, 'transfer')) {
    if (tr.outcome === 'unknown') bump(unknowns, holder(tr));
    if (tr.outcome !== 'ok' || tr.revision === undefined) continue;
    const moved = moves.get(tr.revision);
    const [from, to] = [String(tr.from), String(tr.to)];
    const who = writers.get(tr.revision);
    if (moved?.get(from) !== -tr.amount || moved.get(to) !== tr.amount || moved.size !== 2) {
      tally.fail(
        `${holder(tr)}'s transfer of ${tr.amount} from ${from} to ${to} committed at ` +
          `${tr.revision}, which moved ${JSON.stringify(Object.fromEntries(moved ?? []))}`,
      );
    } else if (who !== undefined && who !== holder(tr)) {
      tally.fail(`${holder(tr)}'s transfer at ${tr.revision} was written by ${who}`);
    } else if (acked.has(tr.revision)) {
      tally.fail(`two transfers committed at ${tr.revision}`);
    }
    acked.add(tr.revision);
  }
  const landed = new Map<string | undefined, number>();
  for (const revision of moves.keys()) {
    if (!acked.has(revision)) bump(landed, writers.get(revision));
  }
  unaccounted(tally, 'transfers', landed, unknowns, dead);
  return tally.verdict();
}
