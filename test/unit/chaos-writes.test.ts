// The chaos checker. Fenced writes: a lost increment of either counter, a write in flight at a
// kill, a stale token.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { cleanRun, failing, failedRows } from '../fixtures/chaos-run.js';

void describe('chaos checker: fenced writes', () => {
  void test("a lost update of the RWMutex writers' counter is reported in its own row", () => {
    const records = cleanRun();
    const i = records.findIndex((r) => r.kind === 'history' && r.key === '/c/rwcounter');
    const w = records[i];
    assert.ok(w?.kind === 'history');
    // It says 2 where 1 was due: an increment before it was lost.
    records[i] = { ...w, value: w.value.replace('"n":1', '"n":2') };
    const rows = failedRows(records);
    assert.ok(rows.length > 0);
    assert.ok(
      rows.every((r) => r.startsWith("no lost update (RWMutex writers' counter)")),
      rows.join('\n'),
    );
  });

  void test('a planted lost increment is reported', () => {
    const records = cleanRun();
    // The third write sets 2 again: two holders read 1 and both wrote 2.
    const i = records.findIndex(
      (r) => r.kind === 'history' && r.key === '/c/counter' && r.value.includes('"n":3'),
    );
    const w = records[i];
    assert.ok(w?.kind === 'history');
    records[i] = { ...w, value: w.value.replace('"n":3', '"n":2') };
    const failed = failing(records);
    assert.ok(
      failed.some(
        (v) => v.name === 'no lost update (counter)' && v.violations.join(' ').includes('lost'),
      ),
      JSON.stringify(failed),
    );
  });

  void test('a write in flight when its worker was killed may land after it; a second may not', () => {
    // w2 is killed with its increment to 3 in flight: etcd applies it, w2 never logs it.
    const records = cleanRun().filter((r) => !(r.kind === 'inc' && r.value === 3));
    const i = records.findIndex((r) => r.kind === 'history' && r.value.includes('"n":3'));
    const c3 = records[i];
    assert.ok(c3?.kind === 'history');
    records[i] = { ...c3, value: c3.value.replace('}', ',"w":"w2","inc":0}') };
    const final = records.find((r) => r.kind === 'final');
    assert.ok(final?.kind === 'final');
    final.exits = { 'w1#0': 0 };
    // Its ephemeral keys went with its lease.
    final.ephemeral = { '/c/eph/w1': final.ephemeral?.['/c/eph/w1'] ?? '' };
    assert.deepEqual(
      failing(records).map((v) => v.name),
      [],
    );
    // A second unlogged increment of the same killed worker is one too many.
    records.splice(i + 1, 0, {
      ...c3,
      t: c3.t + 1,
      revision: c3.revision + 1,
      value: c3.value.replace('"n":3', '"n":4').replace('}', ',"w":"w2","inc":0}'),
    });
    const failed = failing(records);
    assert.ok(
      failed.some(
        (v) =>
          v.name === 'no lost update (counter)' && v.violations.join().includes('in flight when'),
      ),
      JSON.stringify(failed),
    );
  });

  void test('a planted stale-token write is reported', () => {
    const records = cleanRun();
    // After w2 took over, a write lands under w1's old token (its key is gone).
    const last = records.findIndex(
      (r) => r.kind === 'history' && r.key === '/c/counter' && r.value.includes('"n":3'),
    );
    const w = records[last];
    assert.ok(w?.kind === 'history');
    records.splice(last + 1, 0, {
      ...w,
      t: w.t + 1,
      revision: w.revision + 0.5,
      value: JSON.stringify({ n: 4, token: '101' }),
    });
    const final = records.find((r) => r.kind === 'final');
    assert.ok(final?.kind === 'final');
    final.counter = 4;
    const failed = failing(records);
    assert.ok(
      failed.some(
        (v) =>
          v.name.startsWith('fencing: counter') &&
          /stale token|was gone/.test(v.violations.join(' ')),
      ),
      JSON.stringify(failed),
    );
  });
});
