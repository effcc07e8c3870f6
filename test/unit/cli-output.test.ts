// etcdc's human tables: columns as wide as their widest cell, for listings of any length.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createOutput } from '../../src/cli/output.js';

// No colour codes in the text, even when the tests run on a terminal.
process.env.NO_COLOR = '1';

void describe('etcdc output', () => {
  void test('a table pads each column to its widest cell', () => {
    const out = createOutput(false);
    const text = out.table(
      ['name', 'addr'],
      [
        ['a', '10.0.0.1:80'],
        ['longer', 'x'],
      ],
    );
    assert.deepEqual(text.split('\n'), ['name    addr', 'a       10.0.0.1:80', 'longer  x']);
  });

  void test('a listing of 200,000 rows (more than a call takes arguments)', () => {
    const rows = Array.from({ length: 200_000 }, (_, i) => [`instance-${i}`, 'up']);
    const lines = createOutput(false).table(['name', 'state'], rows).split('\n');
    assert.equal(lines.length, 200_001);
    assert.equal(lines.at(-1), 'instance-199999  up');
  });
});
