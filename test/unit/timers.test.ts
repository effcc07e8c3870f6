// Fast tests of the timing helpers: no etcd.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AbortError } from '../../src/errors.js';
import { abortable, Backoff, delay } from '../../src/transport/timers.js';

void describe('timers', () => {
  void test('Backoff grows exponentially with jitter, caps, and resets', () => {
    const b = new Backoff(50, 1000);
    const first = Array.from({ length: 8 }, () => b.next());
    const caps = [50, 100, 200, 400, 800, 1000, 1000, 1000];
    first.forEach((ms, i) => {
      const cap = caps[i] ?? 0;
      assert.ok(ms >= cap / 2 && ms <= cap, `attempt ${i}: ${ms} not in [${cap / 2}, ${cap}]`);
    });
    b.reset();
    assert.ok(b.next() <= 50);
  });

  void test('delay rejects with AbortError at once when aborted', async () => {
    const c = new AbortController();
    const started = performance.now();
    const p = delay(60_000, c.signal);
    c.abort();
    await assert.rejects(p, AbortError);
    assert.ok(performance.now() - started < 1000);
    await assert.rejects(delay(10, c.signal), AbortError);
  });

  void test('abortable settles like the promise, or AbortError first', async () => {
    assert.equal(await abortable(Promise.resolve(7)), 7);
    const c = new AbortController();
    const never = new Promise<number>(() => undefined);
    const p = abortable(never, c.signal);
    c.abort();
    await assert.rejects(p, AbortError);
  });
});
