// Fast tests of the queue behind every recipe stream: no etcd.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { StreamQueue } from '../../src/transport/stream-queue.js';

void describe('StreamQueue', () => {
  void test('every pending next() is settled: values in order, then done', async () => {
    const q = new StreamQueue<number>({ capacity: 4, overflow: 'pause' });
    const it = q[Symbol.asyncIterator]();
    const a = it.next();
    const b = it.next();
    const c = it.next();
    q.push(1);
    q.push(2);
    q.end();
    assert.deepEqual(await Promise.all([a, b, c]), [
      { value: 1, done: false },
      { value: 2, done: false },
      { value: undefined, done: true },
    ]);
  });

  void test('a failure reaches the first pending next(); the others end; closed has it', async () => {
    const q = new StreamQueue<number>({ capacity: 4, overflow: 'pause' });
    const it = q[Symbol.asyncIterator]();
    const a = it.next();
    const b = it.next();
    const boom = new Error('boom');
    q.fail(boom);
    await assert.rejects(a, boom);
    assert.deepEqual(await b, { value: undefined, done: true });
    assert.equal(await q.closed, boom);
  });

  void test('items queued before a failure are read first, then the error', async () => {
    const q = new StreamQueue<number>({ capacity: 4, overflow: 'pause' });
    q.push(1);
    q.push(2);
    q.fail(new Error('late'));
    const seen: number[] = [];
    await assert.rejects(
      (async () => {
        for await (const n of q) seen.push(n);
      })(),
      /late/,
    );
    assert.deepEqual(seen, [1, 2]);
  });

  void test('coalesce keeps the newest items and never drops a kept one', async () => {
    const q = new StreamQueue<string>({
      capacity: 2,
      overflow: 'coalesce',
      keep: (s) => s.startsWith('!'),
    });
    for (const s of ['a', '!lost', 'b', 'c', 'd']) q.push(s);
    assert.equal(q.size, 2);
    const it = q[Symbol.asyncIterator]();
    const r = await Promise.all([it.next(), it.next()]);
    assert.deepEqual(
      r.map((x): unknown => x.value),
      ['!lost', 'd'],
    );
  });

  void test('pause: onFull at capacity, onDrain at half, nothing dropped', async () => {
    let full = 0;
    let drained = 0;
    const q = new StreamQueue<number>({
      capacity: 4,
      overflow: 'pause',
      onFull: () => full++,
      onDrain: () => drained++,
    });
    for (let i = 0; i < 10; i++) q.push(i);
    assert.equal(full, 1);
    assert.equal(q.size, 10);
    const it = q[Symbol.asyncIterator]();
    const got: number[] = [];
    for (let i = 0; i < 10; i++) got.push((await it.next()).value as number);
    assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(drained, 1);
  });

  void test('break calls onReturn once; closed resolves; later pushes are ignored', async () => {
    let returned = 0;
    const q = new StreamQueue<number>({
      capacity: 4,
      overflow: 'pause',
      onReturn: () => returned++,
    });
    q.push(1);
    for await (const n of q) {
      assert.equal(n, 1);
      break;
    }
    q.push(2);
    assert.equal(returned, 1);
    assert.equal(await q.closed, undefined);
    assert.equal(q.isClosed, true);
  });

  void test('a stream can be iterated only once', () => {
    const q = new StreamQueue<number>({ capacity: 1, overflow: 'pause' });
    q[Symbol.asyncIterator]();
    assert.throws(() => q[Symbol.asyncIterator](), TypeError);
  });

  void test('a long stream does not keep what was read (bounded memory)', async () => {
    const q = new StreamQueue<number>({ capacity: 100_000, overflow: 'pause' });
    const it = q[Symbol.asyncIterator]();
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 1000; i++) q.push(i);
      for (let i = 0; i < 1000; i++) await it.next();
    }
    assert.equal(q.size, 0);
    assert.ok((q as unknown as { items: unknown[] }).items.length <= 2048);
  });
});
