// The chaos checker: ephemeral keys (never taken from a live owner, put back after the vandal,
// a deleted cycle gone, the keys at the end), and the quiet stretches it judges time by.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { busySpans, quietStretch } from '../../chaos/check-ephemeral.js';
import {
  ephemeralValue,
  type ChaosRecord,
  type FinalRecord,
  type HistoryRecord,
} from '../../chaos/records.js';
import { cleanRun, failing } from '../fixtures/chaos-run.js';

/** The ephemeral rows' violations for the clean run changed by `edit`. */
function violations(edit: (records: ChaosRecord[]) => void): string[] {
  const records = cleanRun();
  edit(records);
  return failing(records)
    .filter((v) => v.name.startsWith('ephemeral keys'))
    .flatMap((v) => v.violations);
}

function finalOf(records: ChaosRecord[]): FinalRecord {
  const final = records.find((r): r is FinalRecord => r.kind === 'final');
  assert.ok(final?.ephemeral !== undefined);
  return final;
}

/** A history event on `key` right after the one at `after` (same time, half a revision on). */
function after(
  records: ChaosRecord[],
  at: HistoryRecord,
  type: 'put' | 'delete',
  value = '',
  dt = 0,
): HistoryRecord {
  const ev: HistoryRecord = {
    ...at,
    t: at.t + dt,
    type,
    value,
    revision: at.revision + 0.5,
  };
  records.splice(records.indexOf(at) + 1, 0, ev);
  return ev;
}

function event(records: ChaosRecord[], type: string, key: string, nth = 0): HistoryRecord {
  const found = records.filter(
    (r): r is HistoryRecord => r.kind === 'history' && r.type === type && r.key === key,
  )[nth];
  assert.ok(found !== undefined, `${type} ${key}`);
  return found;
}

/** A fault from `from` to `to` (epoch ms). */
function fault(records: ChaosRecord[], from: number, to: number, id: number): void {
  const base = { kind: 'fault', fault: 'proxy-blackhole-long', target: 'w2', id } as const;
  records.push({ ...base, t: from, phase: 'start' }, { ...base, t: to, phase: 'end' });
  records.sort((a, b) => a.t - b.t);
}

void describe('chaos checker: ephemeral keys', () => {
  void test('a clean run passes', () => {
    assert.deepEqual(
      violations(() => undefined),
      [],
    );
  });

  void test("a put over another incarnation's live key is reported; after a delete or the vandal it is not", () => {
    const over = violations((records) => {
      // w2 writes the shared key while w1 has it (no delete between).
      after(records, event(records, 'put', '/c/eph-shared'), 'put', ephemeralValue('w2', 0, 9, 0));
    });
    assert.ok(
      over.some(
        (v) => v.includes('w2#0 overwrote /c/eph-shared at revision') && v.includes("w1#0's"),
      ),
      over.join('\n'),
    );
    // A new incarnation of w1 over its old one's key is another owner too.
    const reborn = violations((records) => {
      after(records, event(records, 'put', '/c/eph/w1'), 'put', ephemeralValue('w1', 1, 0, 0));
    });
    assert.ok(
      reborn.some((v) => v.includes('w1#1 overwrote /c/eph/w1')),
      reborn.join('\n'),
    );
    // Over the vandal's value (no lease): anyone's to take.
    assert.deepEqual(
      violations((records) => {
        const vandal = after(records, event(records, 'put', '/c/eph-shared'), 'put', 'vandal');
        after(records, vandal, 'put', ephemeralValue('w2', 0, 9, 0));
      }).filter((v) => v.includes('overwrote')),
      [],
    );
  });

  void test('a key the vandal deleted and nobody put back is reported, unless faults never let up', () => {
    /**
     * w2's put back taken out of the history and the end (its put and the vandal's act returned),
     * the keys read 10 s after the act; `after` (ms after the act): the put back lands then.
     */
    const notBack = (records: ChaosRecord[], after?: number): void => {
      const back = event(records, 'put', '/c/eph/w2', 1);
      records.splice(records.indexOf(back), 1);
      const vandal = records.find((r) => r.kind === 'vandal');
      assert.ok(vandal?.kind === 'vandal');
      const final = finalOf(records);
      final.ephemeralAt = vandal.t + 10_000;
      delete final.ephemeral?.['/c/eph/w2'];
      if (after === undefined) return;
      records.push({ ...back, t: vandal.t + after, revision: vandal.revision + 0.5 });
      final.ephemeral = { ...final.ephemeral, '/c/eph/w2': back.value };
    };
    const never = violations((records) => {
      notBack(records);
    });
    assert.ok(
      never.some(
        (v) => v.includes('/c/eph/w2, deleted by the vandal at revision') && v.includes('never'),
      ),
      never.join('\n'),
    );
    assert.ok(
      never.some((v) => v.includes('at the end /c/eph/w2 was absent')),
      never.join('\n'),
    );
    // Put back late, 6 s after the act with no fault between: past TTL + 2 s of quiet.
    const late = violations((records) => {
      notBack(records, 6000);
    });
    assert.ok(
      late.some((v) => v.includes('not put back by') && v.includes('at ')),
      late.join('\n'),
    );
    // The same, with faults from the act to the put back: not a violation of the rule.
    const busy = violations((records) => {
      notBack(records, 6000);
      const vandal = records.find((r) => r.kind === 'vandal');
      assert.ok(vandal !== undefined);
      fault(records, vandal.t - 100, vandal.t + 2500, 901);
      fault(records, vandal.t + 2000, vandal.t + 5000, 902);
    });
    assert.deepEqual(busy, []);
  });

  void test('a deleted cycle that comes back and stays is reported; one overwritten at once is not', () => {
    const stays = violations((records) => {
      const gone = event(records, 'delete', '/c/eph-cycle/w1');
      // A late copy of cycle 1 lands after the delete was written down, and nothing removes it.
      records.push({
        ...gone,
        t: gone.t + 100,
        type: 'put',
        value: ephemeralValue('w1', 0, 1, 0),
        revision: gone.revision + 0.25,
      });
      records.sort((a, b) => a.t - b.t);
      const final = finalOf(records);
      final.ephemeralAt = gone.t + 20_000;
      final.ephemeral = { ...final.ephemeral, '/c/eph-cycle/w1': ephemeralValue('w1', 0, 1, 0) };
    });
    assert.ok(
      stays.some((v) => v.includes("/c/eph-cycle/w1: w1#0's cycle 1 came back at revision")),
      stays.join('\n'),
    );
    assert.ok(
      stays.some(
        (v) => v.includes('at the end /c/eph-cycle/w1 held') && v.includes('deleted before'),
      ),
      stays.join('\n'),
    );
    // A late copy deleted 50 ms after it landed: fine.
    assert.deepEqual(
      violations((records) => {
        const gone = event(records, 'delete', '/c/eph-cycle/w1');
        const copy = after(records, gone, 'put', ephemeralValue('w1', 0, 1, 0), 0);
        copy.revision = gone.revision + 0.25;
        after(records, copy, 'delete', '', 50).revision = gone.revision + 0.4;
      }),
      [],
    );
  });

  void test("the vandal's value or a stopped incarnation's at the end is reported", () => {
    const vandal = violations((records) => {
      const final = finalOf(records);
      final.ephemeral = { ...final.ephemeral, '/c/eph-shared': 'vandal' };
    });
    assert.ok(
      vandal.some((v) => v.includes("at the end /c/eph-shared held the vandal's value")),
      vandal.join('\n'),
    );
    const stopped = violations((records) => {
      const final = finalOf(records);
      final.ephemeral = { ...final.ephemeral, '/c/eph/w1': ephemeralValue('w1', 7, 0, 0) };
    });
    assert.ok(
      stopped.some((v) => v.includes('of a stopped incarnation')),
      stopped.join('\n'),
    );
    assert.ok(
      stopped.some((v) => v.includes('at the end /c/eph/w1 was {')),
      stopped.join('\n'),
    );
  });

  void test('quiet stretches: found between and after faults, not inside them', () => {
    const records: ChaosRecord[] = [
      { kind: 'fault', fault: 'f', target: 'm0', phase: 'start', id: 1, t: 1000 },
      { kind: 'fault', fault: 'f', target: 'm0', phase: 'end', id: 1, t: 3000 },
      { kind: 'raft', term: 2, leader: 'a', member: 'm1', extendMs: 1000, t: 5000 },
      { kind: 'fault', fault: 'f', target: 'w1', phase: 'start', id: 2, t: 9000 },
      { kind: 'fault', fault: 'f', target: 'w1', phase: 'end', id: 2, t: 9500 },
    ];
    const busy = busySpans(records);
    assert.deepEqual(busy, [
      { from: 1000, to: 3000 },
      { from: 5000, to: 6000 },
      { from: 9000, to: 9500 },
    ]);
    assert.equal(quietStretch(busy, 0, 20_000, 1000), 0);
    assert.equal(quietStretch(busy, 1500, 20_000, 2500), 6000);
    assert.equal(quietStretch(busy, 1500, 20_000, 2000), 3000);
    assert.equal(quietStretch(busy, 1500, 8000, 2500), undefined);
    assert.equal(quietStretch(busy, 9200, 12_000, 2500), 9500);
  });
});
