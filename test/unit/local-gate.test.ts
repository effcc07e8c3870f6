/** The in-process gate: FIFO, aborts, and the hand-over a mutex release makes. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AbortError } from '../../src/errors.js';
import { LocalGates } from '../../src/engines/local-gate.js';

void describe('LocalGates', () => {
  test('one caller at a time, first come first served; a gate nobody wants is forgotten', async () => {
    const gates = new LocalGates();
    const order: string[] = [];
    const first = await gates.enter('k');
    const second = gates.enter('k').then((p) => (order.push('second'), p));
    const third = gates.enter('k').then((p) => (order.push('third'), p));
    assert.equal(gates.tryEnter('k'), undefined, 'busy');
    first.leave();
    first.leave(); // idempotent: lets in one caller only
    (await second).leave();
    (await third).leave();
    assert.deepEqual(order, ['second', 'third']);
    assert.equal(gates.busy('k'), false);
  });

  test('an aborted waiter leaves the line; the next one comes in', async () => {
    const gates = new LocalGates();
    const leave = gates.tryEnter('k');
    assert.ok(leave !== undefined);
    const ac = new AbortController();
    const gone = gates.enter('k', ac.signal);
    const next = gates.enter('k');
    ac.abort();
    await assert.rejects(gone, AbortError);
    leave();
    (await next).leave();
    assert.equal(gates.busy('k'), false);
  });

  test('a hand-over lets the first waiter in with what it is given; the giver’s leave does nothing', async () => {
    const gates = new LocalGates<string>();
    const giver = await gates.enter('k');
    const taker = gates.enter('k', undefined, true);
    const after = gates.enter('k', undefined, true);
    assert.equal(gates.nextTakesHandoff('k'), true);
    assert.equal(gates.handOver('k', 'place'), true);
    const pass = await taker;
    assert.equal(pass.handoff, 'place');
    giver.leave(); // the gate is the taker's now
    let afterIn = false;
    void after.then(() => (afterIn = true));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(afterIn, false, 'still waiting: the taker is inside');
    pass.leave();
    const last = await after;
    assert.equal(last.handoff, undefined, 'came in by its turn');
    last.leave();
    assert.equal(gates.busy('k'), false);
  });

  test('no hand-over to a waiter that does not take one, nor with nobody waiting', async () => {
    const gates = new LocalGates<string>();
    const giver = await gates.enter('k');
    assert.equal(gates.handOver('k', 'place'), false, 'nobody waits');
    const waiter = gates.enter('k');
    assert.equal(gates.nextTakesHandoff('k'), false);
    assert.equal(gates.handOver('k', 'place'), false);
    giver.leave();
    const pass = await waiter;
    assert.equal(pass.handoff, undefined);
    pass.leave();
    assert.equal(gates.busy('k'), false);
  });
});
