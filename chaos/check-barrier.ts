/**
 * The double barrier (Go's layout: `<path>/waiters/<UnixNano>` per participant, `<path>/ready`),
 * judged on etcd's history by revision, never by clocks:
 * - an `enter()` that returned had a put of `ready`, made while its key was in, at which it was
 *   among the first `count` participants (by create revision) — after `count` participants, its
 *   own among them, had been in at once. So no round lets more than `count` in;
 * - a `leave()` that returned came after every participant of its round had left: each of them
 *   was gone before the leaver's next key (its next `enter()`) was created.
 */
import { byKind, holder, type ChaosRecord, type HistoryRecord } from './records.js';
import { Tally, type Verdict } from './verdict.js';

/** What the history says of one participant key. */
interface Participant {
  readonly created: number;
  deleted: number;
  /** The first revision at which it was in with `count` - 1 others. */
  quorum: number;
  /** The first put of `ready` while it was in at which it was among the first `count`. */
  admittedAt: number;
  /** Those first `count` at that put: its round. */
  round: readonly string[];
}

export function checkDoubleBarrier(
  history: readonly HistoryRecord[],
  records: readonly ChaosRecord[],
  prefix: string,
  count: number,
): Verdict {
  const tally = new Tally(
    `double barrier: in once ${count} are in, out once all have left`,
    'passes',
  );
  const waiters = `${prefix}waiters/`;
  const ready = `${prefix}ready`;
  const keys = new Map<string, Participant>();
  const inside = new Map<string, Participant>();
  let revision = -1;
  // The participants in after each revision: applied once the revision is complete.
  const settle = (): void => {
    if (inside.size < count) return;
    for (const p of inside.values()) if (p.quorum === Infinity) p.quorum = revision;
  };
  for (const h of history) {
    if (h.revision !== revision) settle();
    revision = h.revision;
    if (h.key.startsWith(waiters)) {
      if (h.type === 'put' && !inside.has(h.key)) {
        const p: Participant = {
          created: h.revision,
          deleted: Infinity,
          quorum: Infinity,
          admittedAt: Infinity,
          round: [],
        };
        // A name created again is a late copy of its participant's put: in etcd it counts like
        // any participant; the participant's own records are about its first creation.
        if (!keys.has(h.key)) keys.set(h.key, p);
        inside.set(h.key, p);
      } else if (h.type === 'delete') {
        const p = inside.get(h.key);
        if (p !== undefined) p.deleted = h.revision;
        inside.delete(h.key);
      }
    } else if (h.key === ready && h.type === 'put') {
      settle();
      const round = [...inside]
        .sort((a, b) => a[1].created - b[1].created)
        .slice(0, count)
        .map(([k]) => k);
      for (const key of round) {
        const p = inside.get(key);
        if (p?.admittedAt !== Infinity) continue;
        p.admittedAt = h.revision;
        p.round = round;
      }
    }
  }
  const passes = byKind(records, 'barrier');
  // Each worker's keys in order (for its next key after a leave).
  const mine = new Map<string, string[]>();
  for (const r of passes) {
    if (r.phase !== 'entered') continue;
    tally.checked++;
    const list = mine.get(holder(r)) ?? [];
    list.push(r.key);
    mine.set(holder(r), list);
    const p = keys.get(r.key);
    if (p === undefined) {
      tally.fail(`${holder(r)} entered with ${r.key}, which etcd never had`);
    } else if (p.admittedAt === Infinity) {
      tally.fail(
        `${holder(r)} entered with ${r.key}, but at no put of ready while it was in was it ` +
          `among the first ${count}`,
      );
    } else if (p.quorum > p.admittedAt) {
      tally.fail(
        `${holder(r)} entered with ${r.key} by the ready put at ${p.admittedAt}, before ` +
          `${count} participants had been in with it`,
      );
    }
  }
  for (const r of passes) {
    if (r.phase !== 'left') continue;
    const p = keys.get(r.key);
    const list = mine.get(holder(r)) ?? [];
    const next = list[list.indexOf(r.key) + 1];
    const nextCreated = next === undefined ? undefined : keys.get(next)?.created;
    if (p === undefined || nextCreated === undefined) continue;
    for (const other of p.round) {
      const deleted = keys.get(other)?.deleted ?? Infinity;
      if (deleted > nextCreated) {
        tally.fail(
          `${holder(r)} left (${r.key}) and entered again at ${nextCreated}, while ${other} ` +
            `of its round was still in (until ${deleted})`,
        );
      }
    }
  }
  return tally.verdict();
}
