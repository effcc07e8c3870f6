/** What the watchers saw: observers' events and trackers' maps against etcd's history. */
import {
  byKind,
  holder,
  type ChaosRecord,
  type FinalRecord,
  type HistoryRecord,
  type RunParams,
  type W,
  type WorkerRecord,
} from './records.js';
import { Tally, type Verdict } from './verdict.js';

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
