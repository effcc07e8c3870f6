/**
 * Ephemeral keys (chaos/worker-ephemeral.ts), judged on etcd's history and the keys read at the
 * end. Values say whose they are (`{ w, inc, c, n }`); the vandal's say `vandal`.
 * - Never taken from a live owner: a put of one incarnation never directly follows (no delete
 *   between) a put of another. A key under a lease that ended is deleted by etcd first, so a put
 *   right after another's put overwrote a live owner's key.
 * - Put back: a worker's own key the vandal deleted or overwrote is written by a worker again
 *   before the faults leave it alone for TTL + 2 s.
 * - A deleted cycle stays gone: a put of a cycle after its `delete()` resolved (a late copy of a
 *   put whose answer was lost) is deleted or overwritten before the faults leave it alone for
 *   TTL + 2 s — else the shared key would starve the other workers while its lease lives.
 * - At the end (after the quiet period): every running worker's own key holds its value, and no
 *   key holds the vandal's value, a stopped incarnation's, or a deleted cycle's.
 */
import {
  byKind,
  ephemeralOwner,
  holder,
  type ChaosRecord,
  type EphemeralOwner,
  type FinalRecord,
  type HistoryRecord,
  type RunParams,
  type VandalRecord,
} from './records.js';
import { fmtT, Tally, type Verdict } from './verdict.js';

/** When something was in the way: a fault from start to end, a raft election and its extension. */
interface Busy {
  readonly from: number;
  readonly to: number;
}

/** The faults' and raft elections' spans, by start. */
export function busySpans(records: readonly ChaosRecord[]): Busy[] {
  const starts = new Map<number, number>();
  const spans: Busy[] = [];
  for (const r of records) {
    if (r.kind === 'fault' && r.phase === 'start') starts.set(r.id, r.t);
    else if (r.kind === 'fault') spans.push({ from: starts.get(r.id) ?? r.t, to: r.t });
    else if (r.kind === 'raft') spans.push({ from: r.t, to: r.t + r.extendMs });
  }
  return spans.sort((a, b) => a.from - b.from);
}

/**
 * The start of the first stretch of `span` ms within [from, to] that no fault or election
 * touches; undefined if there is none.
 */
export function quietStretch(
  busy: readonly Busy[],
  from: number,
  to: number,
  span: number,
): number | undefined {
  let quietFrom = from;
  for (const b of busy) {
    if (b.to < quietFrom) continue;
    if (b.from > to) break;
    if (b.from - quietFrom >= span) return quietFrom;
    quietFrom = Math.max(quietFrom, b.to);
  }
  return to - quietFrom >= span ? quietFrom : undefined;
}

function ownerName(o: EphemeralOwner): string {
  return `${o.w}#${o.inc}`;
}

function isEphemeralKey(key: string, params: RunParams): boolean {
  return (
    key.startsWith(params.ephemeralPrefix) ||
    key.startsWith(params.ephemeralCyclePrefix) ||
    key === params.ephemeralSharedKey
  );
}

/** A put of one incarnation right after another's put of the same key. */
export function checkEphemeralOwners(
  history: readonly HistoryRecord[],
  params: RunParams,
): Verdict {
  const tally = new Tally('ephemeral keys: never taken from a live owner', 'puts');
  const last = new Map<string, string>();
  for (const h of history) {
    if (!isEphemeralKey(h.key, params)) continue;
    if (h.type === 'delete') {
      last.delete(h.key);
      continue;
    }
    const owner = ephemeralOwner(h.value);
    if (owner === undefined) {
      last.delete(h.key); // the vandal's, without a lease: anyone's to take
      continue;
    }
    tally.checked++;
    const before = last.get(h.key);
    const now = ownerName(owner);
    if (before !== undefined && before !== now) {
      tally.fail(
        `${now} overwrote ${h.key} at revision ${h.revision}, ${before}'s under a live lease`,
      );
    }
    last.set(h.key, now);
  }
  return tally.verdict();
}

/** See the file's comment: put back, deleted cycles gone, and the keys at the end. */
export function checkEphemeralRepairs(
  history: readonly HistoryRecord[],
  records: readonly ChaosRecord[],
  params: RunParams,
  final: FinalRecord | undefined,
): Verdict {
  const tally = new Tally(
    'ephemeral keys: put back, deleted ones gone, within TTL + 2 s once faults leave them alone',
    'keys and acts',
  );
  if (final?.ephemeral === undefined) {
    tally.fail('no ephemeral keys read at the end');
    return tally.verdict();
  }
  const endAt = final.ephemeralAt ?? final.stoppedAt;
  const span = params.ttl * 1000 + 2000;
  const busy = busySpans(records);
  const stays = (from: number, to: number): number | undefined =>
    quietStretch(busy, from, Math.min(to, endAt), span);
  const byKey = new Map<string, HistoryRecord[]>();
  for (const h of history) {
    if (!isEphemeralKey(h.key, params)) continue;
    const list = byKey.get(h.key) ?? [];
    list.push(h);
    byKey.set(h.key, list);
  }
  // Put back after the vandal (a worker's own key).
  const vandal = records.filter((r): r is VandalRecord => r.kind === 'vandal');
  for (const v of vandal) {
    if (!v.key.startsWith(params.ephemeralPrefix) || v.t > endAt) continue;
    tally.checked++;
    const back = (byKey.get(v.key) ?? []).find(
      (h) => h.revision > v.revision && h.type === 'put' && ephemeralOwner(h.value) !== undefined,
    );
    const at = stays(v.t, back?.t ?? Infinity);
    if (at !== undefined) {
      tally.fail(
        `${v.key}, ${v.act === 'delete' ? 'deleted' : 'overwritten'} by the vandal at revision ` +
          `${v.revision}, not put back by ${fmtT(at + span)} (quiet from ${fmtT(at)}); ` +
          (back === undefined ? 'never' : `at ${back.revision}`),
      );
    }
  }
  // A deleted cycle's late copy.
  const deleted = new Map<string, number>();
  for (const r of byKind(records, 'eph')) {
    if (r.phase === 'deleted' && r.revision !== undefined) {
      deleted.set(`${r.key} ${holder(r)} ${r.c}`, r.revision);
    }
  }
  const wasDeleted = (key: string, o: EphemeralOwner, revision: number): boolean =>
    (deleted.get(`${key} ${ownerName(o)} ${o.c}`) ?? Infinity) < revision;
  for (const [key, events] of byKey) {
    events.forEach((h, i) => {
      const o = h.type === 'put' ? ephemeralOwner(h.value) : undefined;
      if (o === undefined || !wasDeleted(key, o, h.revision)) return;
      tally.checked++;
      const gone = events[i + 1];
      const at = stays(h.t, gone?.t ?? Infinity);
      if (at !== undefined) {
        tally.fail(
          `${key}: ${ownerName(o)}'s cycle ${o.c} came back at revision ${h.revision}, after ` +
            `its delete(), and stayed past ${fmtT(at + span)} (quiet from ${fmtT(at)})`,
        );
      }
    });
  }
  // The keys at the end.
  const running = new Set(Object.keys(final.exits));
  const slots = new Set([...running].map((r) => r.split('#')[0] ?? ''));
  for (const w of slots) {
    tally.checked++;
    const key = params.ephemeralPrefix + w;
    const o = ephemeralOwner(final.ephemeral[key] ?? '');
    if (o === undefined || !running.has(ownerName(o))) {
      tally.fail(`at the end ${key} was ${final.ephemeral[key] ?? 'absent'}`);
    }
  }
  for (const [key, value] of Object.entries(final.ephemeral)) {
    tally.checked++;
    const o = ephemeralOwner(value);
    if (o === undefined) tally.fail(`at the end ${key} held the vandal's value`);
    else if (!running.has(ownerName(o)))
      tally.fail(`at the end ${key} held ${value}, of a stopped incarnation`);
    else if (wasDeleted(key, o, final.ephemeralRevision ?? 0))
      tally.fail(`at the end ${key} held ${value}, deleted before`);
  }
  return tally.verdict();
}
