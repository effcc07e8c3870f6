// The chaos checker: the double barrier, judged on etcd's history by revision.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ChaosRecord, HistoryRecord } from '../../chaos/records.js';
import { cleanRun, failing } from '../fixtures/chaos-run.js';

/** The barrier row's violations for the clean run changed by `edit`. */
function violations(edit: (records: ChaosRecord[]) => void): string[] {
  const records = cleanRun();
  edit(records);
  return failing(records)
    .filter((v) => v.name.startsWith('double barrier'))
    .flatMap((v) => v.violations);
}

/** The history record of `type` on `key` (the checker orders the history by revision itself). */
function event(records: ChaosRecord[], type: string, key: string): HistoryRecord {
  const found = records.find(
    (r): r is HistoryRecord => r.kind === 'history' && r.type === type && r.key === key,
  );
  assert.ok(found !== undefined, `${type} ${key}`);
  return found;
}

void describe('chaos checker: the double barrier', () => {
  void test('a clean run passes', () => {
    assert.deepEqual(
      violations(() => undefined),
      [],
    );
  });

  void test('an enter before the count was in, or with no ready put while in, is reported', () => {
    // Round 1's ready put before w2's key: w1 was let in alone, w2 by no ready at all.
    const early = violations((records) => {
      const ready = event(records, 'put', '/c/meet/ready');
      ready.revision = event(records, 'put', '/c/meet/waiters/12').revision - 0.5;
    });
    assert.ok(
      early.some((v) => v.includes('w1#0 entered with /c/meet/waiters/11 by the ready put at')),
      early.join('\n'),
    );
    assert.ok(
      early.some((v) =>
        v.includes('w2#0 entered with /c/meet/waiters/12, but at no put of ready while it was in'),
      ),
      early.join('\n'),
    );
    // A key etcd never had.
    assert.match(
      violations((records) => {
        records.push({
          kind: 'barrier',
          phase: 'entered',
          key: '/c/meet/waiters/99',
          w: 'w3',
          inc: 0,
          t: 1,
        });
      }).join(),
      /w3#0 entered with \/c\/meet\/waiters\/99, which etcd never had/,
    );
  });

  void test('a participant beyond the count at every put of ready that enters is reported', () => {
    const crowded = violations((records) => {
      // A third participant, in before round 1's ready put, who says it entered.
      const k2 = event(records, 'put', '/c/meet/waiters/12');
      const third = { ...k2, key: '/c/meet/waiters/13', revision: k2.revision + 0.5 };
      records.splice(records.indexOf(k2) + 1, 0, third);
      // It goes with the others of round 1.
      const k2gone = event(records, 'delete', '/c/meet/waiters/12');
      records.splice(records.indexOf(k2gone) + 1, 0, { ...k2gone, key: third.key });
      records.push({
        kind: 'barrier',
        phase: 'entered',
        key: third.key,
        w: 'w3',
        inc: 0,
        t: third.t + 1,
      });
    });
    assert.ok(
      crowded.some((v) =>
        v.includes(
          'w3#0 entered with /c/meet/waiters/13, but at no put of ready while it was in was it among the first 2',
        ),
      ),
      crowded.join('\n'),
    );
  });

  void test('a leave that returns before its round has left is reported', () => {
    // w1 (the lowest) deletes its key only after w2's next key: w2's leave returned too early.
    const early = violations((records) => {
      const k1gone = event(records, 'delete', '/c/meet/waiters/11');
      const lastReady = event(records, 'delete', '/c/meet/ready');
      const next = event(records, 'put', '/c/meet/waiters/22').revision + 0.5;
      k1gone.revision = next;
      lastReady.revision = next;
    });
    assert.ok(
      early.some((v) =>
        /w2#0 left \(\/c\/meet\/waiters\/12\) and entered again at \d+, while \/c\/meet\/waiters\/11 of its round was still in/.test(
          v,
        ),
      ),
      early.join('\n'),
    );
  });
});
