/**
 * The checker: reads what every process wrote down and etcd's history, and says, invariant by
 * invariant, whether anything went wrong — with counts, and the first violations in words.
 *
 * Validity: a holder of a lock (or of leadership) may act on it from the moment it learned it
 * holds it until it released it, learned it lost it, or its session's deadline passed — whichever
 * comes first. A paused process cannot log its loss, so its validity ends at the last deadline it
 * logged before the end: exactly what the library promises (a holder believes only until its
 * local deadline, which comes before etcd can expire its lease).
 */
import {
  ACCOUNTS,
  holder,
  OPENING_BALANCE,
  SEMAPHORE_PERMITS,
  type ChaosRecord,
  type Counter,
  type FaultRecord,
  type FinalRecord,
  type HistoryRecord,
  type Recipe,
  type RunParams,
  type WorkerRecord,
} from './records.js';

/** One invariant's verdict. */
export interface Verdict {
  readonly name: string;
  readonly ok: boolean;
  /** Set when what this row counts is a known etcd bug, not ours (the run still passes). */
  readonly knownIssue?: string;
  /** How many things were checked (holds, writes, events, ...), and what they are. */
  readonly checked: number;
  readonly unit: string;
  /** The first violations, in words. */
  readonly violations: readonly string[];
  /** How many violations in all. */
  readonly violationCount: number;
}

const SHOW = 5;

class Tally {
  checked = 0;
  count = 0;
  readonly shown: string[] = [];
  constructor(
    readonly name: string,
    readonly unit: string,
  ) {}
  fail(text: string): void {
    this.count++;
    if (this.shown.length < SHOW) this.shown.push(text);
  }
  verdict(): Verdict {
    return {
      name: this.name,
      ok: this.count === 0,
      checked: this.checked,
      unit: this.unit,
      violations: this.shown,
      violationCount: this.count,
    };
  }
}

type W<K extends WorkerRecord['kind']> = Extract<WorkerRecord, { kind: K }>;

function byKind<K extends WorkerRecord['kind']>(records: readonly ChaosRecord[], kind: K): W<K>[] {
  return records.filter((r): r is W<K> => r.kind === kind && 'w' in r);
}

/** A role (`lock`, `leadership`, ...) and its holds. */
export type Role = readonly [string, readonly Hold[]];

/** A hold: who, with which token, from when until when it was valid. */
export interface Hold {
  readonly holder: string;
  /** The lock recipe (absent: leadership). */
  readonly recipe?: Recipe;
  /** The holder's key (Go's layout: `path/<...>`). */
  readonly key: string;
  readonly token: string;
  readonly start: number;
  readonly end: number;
  /**
   * How the hold ended: released, lost (seen), deadline (never seen: paused or killed), or
   * `revoked early by etcd` (see `revokedEarly`).
   */
  readonly how: string;
  /**
   * etcd revoked the holder's lease before the TTL it had acknowledged: `end` is the revocation,
   * `deadline` the acknowledged one, `believed` when the holder's own validity ended.
   */
  readonly revokedEarly?: {
    readonly revision: number;
    readonly deadline: number;
    readonly believed: number;
  };
}

/** etcd 3.4.23 and earlier: a stale raft leader revokes leases it did not see renewed. */
export const STALE_LEADER_REVOKE =
  'a raft leader that stalls (here: a paused member) and comes back revokes the leases whose ' +
  'renewals went to its successor (etcd issues #12528 and #15247, fixed by pull request ' +
  '#16822, after 3.4.23); fencing is what keeps writes safe then';

/**
 * Clocks of different processes (each epoch ms from its own time origin) can disagree by a few ms:
 * a revocation closer than this to the holder's deadline is an ordinary expiry, not an early one.
 */
const CLOCK_SLACK_MS = 100;

interface RevocationContext {
  /** Deletes of each key, in order. */
  deletes: Map<string, { t: number; revision: number }[]>;
  /** Deletes per revision. */
  deletesAt: Map<number, number>;
  /** `holder|lease` -> the first time that holder logged the session closed. */
  closes: Map<string, number>;
  stoppedAt: number;
}

function revocationContext(records: readonly ChaosRecord[]): RevocationContext {
  const ctx: RevocationContext = {
    deletes: new Map(),
    deletesAt: new Map(),
    closes: new Map(),
    stoppedAt: Infinity,
  };
  for (const r of records) {
    if (r.kind === 'history' && r.type === 'delete') {
      const list = ctx.deletes.get(r.key) ?? [];
      list.push({ t: r.t, revision: r.revision });
      ctx.deletes.set(r.key, list);
      ctx.deletesAt.set(r.revision, (ctx.deletesAt.get(r.revision) ?? 0) + 1);
    } else if (r.kind === 'session' && 'w' in r && r.state === 'closed') {
      const k = `${holder(r)}|${r.lease}`;
      if (!ctx.closes.has(k)) ctx.closes.set(k, r.t);
    } else if (r.kind === 'final') {
      ctx.stoppedAt = r.stoppedAt;
    }
  }
  return ctx;
}

/**
 * When etcd revoked a holder's lease before the TTL it had acknowledged: the first delete of the
 * holder's key after its creation at revision `token` (by revision: the recorder may log a
 * delete of the key before it, the previous holder's release, only after the hold began) that
 * (1) came with other deletes in one revision (a lease revocation:
 * our recipes delete one key per transaction), (2) before the holder said the hold `ended` (it may
 * notice the delete only after the next holder took over) and well before its acknowledged
 * `deadline`, (3) while the holder had logged no close of that session (it revokes the lease
 * itself then), and (4) before the workers were told to stop. A session the holder lost is no
 * reason: it revokes that lease only once its deadline has passed (not early by (2)), or after
 * etcd said the lease was gone — after the revocation, though the recorder, behind, may log the
 * deletes later than the holder logs the loss (seed 7003).
 */
function earlyRevocation(
  ctx: RevocationContext,
  who: string,
  key: string,
  lease: string,
  token: string,
  ended: number,
  deadline: number,
): { t: number; revision: number } | undefined {
  const created = Number(token);
  const del = ctx.deletes.get(key)?.find((d) => d.revision > created);
  if (del === undefined || del.t >= ended || del.t >= ctx.stoppedAt) return undefined;
  if (del.t >= deadline - CLOCK_SLACK_MS) return undefined;
  if ((ctx.deletesAt.get(del.revision) ?? 0) < 2) return undefined;
  const own = ctx.closes.get(`${who}|${lease}`);
  if (own !== undefined && own <= del.t) return undefined;
  return { t: del.t, revision: del.revision };
}

/** Lease id (hex) of a Go-layout key `path/<leaseHex>`. */
function leaseOf(key: string): string {
  return key.slice(key.lastIndexOf('/') + 1);
}

/**
 * Holds from acquired/ended records, each cut at its session's last deadline before its end;
 * lock holds only of the given `recipes` (a record without one is the mutex's).
 */
export function holds(
  records: readonly ChaosRecord[],
  acquired: 'lock.acquired' | 'lead.gained',
  ended: 'lock.ended' | 'lead.ended',
  recipes: readonly Recipe[] = ['mutex'],
): Hold[] {
  const deadlines = new Map<string, { t: number; at: number }[]>();
  for (const d of byKind(records, 'deadline')) {
    const list = deadlines.get(d.lease) ?? [];
    list.push({ t: d.t, at: d.deadlineAt });
    deadlines.set(d.lease, list);
  }
  // A suspended leader that recovers holds the same token again: each start pairs with the
  // first end after it.
  const ends = new Map<string, { t: number; how: string }[]>();
  for (const e of records) {
    if (e.kind === ended && 'w' in e) {
      const k = `${holder(e)}|${e.token}`;
      const list = ends.get(k) ?? [];
      list.push({ t: e.t, how: e.how });
      ends.set(k, list);
    }
  }
  const revocations = revocationContext(records);
  const out: Hold[] = [];
  for (const a of records) {
    if (a.kind !== acquired || !('w' in a)) continue;
    const recipe = a.kind === 'lock.acquired' ? (a.recipe ?? 'mutex') : undefined;
    if (recipe !== undefined && !recipes.includes(recipe)) continue;
    const lease = (a.kind === 'lock.acquired' ? a.lease : undefined) ?? leaseOf(a.key);
    const who = holder(a);
    const end = ends.get(`${who}|${a.token}`)?.find((e) => e.t >= a.t);
    const until = end?.t ?? Infinity;
    // The last deadline the holder knew before it ended (or ever, if it never said it ended).
    let deadline = a.deadlineAt;
    for (const d of deadlines.get(lease) ?? []) {
      if (d.t >= a.t && d.t <= until && d.at > deadline) deadline = d.at;
    }
    const validUntil = Math.min(until, deadline);
    const early = earlyRevocation(revocations, who, a.key, lease, a.token, until, deadline);
    const kind = recipe === undefined ? {} : { recipe };
    if (early !== undefined) {
      out.push({
        holder: who,
        ...kind,
        key: a.key,
        token: a.token,
        start: a.t,
        end: early.t,
        how: 'revoked early by etcd',
        revokedEarly: { revision: early.revision, deadline, believed: validUntil },
      });
      continue;
    }
    out.push({
      holder: who,
      ...kind,
      key: a.key,
      token: a.token,
      start: a.t,
      end: validUntil,
      how: end === undefined || deadline < end.t ? 'deadline' : end.how,
    });
  }
  return out.sort((x, y) => x.start - y.start);
}

/**
 * The holds whose lease etcd revoked before the TTL it had acknowledged: a known etcd bug, in its
 * own row (the run still passes; the fencing rows show whether any write got through).
 */
export function checkLeaseTtls(roles: readonly Role[]): Verdict {
  const tally = new Tally('etcd kept every lease for the TTL it acknowledged', 'holds');
  for (const [role, list] of roles) {
    tally.checked += list.length;
    for (const h of list) {
      if (h.revokedEarly === undefined) continue;
      const { revision, deadline, believed } = h.revokedEarly;
      tally.fail(
        `${role} of ${h.holder} (token ${h.token}): its lease revoked at revision ${revision}, ` +
          `${fmtT(h.end)}, ${(deadline - h.end).toFixed(0)} ms before the TTL etcd had ` +
          `acknowledged ran out; the holder stopped ${(believed - h.end).toFixed(0)} ms later`,
      );
    }
  }
  return { ...tally.verdict(), ok: true, knownIssue: STALE_LEADER_REVOKE };
}

/**
 * No `lock()` resolves after its session's local deadline: a grant the clock cannot vouch for is
 * one etcd may already have handed on (seed 6001), whether or not the next holder overlapped it.
 * Six of 95 earlier runs had such a grant, each lost within a millisecond with nothing done, and
 * no other row saw it. The worker logs right after `lock()` resolves, so a worker pause that
 * lands in those microseconds would be counted too (the report's pause bands would show it).
 * Leadership is not checked here: its status stream may deliver a `leader` event a paused reader
 * had not read yet, which the exclusion rows judge by the deadline anyway.
 */
export function checkGrantDeadlines(records: readonly ChaosRecord[]): Verdict {
  const tally = new Tally("locks granted before their session's deadline", 'grants');
  for (const a of byKind(records, 'lock.acquired')) {
    tally.checked++;
    if (a.t <= a.deadlineAt) continue;
    tally.fail(
      `${holder(a)} (token ${a.token}) granted at ${fmtT(a.t)}, ` +
        `${(a.t - a.deadlineAt).toFixed(1)} ms after its session's deadline ${fmtT(a.deadlineAt)}`,
    );
  }
  return tally.verdict();
}

/**
 * Which of the holds valid when `hold` began it may not be valid beside: all of them for a mutex
 * or leadership, all of them once the semaphore's permits are taken, the writers for a reader,
 * everybody for a writer.
 */
export type ExclusionRule = (hold: Hold, valid: readonly Hold[]) => readonly Hold[];

/** A mutex, leadership: nobody beside. */
export const alone: ExclusionRule = (_hold, valid) => valid;

/** At most `permits` holders at once. */
export function atMost(permits: number): ExclusionRule {
  return (_hold, valid) => (valid.length < permits ? [] : valid);
}

/** Mutexes on several paths (a MultiLock's): one holder per path. */
export const alonePerPath: ExclusionRule = (hold, valid) =>
  valid.filter((v) => parentOf(v.key) === parentOf(hold.key));

/** `path` of a key `path/<...>`. */
function parentOf(key: string): string {
  return key.slice(0, key.lastIndexOf('/'));
}

/** A readers-writer lock: readers together, a writer alone. */
export const readersOrOneWriter: ExclusionRule = (hold, valid) =>
  hold.recipe === 'write' ? valid : valid.filter((v) => v.recipe === 'write');

/**
 * No hold begins while holds it may not be valid beside (`rule`) are still valid: a sweep in
 * order of start, with the holds of others still valid at each start. A holder that regains the
 * same token (a leader back from a suspension) is not beside itself.
 */
export function checkExclusion(
  name: string,
  list: readonly Hold[],
  rule: ExclusionRule = alone,
): Verdict {
  const tally = new Tally(name, 'holds');
  tally.checked = list.length;
  let valid: Hold[] = [];
  for (const b of list) {
    valid = valid.filter((a) => a.end > b.start);
    const others = valid.filter((a) => a.holder !== b.holder || a.token !== b.token);
    const beside = rule(b, others);
    if (beside.length > 0) {
      const them = beside
        .slice(0, SHOW)
        .map(
          (a) =>
            `${a.holder} (${a.recipe === undefined ? '' : `${a.recipe} `}token ${a.token}, ` +
            `valid until ${fmtT(a.end)}, overlap ${(a.end - b.start).toFixed(1)} ms)`,
        );
      tally.fail(
        `${b.holder} (${b.recipe === undefined ? '' : `${b.recipe} `}token ${b.token}) began at ` +
          `${fmtT(b.start)} beside ${them.join(', ')}${beside.length > SHOW ? ', ...' : ''}`,
      );
    }
    valid.push(b);
  }
  return tally.verdict();
}

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

/** Puts of `key` in etcd's history, in revision order. */
function writesOf(history: readonly HistoryRecord[], key: string): HistoryRecord[] {
  return history.filter((h) => h.key === key && h.type === 'put');
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
  final: FinalRecord | undefined,
): Verdict {
  const tally = new Tally('counter recipe: every add lands once, a rejected one never', 'adds');
  const writers = receiptWriters(history, records);
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
  unaccounted(tally, 'adds', landed, unknowns, killed(records, final));
  return tally.verdict();
}

/**
 * The queue: every item (named by its producer, `<worker>#<incarnation>:<n>`) is put once; an
 * acknowledged enqueue is in etcd's history at its key, a rejected one never; each claim (an
 * item's delete) is delivered to the claimer (its receipt) and to no one else, unless the claim
 * was unanswered or its claimer killed; no item is delivered twice.
 */
export function checkQueue(
  history: readonly HistoryRecord[],
  records: readonly ChaosRecord[],
  prefix: string,
  final: FinalRecord | undefined,
): Verdict {
  const tally = new Tally(
    'queue: each item enqueued once, delivered once to its claimer, a rejected one never',
    'items',
  );
  const writers = receiptWriters(history, records);
  const dead = killed(records, final);
  const puts = new Map<string, string>();
  const claims = new Map<string, { revision: number; who: string | undefined }>();
  for (const h of history) {
    if (!h.key.startsWith(prefix)) continue;
    if (h.type === 'put') {
      const twice = puts.get(h.value);
      if (twice !== undefined) tally.fail(`item ${h.value} put twice, at ${twice} and ${h.key}`);
      puts.set(h.value, h.key);
    } else {
      claims.set(h.key, { revision: h.revision, who: writers.get(h.revision) });
    }
  }
  // Enqueues: by the producer named in the item (so an unanswered one covers only itself).
  const said = new Set<string>();
  for (const e of byKind(records, 'enqueue')) {
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
  for (const d of byKind(records, 'dequeue')) {
    if (d.outcome === 'unknown') bump(unknownClaims, holder(d));
    if (d.outcome !== 'ok' || d.key === undefined) continue;
    const claim = claims.get(d.key);
    if (delivered.has(d.key)) tally.fail(`${d.key} (${String(d.item)}) delivered twice`);
    else if (claim === undefined || claim.revision !== d.revision) {
      tally.fail(`${holder(d)} was given ${d.key} at ${String(d.revision)}: no such claim`);
    } else if (claim.who !== undefined && claim.who !== holder(d)) {
      tally.fail(`${holder(d)} was given ${d.key}, claimed by ${claim.who}`);
    }
    delivered.add(d.key);
  }
  const undelivered = new Map<string | undefined, number>();
  for (const [key, claim] of claims) if (!delivered.has(key)) bump(undelivered, claim.who);
  unaccounted(tally, 'claims', undelivered, unknownClaims, dead);
  return tally.verdict();
}

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
  final: FinalRecord | undefined,
): Verdict {
  const tally = new Tally(
    'STM transfers: the total kept, each committed once, by its worker',
    'transfers',
  );
  const writers = receiptWriters(history, records);
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
  unaccounted(tally, 'transfers', landed, unknowns, killed(records, final));
  return tally.verdict();
}

/** State of a prefix at a revision, from the history. */
function stateAt(
  history: readonly HistoryRecord[],
  prefix: string,
  revision: number,
): Map<string, string> {
  const state = new Map<string, string>();
  for (const h of history) {
    if (h.revision > revision) break;
    if (!h.key.startsWith(prefix)) continue;
    if (h.type === 'put') state.set(h.key, h.value);
    else state.delete(h.key);
  }
  return state;
}

/**
 * Every observer incarnation delivered every event of etcd's history under the observed prefix
 * from its start revision exactly once, in order; a resync carries exactly the state at its
 * revision and the events go on after it. An incarnation that ran to the end reached `lastWrite`.
 */
export function checkObservers(
  history: readonly HistoryRecord[],
  records: readonly ChaosRecord[],
  prefix: string,
  final: FinalRecord | undefined,
): Verdict {
  const tally = new Tally('observers: every event once, in order', 'events');
  const expected = history.filter((h) => h.key.startsWith(prefix));
  const byIncarnation = new Map<string, WorkerRecord[]>();
  for (const r of records) {
    if (!('w' in r)) continue;
    if (r.kind !== 'obs.start' && r.kind !== 'obs.event' && r.kind !== 'obs.resync') continue;
    const k = holder(r);
    const list = byIncarnation.get(k) ?? [];
    list.push(r);
    byIncarnation.set(k, list);
  }
  for (const [who, list] of byIncarnation) {
    const start = list.find((r) => r.kind === 'obs.start');
    if (start?.kind !== 'obs.start') continue;
    let i = expected.findIndex((h) => h.revision >= start.from);
    if (i === -1) i = expected.length;
    let lastRevision = start.from - 1;
    let bad = false;
    for (const r of list) {
      if (r.kind === 'obs.resync') {
        const truth = stateAt(history, prefix, r.revision);
        const got = new Map(Object.entries(r.snapshot));
        if (!sameMap(truth, got)) {
          tally.fail(`${who}: resync at ${r.revision} differs from etcd's state at that revision`);
          bad = true;
        }
        while (i < expected.length && (expected[i]?.revision ?? 0) <= r.revision) i++;
        lastRevision = r.revision;
        continue;
      }
      if (r.kind !== 'obs.event') continue;
      tally.checked++;
      const want = expected[i];
      if (want?.revision !== r.revision || want.key !== r.key || want.type !== r.type) {
        const why =
          want === undefined
            ? 'nothing more in etcd'
            : r.revision < want.revision || (r.revision === want.revision && r.key !== want.key)
              ? `a repeat (or out of order); next expected ${want.type} ${want.key} at ${want.revision}`
              : `skipped ${want.type} ${want.key} at ${want.revision}`;
        tally.fail(`${who}: got ${r.type} ${r.key} at ${r.revision}: ${why}`);
        bad = true;
        // Re-align on the event it did deliver, to report one mistake once.
        const k = expected.findIndex((h) => h.revision === r.revision && h.key === r.key);
        if (k !== -1) i = k + 1;
        continue;
      }
      lastRevision = r.revision;
      i++;
    }
    const stopped = final?.exits[who];
    if (!bad && stopped !== undefined && final !== undefined && lastRevision < final.lastWrite) {
      tally.fail(
        `${who} ran to the end but delivered only up to ${lastRevision} of ${final.lastWrite}`,
      );
    }
  }
  return tally.verdict();
}

function sameMap(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/**
 * When the faults' effects ended: the last fault's end (or start, if it never ended), or, if
 * later, the last raft leader election plus the extension etcd then gives every lease (a member
 * resumed from a pause can call an election, and a new leader restarts every lease's TTL plus its
 * election timeout); the run's start without faults.
 */
export function lastFaultEnd(records: readonly ChaosRecord[]): number {
  let t = -Infinity;
  for (const r of records) {
    if (r.kind === 'fault') t = Math.max(t, r.t);
    else if (r.kind === 'raft') t = Math.max(t, r.t + r.extendMs);
  }
  return Number.isFinite(t) ? t : (records[0]?.t ?? 0);
}

/**
 * After the last fault, every tracker still running reaches the final set of registrations
 * within TTL + 2 s, and shows it until the workers are told to stop.
 */
export function checkTrackers(
  records: readonly ChaosRecord[],
  params: RunParams,
  final: FinalRecord | undefined,
): Verdict {
  const tally = new Tally(
    'trackers converge within TTL + 2 s of the last fault or raft election',
    'trackers',
  );
  if (final === undefined) {
    tally.fail('no final record');
    return tally.verdict();
  }
  const quietFrom = lastFaultEnd(records);
  const bound = quietFrom + params.ttl * 1000 + 2000;
  const want = [...final.services].sort().join(',');
  const byIncarnation = new Map<string, W<'tracker'>[]>();
  for (const r of byKind(records, 'tracker')) {
    // Workers deregister as they stop: the maps after the stop command are not the final set.
    if (r.t >= final.stoppedAt) continue;
    const list = byIncarnation.get(holder(r)) ?? [];
    list.push(r);
    byIncarnation.set(holder(r), list);
  }
  for (const [who, list] of byIncarnation) {
    if (final.exits[who] === undefined) continue; // killed before the end
    tally.checked++;
    const at = (r: W<'tracker'>): string => [...r.names].sort().join(',');
    const last = list[list.length - 1];
    if (last === undefined || at(last) !== want) {
      tally.fail(`${who} ended with [${last === undefined ? '' : at(last)}], etcd has [${want}]`);
      continue;
    }
    // The first moment after the last fault from which it showed the final set for good.
    let since = last.t;
    for (let k = list.length - 1; k >= 0; k--) {
      const r = list[k];
      if (r === undefined || at(r) !== want) break;
      since = r.t;
    }
    const reached = Math.max(since, quietFrom);
    if (reached > bound) {
      tally.fail(
        `${who} showed the final set ${(reached - quietFrom).toFixed(0)} ms after the last fault or raft election`,
      );
    }
  }
  return tally.verdict();
}

/** Something that went on from `start` to `end`: a hold, or an instant (an add, a delivery). */
interface Span {
  readonly start: number;
  readonly end: number;
}

/** The `ok` records of `kind` as instants. */
function instants(records: readonly ChaosRecord[], kind: 'add' | 'dequeue' | 'transfer'): Span[] {
  return byKind(records, kind).flatMap((r) =>
    r.outcome === 'ok' ? [{ start: r.t, end: r.t }] : [],
  );
}

/**
 * After the last fault, every role (the locks, leadership, an add, a queue delivery) is held or
 * done again within TTL + 2 s.
 */
export function checkLiveness(
  records: readonly ChaosRecord[],
  params: RunParams,
  roles: readonly (readonly [string, readonly Span[]])[],
): Verdict {
  const tally = new Tally(
    'liveness: locks, leadership, adds, deliveries and transfers within TTL + 2 s after faults and raft elections',
    'roles',
  );
  const quietFrom = lastFaultEnd(records);
  const bound = quietFrom + params.ttl * 1000 + 2000;
  for (const [role, list] of roles) {
    tally.checked++;
    const first = list.find((h) => h.end > quietFrom);
    const at = first === undefined ? Infinity : Math.max(first.start, quietFrom);
    if (at > bound) {
      tally.fail(
        first === undefined
          ? `no ${role} after the last fault`
          : `${role} again only ${(at - quietFrom).toFixed(0)} ms after the last fault or raft election`,
      );
    }
  }
  return tally.verdict();
}

/** Every worker told to stop exited by itself with 0; no unhandled rejection; no lease left. */
export function checkExits(
  records: readonly ChaosRecord[],
  final: FinalRecord | undefined,
): Verdict {
  const tally = new Tally('clean exits: code 0, no unhandled rejection, no lease left', 'workers');
  if (final === undefined) {
    tally.fail('no final record');
    return tally.verdict();
  }
  for (const [who, code] of Object.entries(final.exits)) {
    tally.checked++;
    if (code !== 0) tally.fail(`${who} exited with ${String(code)}`);
  }
  for (const u of byKind(records, 'unhandled')) tally.fail(`${holder(u)}: unhandled ${u.message}`);
  if (final.leasesLeft > 0)
    tally.fail(`${final.leasesLeft} lease(s) left in etcd after every worker stopped`);
  return tally.verdict();
}

/** Runs every check. */
export function check(records: readonly ChaosRecord[], params: RunParams): Verdict[] {
  const history = records.filter((r): r is HistoryRecord => r.kind === 'history');
  history.sort((a, b) => a.revision - b.revision);
  const final = records.find((r): r is FinalRecord => r.kind === 'final');
  const lockHolds = holds(records, 'lock.acquired', 'lock.ended');
  const permitHolds = holds(records, 'lock.acquired', 'lock.ended', ['semaphore']);
  const rwHolds = holds(records, 'lock.acquired', 'lock.ended', ['read', 'write']);
  const multiHolds = holds(records, 'lock.acquired', 'lock.ended', ['multi']);
  const leadHolds = holds(records, 'lead.gained', 'lead.ended');
  const roles: Role[] = [
    ['lock', lockHolds],
    ['semaphore permit', permitHolds],
    ['read lock', rwHolds.filter((h) => h.recipe === 'read')],
    ['write lock', rwHolds.filter((h) => h.recipe === 'write')],
    ['MultiLock', multiHolds],
    ['leadership', leadHolds],
  ];
  const gaps = records.filter((r) => r.kind === 'history.gap');
  const historyVerdict: Verdict = {
    name: "etcd's history recorded without a gap",
    ok: gaps.length === 0 && history.length > 0,
    checked: history.length,
    unit: 'events',
    violations:
      gaps.length > 0
        ? [`the recorder had to re-list ${gaps.length} time(s)`]
        : history.length === 0
          ? ['no history recorded']
          : [],
    violationCount: gaps.length + (history.length === 0 ? 1 : 0),
  };
  const { lockPrefix, electionPrefix } = params;
  return [
    historyVerdict,
    checkExclusion('mutual exclusion: lock holders', lockHolds),
    checkExclusion(
      `semaphore: at most ${SEMAPHORE_PERMITS} permit holders`,
      permitHolds,
      atMost(SEMAPHORE_PERMITS),
    ),
    checkExclusion('RWMutex: readers together, a writer alone', rwHolds, readersOrOneWriter),
    checkExclusion('MultiLock: one holder per path', multiHolds, alonePerPath),
    checkGrantDeadlines(records),
    checkExclusion('mutual exclusion: leaders', leadHolds),
    checkLeaseTtls(roles),
    checkFencing(
      'fencing: counter writes under live, increasing tokens',
      history,
      params.counterKey,
      lockPrefix,
    ),
    checkFencing(
      "fencing: RWMutex writers' counter under live, increasing tokens",
      history,
      params.rwCounterKey,
      params.rwWritePrefix,
    ),
    checkFencing(
      'fencing: leader work under live, increasing tokens',
      history,
      params.workKey,
      electionPrefix,
    ),
    checkCounter(history, records, 'mutex', params.counterKey, final),
    checkCounter(history, records, 'rw', params.rwCounterKey, final),
    checkAdds(history, records, params.addsKey, final),
    checkQueue(history, records, params.queuePrefix, final),
    checkTransfers(history, records, params.accountPrefix, final),
    checkObservers(history, records, params.observedPrefix, final),
    checkTrackers(records, params, final),
    checkLiveness(records, params, [
      ...roles,
      ['counter add', instants(records, 'add')],
      ['queue delivery', instants(records, 'dequeue')],
      ['STM transfer', instants(records, 'transfer')],
    ]),
    checkExits(records, final),
  ];
}

/** `12:03:04.567` (UTC) for messages. */
export function fmtT(t: number): string {
  return Number.isFinite(t) ? new Date(t).toISOString().slice(11, 23) : 'never';
}

export type { FaultRecord };
