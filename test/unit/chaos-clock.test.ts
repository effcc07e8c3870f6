// The chaos run's clock (chaos/clock.ts): each process's monotonic clock placed on the wall clock.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clockOrigin, fromLibrary, now } from '../../chaos/clock.js';

void test("now() is the wall clock to the ms, and the library's epoch times map onto it", () => {
  for (let i = 0; i < 20; i++) {
    const before = Date.now();
    const t = now();
    const after = Date.now();
    // Date.now() is whole ms, rounded down: ours lies in the same range, give or take what a
    // loaded machine's scheduling took from the calibration (2 ms).
    assert.ok(t >= before - 2 && t < after + 3, `${t} outside [${before} - 2, ${after} + 3)`);
  }
  const at = performance.now();
  assert.ok(Math.abs(fromLibrary(performance.timeOrigin + at) - (clockOrigin + at)) < 1e-6);
});
