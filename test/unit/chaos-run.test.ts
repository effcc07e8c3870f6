// The chaos checker. A whole run: a clean one passes, bad exits are reported, a long one is checked
// and drawn; a run's directory starts clean.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { check } from '../../chaos/checker.js';
import { clearRun } from '../../chaos/records.js';
import { timelineHtml, timelineLanes } from '../../chaos/report.js';
import { P, h, cleanRun, failing } from '../fixtures/chaos-run.js';

void describe('chaos checker: a run', () => {
  void test('a clean history passes every invariant', () => {
    const verdicts = check(cleanRun(), P);
    assert.deepEqual(
      verdicts.filter((v) => !v.ok).map((v) => [v.name, v.violations]),
      [],
    );
    assert.ok(verdicts.every((v) => v.ok));
  });

  void test('a worker that exits badly, an unhandled rejection and a leftover lease are reported', () => {
    const records = cleanRun();
    const final = records.find((r) => r.kind === 'final');
    assert.ok(final?.kind === 'final');
    final.exits['w2#0'] = 1;
    final.leasesLeft = 2;
    records.push({ kind: 'unhandled', w: 'w1', inc: 0, t: final.t - 1, message: 'boom' });
    const failed = failing(records).find((v) => v.name.startsWith('clean exits'));
    assert.equal(failed?.violationCount, 3);
  });

  void test('a long run (more records than a call takes arguments) is checked and drawn', () => {
    // A 600 s run wrote about 150,000 records; the report once spread them into Math.min().
    const records = cleanRun();
    for (let i = 0; i < 200_000; i++) records.push(h('put', '/c/obs/x', String(i)));
    assert.ok(check(records, P).every((v) => v.ok));
    const html = timelineHtml('long', records, [], timelineLanes(records));
    assert.match(html, /<svg /);
    // Every kind of hold of the run is drawn in its lane, writers apart from readers.
    for (const what of ['lock', 'semaphore', 'multi', 'rw read', 'rw write', 'leader']) {
      assert.match(html, new RegExp(`<title>w\\d#0 ${what} token \\d+ `), what);
    }
  });

  void test("a run's directory is cleared of an earlier run's files, and only of those", () => {
    const dir = mkdtempSync(join(tmpdir(), 'chaos-out-'));
    try {
      for (const f of ['w1.0.jsonl', 'history.jsonl', 'summary.md', 'report.html', 'notes.txt']) {
        writeFileSync(join(dir, f), 'x');
      }
      clearRun(dir);
      assert.deepEqual(readdirSync(dir), ['notes.txt']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
