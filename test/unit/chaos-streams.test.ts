// The chaos checker. Observers and trackers: a skipped or repeated event, a late tracker, raft
// elections.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { lastFaultEnd } from '../../chaos/checker.js';
import type { ChaosRecord } from '../../chaos/records.js';
import { cleanRun, failing } from '../fixtures/chaos-run.js';

void describe('chaos checker: observers and trackers', () => {
  void test('a planted skipped observer event is reported', () => {
    const records = cleanRun();
    const i = records.findIndex((r) => r.kind === 'obs.event' && r.key === '/c/obs/b');
    records.splice(i, 1);
    const failed = failing(records);
    assert.ok(
      failed.some(
        (v) =>
          v.name.startsWith('observers') && v.violations.join(' ').includes('skipped put /c/obs/b'),
      ),
      JSON.stringify(failed),
    );
  });

  void test('a planted duplicated observer event is reported', () => {
    const records = cleanRun();
    const i = records.findIndex((r) => r.kind === 'obs.event' && r.key === '/c/obs/b');
    const ev = records[i];
    assert.ok(ev !== undefined);
    records.splice(i + 1, 0, { ...ev, t: ev.t + 1 });
    const failed = failing(records);
    assert.ok(
      failed.some(
        (v) => v.name.startsWith('observers') && v.violations.join(' ').includes('repeat'),
      ),
      JSON.stringify(failed),
    );
  });

  /** A run whose last fault ends at its start and whose w1 tracker is right only 10 s later. */
  function lateTracker(raftAfterMs?: number): ChaosRecord[] {
    const records = cleanRun();
    const first = records[0]?.t ?? 0;
    records.push({
      kind: 'fault',
      phase: 'end',
      fault: 'proxy-reset',
      target: 'w1',
      id: 1,
      t: first,
    });
    if (raftAfterMs !== undefined) {
      const at = first + raftAfterMs;
      records.push({ kind: 'raft', t: at, term: 5, leader: 'a1', member: 'm0', extendMs: 1000 });
    }
    const late = records.filter((r) => r.kind === 'tracker' && 'w' in r && r.w === 'w1');
    for (const r of late) r.t = first + 10_000;
    const final = records.find((r) => r.kind === 'final');
    assert.ok(final?.kind === 'final');
    final.stoppedAt = first + 11_000;
    final.t = first + 12_000;
    records.push({ kind: 'tracker', w: 'w1', inc: 0, t: first + 1, revision: 1, names: ['w1'] });
    return records.sort((x, y) => x.t - y.t);
  }

  void test('a tracker that shows a stale set long after the last fault is reported', () => {
    // 10 s after the last fault; TTL 3 s + 2 s allowed.
    const bad = failing(lateTracker());
    assert.deepEqual(
      bad.map((v) => v.name),
      ['trackers converge within TTL + 2 s of the last fault or raft election'],
    );
    assert.match(
      bad[0]?.violations[0] ?? '',
      /w1#0 showed the final set 10000 ms after the last fault or raft election/,
    );
  });

  void test("a raft election restarts the allowance from the leases' restart, and only that", () => {
    // A new leader restarts every lease's TTL plus its election timeout (extendMs).
    const fault = { kind: 'fault', phase: 'end', fault: 'member-pause-long', target: 'm0', id: 1 };
    const raft = { kind: 'raft', term: 5, leader: 'a1', member: 'm1', extendMs: 1000 };
    const at = (records: Record<string, unknown>[]): number =>
      lastFaultEnd(records as unknown as ChaosRecord[]);
    assert.equal(
      at([
        { ...fault, t: 5000 },
        { ...raft, t: 4500 },
      ]),
      5500,
    );
    assert.equal(
      at([
        { ...raft, t: 2000 },
        { ...fault, t: 5000 },
      ]),
      5000,
    );
    // The late tracker of the test above, with an election 1 s after the last fault: the
    // allowance runs from the leases' restart (2 s), so it is still 8 s late.
    const bad = failing(lateTracker(1000));
    assert.match(bad[0]?.violations[0] ?? '', /w1#0 showed the final set 8000 ms after/);
  });
});
