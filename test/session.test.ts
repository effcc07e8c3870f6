import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';
import { EtcdConnector, type SessionHandle, type SessionState } from '../src/index.js';
import { startProxy, testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

/** Remaining TTL of a lease as etcd sees it (-1: the lease does not exist). */
async function remainingTtl(client: Etcd3, leaseId: string): Promise<number> {
  const res = await client.leaseClient.leaseTimeToLive(
    { ID: leaseId, keys: false },
    { deadline: Date.now() + 2000 },
  );
  return Number(res.TTL);
}

/**
 * Records every state a session goes through after the current one, and when (monotonic ms) and
 * at which deadline.
 */
function record(session: SessionHandle): { state: SessionState; at: number; deadline: number }[] {
  const seen: { state: SessionState; at: number; deadline: number }[] = [];
  const stream = session.status();
  void (async () => {
    let current = true;
    for await (const state of stream) {
      if (current) current = false;
      else seen.push({ state, at: performance.now(), deadline: session.deadline });
    }
  })();
  return seen;
}

/** Resolves when the session's signal aborts (lost or closed). */
function ended(session: SessionHandle): Promise<void> {
  return new Promise((resolve) => {
    if (session.signal.aborted) resolve();
    else {
      session.signal.addEventListener(
        'abort',
        () => {
          resolve();
        },
        { once: true },
      );
    }
  });
}

/** Waits until a keepalive sent after `since` (monotonic ms) was acknowledged. */
async function ackedAfter(session: SessionHandle, since: number, what: string): Promise<void> {
  await waitFor(() => session.deadline > since + session.ttl * 1000, {
    timeoutMs: testTimeout(15000),
    intervalMs: 20,
    message: what,
  });
}

void describe('Session', () => {
  const suite = etcdSuite({ members: 3 });

  void test('a blackhole longer than the TTL: lost at last acked send + TTL, not later', async (t) => {
    const target = suite.etcd.endpoints[0];
    assert.ok(target !== undefined);
    const proxy = await startProxy(target);
    t.after(() => proxy.close());
    const conn = new EtcdConnector([proxy.endpoint], uniqueName('sess'), { callTimeoutMs: 2000 });
    t.after(async () => {
      proxy.pass();
      await conn.close();
    });
    const session = await conn.session({ ttl: 2 });
    await ackedAfter(session, performance.now(), 'a first keepalive ack');
    const seen = record(session);

    const captured = session.deadline;
    const blackholeAt = performance.now();
    proxy.blackhole();
    await withTimeout(ended(session), testTimeout(15000), 'session loss');
    await waitFor(() => seen.some((s) => s.state === 'lost'), {
      timeoutMs: testTimeout(1000),
      message: 'the lost state on the status stream',
    });

    const lost = seen.find((s) => s.state === 'lost');
    assert.ok(lost !== undefined, `states: ${JSON.stringify(seen)}`);
    t.diagnostic(
      `lost ${(lost.at - lost.deadline).toFixed(1)} ms after the deadline, ` +
        `${(lost.at - blackholeAt).toFixed(0)} ms after the blackhole`,
    );
    // The deadline only moves with acks of keepalives sent before the blackhole.
    assert.ok(lost.deadline >= captured);
    assert.ok(lost.deadline <= blackholeAt + session.ttl * 1000);
    // Reported at the deadline: not before it, and not much after it.
    assert.ok(lost.at >= lost.deadline - 50, `lost ${lost.at - lost.deadline} ms early`);
    assert.ok(
      lost.at <= lost.deadline + testTimeout(500),
      `lost ${lost.at - lost.deadline} ms after the deadline`,
    );
    assert.equal(session.isAlive(), false);
    assert.equal(session.state, 'lost');
    assert.equal((session.signal.reason as Error).name, 'SessionLostError');
    // Never "alive" again after the loss.
    assert.deepEqual(
      seen.slice(seen.indexOf(lost)).map((s) => s.state),
      ['lost'],
    );
  });

  void test('a blackhole shorter than TTL/3: no loss, the lease stays alive', async (t) => {
    const target = suite.etcd.endpoints[1];
    assert.ok(target !== undefined);
    const proxy = await startProxy(target);
    t.after(() => proxy.close());
    const conn = new EtcdConnector([proxy.endpoint], uniqueName('sess'), { callTimeoutMs: 2000 });
    t.after(async () => {
      proxy.pass();
      await conn.close();
    });
    const session = await conn.session({ ttl: 3 });
    await ackedAfter(session, performance.now(), 'a first keepalive ack');
    const seen = record(session);

    proxy.blackhole();
    // The fault's duration is the input of this test, not a wait for a condition.
    await sleep(900);
    proxy.pass();
    const passAt = performance.now();
    await ackedAfter(session, passAt, 'a keepalive ack after the blackhole');

    assert.ok(
      seen.every((s) => s.state === 'alive' || s.state === 'suspended'),
      JSON.stringify(seen),
    );
    assert.equal(session.state, 'alive');
    assert.equal(session.isAlive(), true);
    assert.ok((await remainingTtl(suite.client, session.leaseIdDecimal)) > 0);
  });

  void test('the pool shares one session per TTL; the last release revokes it', async (t) => {
    const conn = new EtcdConnector(suite.etcd.endpoints, uniqueName('sess'));
    t.after(() => conn.close());
    const a = await conn.session({ ttl: 3 });
    const b = await conn.session({ ttl: 3 });
    const c = await conn.session({ ttl: 4 });
    assert.notEqual(a, b, 'one handle per holder');
    assert.equal(a.leaseId, b.leaseId, 'one lease per TTL');
    assert.notEqual(a.leaseId, c.leaseId);
    assert.equal(a.leaseId, BigInt(a.leaseIdDecimal).toString(16));

    await a.close();
    assert.equal(a.state, 'closed');
    assert.equal(a.signal.aborted, true);
    assert.equal(b.isAlive(), true);
    assert.ok(
      (await remainingTtl(suite.client, b.leaseIdDecimal)) > 0,
      'one holder left: lease alive',
    );

    await b.close();
    assert.equal(b.state, 'closed');
    assert.equal(await remainingTtl(suite.client, b.leaseIdDecimal), -1, 'last release revokes');

    // A new session after the last release is a new lease.
    const d = await conn.session({ ttl: 3 });
    assert.notEqual(d.leaseId, b.leaseId);
    await d.close();
    await c.close();
    assert.equal(await remainingTtl(suite.client, c.leaseIdDecimal), -1);
  });

  void test('S1: kill -9 each member in turn, leader first: the session is never lost', async (t) => {
    const conn = new EtcdConnector(suite.etcd.endpoints, uniqueName('sess'), {
      callTimeoutMs: 2000,
    });
    t.after(() => conn.close());
    const session = await conn.session({ ttl: 5 });
    const seen = record(session);

    const leader = await suite.etcd.leader();
    const order = [leader, ...suite.etcd.members.filter((m) => m !== leader)];
    for (const member of order) {
      await member.kill();
      const killedAt = performance.now();
      // A keepalive sent after the kill was answered: it moved to a live member in time.
      await ackedAfter(session, killedAt, `a keepalive ack with ${member.name} down`);
      assert.equal(session.isAlive(), true);
      await member.restart();
      await suite.etcd.waitHealthy();
    }
    assert.ok(
      seen.every((s) => s.state !== 'lost'),
      `states: ${JSON.stringify(seen.map((s) => s.state))}`,
    );
    assert.ok((await remainingTtl(suite.client, session.leaseIdDecimal)) > 0);
  });
});
