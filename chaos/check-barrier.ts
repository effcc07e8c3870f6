/**
 * The double barrier (Go's layout: `<path>/waiters/<UnixNano>` per participant, `<path>/ready`),
 * judged on etcd's history by revision, never by clocks:
 * - an `enter()` that returned was opened by a put of `ready` made while its key was in, after
 *   `count` participants, its own among them, had been in at once;
 * - no put of `ready` let more than `count` participants in;
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
  /** The first put of `ready` while it was in: the one that opened the barrier for it. */
  openedBy: number;
  /** The first `count` participants in at that put (by create revision): its round. */
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
      if (h.type === 'put' && !keys.has(h.key)) {
        const p: Participant = {
          created: h.revision,
          deleted: Infinity,
          quorum: Infinity,
          openedBy: Infinity,
          round: [],
        };
        keys.set(h.key, p);
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
      for (const p of inside.values()) {
        if (p.openedBy !== Infinity) continue;
        p.openedBy = h.revision;
        p.round = round;
      }
    }
  }
  // Who entered by which put of `ready`, and each worker's keys in order (for its next key).
  const openedFor = new Map<number, string[]>();
  const mine = new Map<string, string[]>();
  for (const r of byKind(records, 'barrier')) {
    const p = keys.get(r.key);
    if (r.phase === 'entered') {
      tally.checked++;
      const list = mine.get(holder(r)) ?? [];
      list.push(r.key);
      mine.set(holder(r), list);
      if (p === undefined) {
        tally.fail(`${holder(r)} entered with ${r.key}, which etcd never had`);
      } else if (p.openedBy > p.deleted || p.openedBy === Infinity) {
        tally.fail(`${holder(r)} entered with ${r.key}, but no ready was put while it was in`);
      } else if (p.quorum > p.openedBy) {
        tally.fail(
          `${holder(r)} entered with ${r.key} by the ready put at ${p.openedBy}, before ` +
            `${count} participants had been in with it`,
        );
      } else {
        const list = openedFor.get(p.openedBy) ?? [];
        list.push(r.key);
        openedFor.set(p.openedBy, list);
      }
    }
  }
  for (const [at, list] of openedFor) {
    if (list.length > count) {
      tally.fail(`the ready put at ${at} let ${list.length} participants in: ${list.join(', ')}`);
    }
  }
  for (const r of byKind(records, 'barrier')) {
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
