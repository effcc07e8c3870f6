// Fast tests of the timing helpers: no etcd.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { AbortError } from '../../src/errors.js';
import { abortable, anySignal, Backoff, delay } from '../../src/transport/timers.js';

/** A full garbage collection, now (as `--expose-gc` would give). */
function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

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

  void test('anySignal aborts on a timeout source that nothing else holds, after a GC', async () => {
    const stop = new AbortController();
    const reasons: unknown[] = [];
    const n = 20;
    for (let i = 0; i < n; i++) {
      // As a caller's give-up signal: only the composite is kept (by its listener).
      const composite = anySignal([stop.signal, AbortSignal.timeout(150)]);
      composite.addEventListener('abort', () => reasons.push(composite.reason), { once: true });
    }
    // A WeakRef's target lives until the end of the job that made it: collect after it.
    await delay(10);
    collectGarbage();
    await delay(10);
    collectGarbage();
    await delay(600);
    // Node 20's AbortSignal.any() alone: 0 of 20 (the sources were collected).
    assert.equal(reasons.length, n);
    assert.ok(reasons.every((r) => r instanceof DOMException && r.name === 'TimeoutError'));
    // Either source: the other one too.
    const first = new AbortController();
    const either = anySignal([first.signal, stop.signal]);
    first.abort(new Error('first'));
    assert.equal((either.reason as Error).message, 'first');
    assert.equal(anySignal([AbortSignal.abort('x')]).aborted, true);
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
