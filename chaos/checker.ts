/**
 * The checker: reads what every process wrote down and etcd's history, and says, invariant by
 * invariant, whether anything went wrong — with counts, and the first violations in words.
 *
 * Validity: a holder of a lock (or of leadership) may act on it from the moment it learned it
 * holds it until it released it, learned it lost it, or its session's deadline passed — whichever
 * comes first. A paused process cannot log its loss, so its validity ends at the last deadline it
 * logged before the end: exactly what the library promises (a holder believes only until its
 * local deadline, which comes before etcd can expire its lease). The checks live in the
 * `check-*.ts` files beside this one, by what they look at.
 */
import {
  alonePerPath,
  atMost,
  checkExclusion,
  checkGrantDeadlines,
  checkLeaseTtls,
  holds,
  readersOrOneWriter,
  type Role,
} from './check-holds.js';
import { checkDoubleBarrier } from './check-barrier.js';
import { checkEphemeralOwners, checkEphemeralRepairs } from './check-ephemeral.js';
import { checkAdds, checkQueue, checkTransfers, writersOf } from './check-lost-answers.js';
import { checkExits, checkLiveness, instants } from './check-liveness.js';
import { checkObservers, checkTrackers } from './check-streams.js';
import { checkCounter, checkFencing } from './check-writes.js';
import {
  BARRIER_COUNT,
  byKind,
  queueOf,
  SEMAPHORE_PERMITS,
  type ChaosRecord,
  type FinalRecord,
  type HistoryRecord,
  type RunParams,
} from './records.js';
import type { Verdict } from './verdict.js';

/** Runs every check. */
export function check(records: readonly ChaosRecord[], params: RunParams): Verdict[] {
  const history = records.filter((r): r is HistoryRecord => r.kind === 'history');
  history.sort((a, b) => a.revision - b.revision);
  const final = records.find((r): r is FinalRecord => r.kind === 'final');
  const writers = writersOf(history, records, final);
  const lockHolds = holds(records, 'lock.acquired', 'lock.ended');
  const permitHolds = holds(records, 'lock.acquired', 'lock.ended', ['semaphore']);
  const rwHolds = holds(records, 'lock.acquired', 'lock.ended', ['read', 'write']);
  const multiHolds = holds(records, 'lock.acquired', 'lock.ended', ['multi']);
  const leadHolds = holds(records, 'lead.gained', 'lead.ended');
  const runHolds = holds(records, 'run.started', 'run.ended');
  const dequeues = byKind(records, 'dequeue');
  const roles: Role[] = [
    ['lock', lockHolds],
    ['semaphore permit', permitHolds],
    ['read lock', rwHolds.filter((h) => h.recipe === 'read')],
    ['write lock', rwHolds.filter((h) => h.recipe === 'write')],
    ['MultiLock', multiHolds],
    ['leadership', leadHolds],
    ['leader work (run)', runHolds],
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
    checkExclusion('mutual exclusion: leader work terms (run)', runHolds),
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
    checkFencing(
      'fencing: leader work (run) under live, increasing tokens',
      history,
      params.runWorkKey,
      params.runElectionPrefix,
    ),
    checkCounter(history, records, 'mutex', params.counterKey, final),
    checkCounter(history, records, 'rw', params.rwCounterKey, final),
    checkAdds(history, records, params.addsKey, writers),
    checkQueue(history, records, 'fifo', params.queuePrefix, writers),
    checkQueue(history, records, 'priority', params.pqueuePrefix, writers),
    checkTransfers(history, records, params.accountPrefix, writers),
    checkDoubleBarrier(history, records, params.barrierPrefix, BARRIER_COUNT),
    checkEphemeralOwners(history, params),
    checkEphemeralRepairs(history, records, params, final),
    checkObservers(history, records, params.observedPrefix, final),
    checkTrackers(records, params, final),
    checkLiveness(records, params, [
      ...roles,
      ['counter add', instants(byKind(records, 'add'))],
      ['queue delivery', instants(dequeues.filter((d) => queueOf(d) === 'fifo'))],
      ['priority queue delivery', instants(dequeues.filter((d) => queueOf(d) === 'priority'))],
      ['STM transfer', instants(byKind(records, 'transfer'))],
      [
        'double barrier pass',
        instants(byKind(records, 'barrier').filter((b) => b.phase === 'left')),
      ],
    ]),
    checkExits(records, final),
  ];
}

export { holds, type Hold } from './check-holds.js';
export { lastFaultEnd } from './check-streams.js';
export { fmtT, type Verdict } from './verdict.js';
