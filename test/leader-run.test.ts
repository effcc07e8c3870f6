/**
 * `elector.run(fn)` (Curator's LeaderSelector) against real etcd: terms alternate with requeue,
 * fn's signal aborts on loss no later than the session's local deadline (a blackhole past the
 * TTL), on suspension, and on stop; fn's errors; a recovered suspension runs fn again.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ClosedError,
  InvalidArgumentError,
  InvalidStateError,
  NotLeaderError,
  SessionLostError,
  type FencingToken,
  type LeaderElector,
} from '../src/index.js';
import { sessionOf } from '../src/session/session-handle.js';
import { startProxy, testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

/** Resolves when `signal` aborts. */
function abortedBy(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else
      signal.addEventListener(
        'abort',
        () => {
          resolve();
        },
        { once: true },
      );
  });
}

interface Term {
  id: string;
  token: string;
  start: number;
  end?: number;
}

void describe('elector.run(fn)', () => {
  const suite = etcdSuite();

  async function keys(prefix: string): Promise<string[]> {
    return suite.client.getAll().prefix(prefix).keys();
  }

  void test('bad input; run() instead of start(), never both', async () => {
    const conn = suite.connect(uniqueName('run'), { endpoints: ['http://127.0.0.1:9'] });
    const path = conn.constructPath('e');
    const e = conn.newLeaderElector(path, 'a', 2);
    await assert.rejects(e.run('work' as never), InvalidArgumentError);
    await assert.rejects(
      e.run(() => undefined, { onError: 1 as never }),
      InvalidArgumentError,
    );
    await assert.rejects(
      e.run(() => undefined, { signal: 'stop' as never }),
      InvalidArgumentError,
    );
    e.start();
    await assert.rejects(
      e.run(() => undefined),
      InvalidStateError,
    );
    await e.stop();
    const f = conn.newLeaderElector(conn.constructPath('f'), 'a', 2);
    const controller = new AbortController();
    const running = f.run(() => undefined, { signal: controller.signal });
    assert.throws(() => f.start(), InvalidStateError);
    controller.abort();
    await withTimeout(running, testTimeout(5000), 'run() ends on its signal');
    await assert.rejects(
      f.run(() => undefined),
      ClosedError,
    );
  });

  void test('two participants alternate: fn returns, the participant resigns and queues again', async () => {
    const ns = uniqueName('run');
    const path = `/${ns}/e`;
    const terms: Term[] = [];
    const stop = new AbortController();
    const electors: LeaderElector[] = [];
    const runs = ['A', 'B'].map((id) => {
      const conn = suite.connect(ns);
      const elector = conn.newLeaderElector(path, id, 2);
      electors.push(elector);
      return elector.run(
        async (signal, token) => {
          const term: Term = { id, token: token.revision, start: performance.now() };
          terms.push(term);
          if (terms.length >= 6) {
            stop.abort();
            return;
          }
          // The token fences the work: a write that lands only while this term stands.
          await elector.fencedTxn([conn.client.put(`/${ns}/log/${token.revision}`).value(id)]);
          // Return once the other one is queued, so that the requeue hands over.
          await waitFor(async () => (await keys(`${path}/`)).length === 2 || signal.aborted, {
            timeoutMs: testTimeout(5000),
            message: 'the other participant queued',
          });
          term.end = performance.now();
        },
        { signal: stop.signal },
      );
    });
    await withTimeout(Promise.all(runs), testTimeout(20000), 'six terms');
    const ids = terms.map((t) => t.id);
    assert.equal(ids.length, 6, JSON.stringify(ids));
    for (let i = 1; i < ids.length; i++)
      assert.notEqual(ids[i], ids[i - 1], `alternate: ${ids.join()}`);
    for (let i = 1; i < terms.length; i++) {
      const [prev, cur] = [terms[i - 1], terms[i]];
      assert.ok(prev !== undefined && cur !== undefined);
      assert.ok(BigInt(cur.token) > BigInt(prev.token), 'tokens strictly increase');
      assert.ok(prev.end !== undefined && cur.start > prev.end, 'terms never overlap');
    }
    const log = await suite.client.getAll().prefix(`/${ns}/log/`).strings();
    assert.equal(Object.keys(log).length, 5, 'every fenced write of a standing term landed');
    assert.deepEqual(await keys(`${path}/`), [], 'both resigned');
    assert.ok(electors.every((e) => !e.isLeader));
  });

  void test("blackholed past the TTL: fn's signal aborts no later than the session's local deadline", async (t) => {
    const ns = uniqueName('run');
    const path = `/${ns}/e`;
    const proxy = await startProxy(suite.endpoint);
    suite.defer(() => proxy.close()); // after the connector (deferred closes run newest first)
    const connA = suite.connect(ns, { endpoints: [proxy.endpoint] });
    const session = await connA.session({ ttl: 2 });
    const internal = sessionOf(session);
    assert.ok(internal !== undefined);
    const a = connA.newLeaderElector(path, 'A', 2, { session });
    let aborted: { at: number; deadline: number; reason: unknown; leader: boolean } | undefined;
    let leading: FencingToken | undefined;
    const runA = a.run(async (signal, token) => {
      leading = token;
      await abortedBy(signal);
      aborted = {
        at: performance.now(),
        deadline: internal.deadline,
        reason: signal.reason,
        leader: a.isLeader,
      };
    });
    runA.catch(() => undefined);
    await waitFor(() => leading, { timeoutMs: testTimeout(5000), message: 'A leads' });

    let bStart: number | undefined;
    const b = suite.connect(ns).newLeaderElector(path, 'B', 2);
    const stopB = new AbortController();
    const runB = b.run(
      async (signal) => {
        bStart = performance.now();
        await abortedBy(signal);
      },
      { signal: stopB.signal },
    );
    await waitFor(async () => (await keys(`${path}/`)).length === 2, {
      timeoutMs: testTimeout(5000),
      message: 'B queued',
    });

    const t0 = performance.now();
    proxy.blackhole();
    const seen = await waitFor(() => aborted, {
      timeoutMs: testTimeout(10000),
      intervalMs: 5,
      message: "A's signal aborts",
    });
    assert.ok(
      seen.at <= seen.deadline,
      `aborted at ${(seen.at - t0).toFixed(0)} ms, the deadline was ${(seen.deadline - t0).toFixed(0)} ms after the blackhole`,
    );
    assert.ok(
      seen.reason instanceof NotLeaderError || seen.reason instanceof SessionLostError,
      String(seen.reason),
    );
    assert.equal(seen.leader, false, 'isLeader is false when the signal fires');
    t.diagnostic(
      `aborted ${(seen.at - t0).toFixed(0)} ms after the blackhole, ` +
        `${(seen.deadline - seen.at).toFixed(0)} ms before the local deadline`,
    );
    // The bound session is lost past its deadline: run() ends with the loss.
    await assert.rejects(withTimeout(runA, testTimeout(10000), 'A run ends'), SessionLostError);
    assert.ok(performance.now() >= seen.deadline);
    // B leads only once A's lease is gone on the server: after A's work was told to stop.
    await waitFor(() => bStart, { timeoutMs: testTimeout(10000), message: 'B leads' });
    assert.ok(bStart !== undefined && bStart > seen.at, 'no overlap with A');
    proxy.pass();
    stopB.abort();
    await withTimeout(runB, testTimeout(5000), 'B run ends');
  });

  void test('a suspension that recovers aborts fn, then runs it again for the same term', async () => {
    const ns = uniqueName('run');
    const proxy = await startProxy(suite.endpoint);
    suite.defer(() => proxy.close());
    const conn = suite.connect(ns, { endpoints: [proxy.endpoint] });
    // TTL 5: suspended after ~1.25 s of silence, lost only at 5 s.
    const e = conn.newLeaderElector(`/${ns}/e`, 'A', 5);
    const terms: { token: string; reason?: unknown }[] = [];
    const stop = new AbortController();
    const running = e.run(
      async (signal, token) => {
        const term: { token: string; reason?: unknown } = { token: token.revision };
        terms.push(term);
        await abortedBy(signal);
        term.reason = signal.reason;
      },
      { signal: stop.signal },
    );
    await waitFor(() => terms.length === 1, { timeoutMs: testTimeout(5000), message: 'leads' });
    proxy.blackhole();
    await waitFor(() => terms[0]?.reason, {
      timeoutMs: testTimeout(10000),
      message: 'suspended',
    });
    assert.ok(terms[0]?.reason instanceof NotLeaderError);
    assert.match((terms[0].reason as Error).message, /suspended/);
    proxy.pass();
    await waitFor(() => terms.length === 2, {
      timeoutMs: testTimeout(10000),
      message: 'runs again after the recovery',
    });
    assert.equal(terms[1]?.token, terms[0].token, 'same term, same token');
    stop.abort();
    await withTimeout(running, testTimeout(5000), 'run ends');
    assert.ok(terms[1].reason instanceof ClosedError, 'stop aborts with ClosedError');
  });

  void test('stop: resigns at once (the next leads while fn still runs); run() resolves after fn', async () => {
    const ns = uniqueName('run');
    const path = `/${ns}/e`;
    const order: string[] = [];
    let bLeads: () => void = () => undefined;
    const bLed = new Promise<void>((resolve) => (bLeads = resolve));
    const stopA = new AbortController();
    const a = suite.connect(ns).newLeaderElector(path, 'A', 2);
    let reason: unknown;
    const runA = a
      .run(
        async (signal) => {
          order.push('A leads');
          await abortedBy(signal);
          reason = signal.reason;
          // Still busy when stopped: the handover must not wait for this.
          await bLed;
          order.push('A returns');
        },
        { signal: stopA.signal },
      )
      .then(() => order.push('A run resolved'));
    await waitFor(() => order.includes('A leads'), { timeoutMs: testTimeout(5000), message: 'A' });
    const b = suite.connect(ns).newLeaderElector(path, 'B', 2);
    const stopB = new AbortController();
    const runB = b.run(
      async (signal) => {
        order.push('B leads');
        bLeads();
        await abortedBy(signal);
      },
      { signal: stopB.signal },
    );
    await waitFor(async () => (await keys(`${path}/`)).length === 2, {
      timeoutMs: testTimeout(5000),
      message: 'B queued',
    });
    stopA.abort();
    await withTimeout(runA, testTimeout(5000), 'A run ends');
    assert.ok(reason instanceof ClosedError, String(reason));
    assert.deepEqual(order, ['A leads', 'B leads', 'A returns', 'A run resolved']);
    stopB.abort();
    await withTimeout(runB, testTimeout(5000), 'B run ends');
    assert.deepEqual(await keys(`${path}/`), []);
  });

  void test('fn throws: with onError it requeues; without, the elector stops and run() rejects', async () => {
    const ns = uniqueName('run');
    const conn = suite.connect(ns);
    const e = conn.newLeaderElector(`/${ns}/e`, 'A', 2);
    const seen: { message: string; token: string }[] = [];
    let calls = 0;
    const stop = new AbortController();
    await withTimeout(
      e.run(
        () => {
          calls++;
          if (calls === 3) stop.abort();
          throw new Error(`failure ${calls}`);
        },
        {
          signal: stop.signal,
          onError: (err, token) => {
            seen.push({ message: (err as Error).message, token: token.revision });
          },
        },
      ),
      testTimeout(10000),
      'run with onError',
    );
    assert.deepEqual(
      seen.map((s) => s.message),
      ['failure 1', 'failure 2'],
      'the third term was aborted by the stop: its error is not a result',
    );
    assert.ok(BigInt(seen[1]?.token ?? 0) > BigInt(seen[0]?.token ?? 0), 'requeued: a new term');

    const f = suite.connect(ns).newLeaderElector(`/${ns}/f`, 'A', 2);
    const boom = new Error('boom');
    await assert.rejects(
      withTimeout(
        f.run(() => Promise.reject(boom)),
        testTimeout(10000),
        'run without onError',
      ),
      (err: unknown) => err === boom,
    );
    assert.deepEqual(await keys(`/${ns}/f/`), [], 'resigned');
    assert.throws(() => f.start(), ClosedError);
  });
});
