// The chaos checker. Writes whose answer can be lost: the counter recipe, the queue, STM transfers.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ChaosRecord, HistoryRecord } from '../../chaos/records.js';
import { h, cleanRun, failing, withReceipt } from '../fixtures/chaos-run.js';

void describe('chaos checker: lost answers', () => {
  void test('the counter recipe: a lost, doubled, misattributed or rejected-but-landed add is reported', () => {
    const ADDS = 'counter recipe: every add lands once, a rejected one never';
    const adds = (r: ChaosRecord): boolean => r.kind === 'add';
    /** The clean run with an extra add by w2 that landed (value 4), logged as `outcome`. */
    const extra = (outcome: string | undefined): ChaosRecord[] => {
      const records = cleanRun();
      const end = records.findIndex((r) => r.kind === 'final');
      const put = h('put', '/c/adds', '4');
      put.t = (records[end - 1]?.t ?? 0) + 1;
      const logged: ChaosRecord[] =
        outcome === undefined
          ? []
          : [{ kind: 'add', w: 'w2', inc: 0, t: put.t + 1, outcome } as ChaosRecord];
      records.splice(end, 0, ...withReceipt(put, '/c/__adds.counter', 'b2'), ...logged);
      return records;
    };
    const rows = (records: ChaosRecord[]): string[] =>
      failing(records).map((v) => `${v.name}: ${v.violations.join(' / ')}`);
    // Unanswered: it may have landed. Rejected: it must not have.
    assert.deepEqual(rows(extra('unknown')), []);
    assert.match(
      rows(extra('failed')).join(),
      /^counter recipe.*1 adds of w2#0 landed unacknowledged, but it had 0 unanswered: a rejected call landed$/,
    );
    // Nothing logged: only a killed worker may leave one in flight.
    assert.match(rows(extra(undefined)).join(), /a rejected call landed/);
    const killedW2 = extra(undefined);
    const final = killedW2.find((r) => r.kind === 'final');
    assert.ok(final?.kind === 'final');
    final.exits = { 'w1#0': 0 };
    assert.deepEqual(
      rows(killedW2).filter((r) => r.startsWith('counter')),
      [],
    );
    // An add that returned a value nobody wrote, or one that someone else wrote, or twice.
    const planted = (value: number, who = 'w2'): string[] => {
      const records = cleanRun();
      const i = records.findLastIndex(adds);
      records.splice(i + 1, 0, {
        kind: 'add',
        w: who,
        inc: 0,
        t: (records[i]?.t ?? 0) + 1,
        outcome: 'ok',
        value,
      } as ChaosRecord);
      return rows(records);
    };
    assert.match(planted(9).join(), new RegExp(`^${ADDS}: w2#0's add returned 9, never written`));
    assert.match(planted(3).join(), /two adds returned 3/);
    const misplaced = cleanRun();
    const first = misplaced.find(adds);
    assert.ok(first?.kind === 'add');
    first.w = 'w2';
    assert.match(rows(misplaced).join(), /w2#0's add returned 1, written by w1#0/);
    // A write that is not the previous value + 1.
    const skipped = cleanRun();
    const put = skipped.find((r) => r.kind === 'history' && r.key === '/c/adds' && r.value === '2');
    assert.ok(put?.kind === 'history');
    put.value = '5';
    assert.match(rows(skipped).join(), /write at \d+ set 5 after 1: not one add/);
  });

  void test('the queue: a doubled, misdelivered, undelivered or rejected-but-landed item is reported', () => {
    const rows = (records: ChaosRecord[]): string =>
      failing(records)
        // (a queue without a delivery also fails liveness: not what this test is about)
        .filter((v) => v.name.startsWith('queue'))
        .map((v) => `${v.name}: ${v.violations.join(' / ')}`)
        .join('\n');
    const change = (edit: (records: ChaosRecord[]) => void): string => {
      const records = cleanRun();
      edit(records);
      return rows(records);
    };
    const find = <K extends ChaosRecord['kind']>(
      records: ChaosRecord[],
      kind: K,
    ): Extract<ChaosRecord, { kind: K }> => {
      const r = records.find((x) => x.kind === kind);
      assert.ok(r !== undefined);
      return r as Extract<ChaosRecord, { kind: K }>;
    };
    // Delivered twice: w1 logs its item again.
    assert.match(
      change((r) => r.push({ ...find(r, 'dequeue') })),
      /\/c\/jobs\/0 \(w2#0:0\) delivered twice/,
    );
    // Delivered to one who did not claim it.
    assert.match(
      change((r) => {
        find(r, 'dequeue').w = 'w2';
      }),
      /w2#0 was given \/c\/jobs\/0, claimed by w1#0/,
    );
    // Claimed, never delivered: fails unless unanswered.
    const lost = (outcome?: string): string =>
      change((r) => {
        const d = find(r, 'dequeue');
        if (outcome === undefined) r.splice(r.indexOf(d), 1);
        else Object.assign(d, { outcome, item: undefined, key: undefined, revision: undefined });
      });
    assert.match(lost(), /1 claims of w1#0 landed unacknowledged/);
    assert.match(lost('failed'), /1 claims of w1#0 landed unacknowledged/);
    assert.equal(lost('unknown'), '');
    // Enqueued twice; rejected but there; acknowledged at another key.
    assert.match(
      change((r) => {
        const put = r.find((x) => x.kind === 'history' && x.key === '/c/jobs/1');
        assert.ok(put?.kind === 'history');
        put.value = 'w2#0:0';
      }),
      /item w2#0:0 put twice/,
    );
    assert.match(
      change((r) => {
        find(r, 'enqueue').outcome = 'failed';
      }),
      /w2#0's enqueue of w2#0:0 was rejected, but it is at \/c\/jobs\/0/,
    );
    // An item its producer never logged: only if that producer was killed.
    const unlogged = (killedProducer: boolean): string =>
      change((r) => {
        r.splice(r.indexOf(find(r, 'enqueue')), 1);
        if (killedProducer) find(r, 'final').exits = { 'w1#0': 0 };
      });
    assert.match(unlogged(false), /1 enqueues of w2#0 landed unacknowledged/);
    assert.equal(unlogged(true), '');
    assert.match(
      change((r) => {
        find(r, 'enqueue').key = '/c/jobs/7';
      }),
      /w2#0 enqueued w2#0:0 at \/c\/jobs\/7; etcd has \/c\/jobs\/0/,
    );
  });

  void test('the priority queue is checked on its own: its items, its claims', () => {
    const rows = (records: ChaosRecord[]): string[] =>
      failing(records)
        .filter((v) => v.name.includes('queue:'))
        .map((v) => `${v.name}: ${v.violations.join(' / ')}`);
    const dequeues = (records: ChaosRecord[]): Extract<ChaosRecord, { kind: 'dequeue' }>[] =>
      records.filter((r) => r.kind === 'dequeue');
    // The fifo queue's delivery, logged as the priority queue's: a claim neither has.
    const relabelled = cleanRun();
    const [fifo] = dequeues(relabelled);
    assert.ok(fifo !== undefined);
    fifo.queue = 'priority';
    assert.deepEqual(
      rows(relabelled).map((r) => r.replace(/ at \d+/, '')),
      [
        'queue: each item enqueued once, delivered once to its claimer, a rejected one never: ' +
          '1 claims of w1#0 landed unacknowledged, but it had 0 unanswered: a rejected call landed',
        'priority queue: each item enqueued once, delivered once to its claimer, a rejected one ' +
          'never: w1#0 was given /c/jobs/0: no such claim',
      ],
    );
    // A drained priority restarts its sequence at 0 (as Go's does): the same key, a new item.
    const again = cleanRun();
    const end = again.findIndex((r) => r.kind === 'final');
    const pkey = '/c/pjobs/00001/0000000000000000';
    const put = h('put', pkey, 'w1#0:1');
    const claim = h('delete', pkey);
    [put.t, claim.t] = [(again[end - 1]?.t ?? 0) + 1, (again[end - 1]?.t ?? 0) + 3];
    const by = { w: 'w1', inc: 0, queue: 'priority' } as const;
    again.splice(
      end,
      0,
      ...withReceipt(put, '/c/__pjobs.pqueue', 'a1'),
      { ...by, t: put.t + 1, kind: 'enqueue', item: 'w1#0:1', outcome: 'ok', key: pkey },
      ...withReceipt(claim, '/c/__pjobs.pqueue', 'a1'),
      {
        ...by,
        t: claim.t + 1,
        kind: 'dequeue',
        outcome: 'ok',
        item: 'w1#0:1',
        key: pkey,
        revision: claim.revision,
      },
    );
    assert.deepEqual(rows(again), []);
    // The priority queue's claim, never delivered.
    const undelivered = cleanRun();
    const pq = dequeues(undelivered).find((d) => d.queue === 'priority');
    assert.ok(pq !== undefined);
    undelivered.splice(undelivered.indexOf(pq), 1);
    assert.deepEqual(rows(undelivered), [
      'priority queue: each item enqueued once, delivered once to its claimer, a rejected one ' +
        'never: 1 claims of w2#0 landed unacknowledged, but it had 0 unanswered: a rejected call landed',
    ]);
  });

  void test('STM transfers: a changed total, a wrong move, a rejected-but-landed or misattributed one is reported', () => {
    const rows = (
      edit: (transfer: Extract<ChaosRecord, { kind: 'transfer' }>, records: ChaosRecord[]) => void,
    ): string => {
      const records = cleanRun();
      const transfer = records.find((r) => r.kind === 'transfer');
      assert.ok(transfer?.kind === 'transfer');
      edit(transfer, records);
      return failing(records)
        .filter((v) => v.name.startsWith('STM'))
        .map((v) => v.violations.join(' / '))
        .join('\n');
    };
    assert.equal(
      rows(() => undefined),
      '',
    );
    const credit = (records: ChaosRecord[]): HistoryRecord => {
      const r = records.find(
        (x) => x.kind === 'history' && x.key === '/c/accounts/1' && x.value === '105',
      );
      assert.ok(r?.kind === 'history');
      return r;
    };
    assert.match(
      rows((_t, r) => {
        credit(r).value = '106';
      }),
      /held 501 in all at revision \d+, not 500/,
    );
    assert.match(
      rows((t) => {
        t.amount = 4;
      }),
      /transfer of 4 from 0 to 1 committed at \d+, which moved \{"0":-5,"1":5\}/,
    );
    assert.match(
      rows((t) => {
        t.w = 'w2';
      }),
      /w2#0's transfer at \d+ was written by w1#0/,
    );
    assert.match(
      rows((t) => {
        t.outcome = 'failed';
      }),
      /1 transfers of w1#0 landed unacknowledged.*a rejected call landed/,
    );
    assert.equal(
      rows((t) => {
        t.outcome = 'unknown';
      }),
      '',
    );
  });
});
