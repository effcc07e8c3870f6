import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import * as errors from '../src/errors.js';
import { EtcdConnector, LEStatus, prepareEndpointList } from '../src/index.js';
import { startProxy, testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { etcdSuite } from './fixtures/etcd-suite.js';
import { watchStats } from './fixtures/watch-stats.js';

const CLOSE_EXITS = fileURLToPath(new URL('./fixtures/close-exits.js', import.meta.url));
const EP = ['http://127.0.0.1:2379'];

void describe('prepareEndpointList', () => {
  const cases: [string[], number, string[]][] = [
    [['10.0.0.1', '10.0.0.2'], 2379, ['http://10.0.0.1:2379', 'http://10.0.0.2:2379']],
    [['https://h2:2380', 'h3:1234'], 2379, ['https://h2:2380', 'http://h3:1234']],
    [['localhost'], 4001, ['http://localhost:4001']],
    [['HTTP://Host/'], 2379, ['http://Host:2379']],
    [[' 10.0.0.1 '], 2379, ['http://10.0.0.1:2379']],
    [['::1'], 2379, ['http://[::1]:2379']],
    [['2001:db8::7'], 2379, ['http://[2001:db8::7]:2379']],
    [['[::1]'], 2379, ['http://[::1]:2379']],
    [['[::1]:2380'], 2379, ['http://[::1]:2380']],
    [['https://[fe80::1]'], 2379, ['https://[fe80::1]:2379']],
  ];
  for (const [hosts, port, want] of cases) {
    void test(`${JSON.stringify(hosts)}, ${port}`, () => {
      assert.deepEqual(prepareEndpointList(hosts, port), want);
    });
  }

  void test('bad hosts and ports are refused, not dropped', () => {
    const bad: [unknown, unknown][] = [
      [[], 2379],
      [[''], 2379],
      [['   '], 2379],
      [['a', ''], 2379],
      [['ftp://h'], 2379],
      [['h/path'], 2379],
      [['http://'], 2379],
      [[42], 2379],
      ['h', 2379],
      [['h'], 0],
      [['h'], 65536],
      [['h'], 1.5],
      [['h'], NaN],
    ];
    for (const [hosts, port] of bad) {
      assert.throws(
        () => prepareEndpointList(hosts as string[], port as number),
        { name: 'InvalidArgumentError', code: 'ETCDC_INVALID_ARGUMENT' },
        JSON.stringify([hosts, port]),
      );
    }
  });
});

void describe('EtcdConnector (no I/O)', () => {
  void test('constructPath joins under the namespace and folds slashes', async () => {
    const conn = new EtcdConnector(EP, 'my_namespace');
    assert.equal(conn.root, '/my_namespace');
    assert.equal(conn.constructPath('elections', 'svc'), '/my_namespace/elections/svc');
    assert.equal(conn.constructPath('services/', '/svc'), '/my_namespace/services/svc');
    assert.equal(conn.constructPath('a//b/', 'c'), '/my_namespace/a/b/c');
    assert.equal(conn.constructPath(), '/my_namespace');
    assert.equal(conn.constructPath('', '/'), '/my_namespace');
    for (const bad of ['..', 'a/../b', './a', 'a\0b']) {
      assert.throws(() => conn.constructPath(bad), { name: 'InvalidArgumentError' }, bad);
    }
    assert.equal(new EtcdConnector(EP, '/nested/ns/').root, '/nested/ns');
    await conn.close();
  });

  void test('bad constructor input throws InvalidArgumentError', () => {
    const bad: [unknown, unknown, unknown][] = [
      [[], 'ns', {}],
      ['http://127.0.0.1:2379', 'ns', {}],
      [['127.0.0.1:2379'], 'ns', {}],
      [['http://h:1/path'], 'ns', {}],
      [[''], 'ns', {}],
      [EP, '', {}],
      [EP, '/', {}],
      [EP, '//', {}],
      [EP, 'a/../b', {}],
      [EP, 'a\0b', {}],
      [EP, 42, {}],
      [EP, 'ns', { callTimeoutMs: 0 }],
      [EP, 'ns', { dialTimeoutMs: -1 }],
      [EP, 'ns', { maxRequestBytes: NaN }],
      [EP, 'ns', { auth: { username: '', password: 'x' } }],
      [EP, 'ns', { tls: { cert: 'c' } }],
      [EP, 'ns', { tls: {} }],
    ];
    for (const [endpoints, ns, options] of bad) {
      assert.throws(
        () => new EtcdConnector(endpoints as string[], ns as string, options as object),
        { name: 'InvalidArgumentError' },
        JSON.stringify([endpoints, ns, options]),
      );
    }
  });

  void test('after close(): factories throw ClosedError; close is idempotent', async () => {
    const conn = new EtcdConnector(EP, 'ns');
    await conn.close();
    await conn.close();
    await conn[Symbol.asyncDispose]();
    assert.equal(conn.closed, true);
    assert.throws(() => conn.newEphemeralKey('/ns/k'), { name: 'ClosedError' });
    assert.throws(() => conn.newHealthMonitor(), { name: 'ClosedError' });
    await assert.rejects(conn.session({ ttl: 5 }), { name: 'ClosedError' });
  });
});

void describe('errors', () => {
  // Every error class with sample arguments, its code and whether it is retryable.
  const table: [new (...args: never[]) => errors.EtcdConnectorError, unknown[], string, boolean][] =
    [
      [errors.InvalidArgumentError, ['ttl', 'bad'], 'ETCDC_INVALID_ARGUMENT', false],
      [errors.InvalidStateError, ['twice'], 'ETCDC_INVALID_STATE', false],
      [errors.ClosedError, [], 'ETCDC_CLOSED', false],
      [errors.KeyExistsError, ['/k'], 'ETCDC_KEY_EXISTS', false],
      [errors.KeyChangedError, ['/k', 'deleted', 7], 'ETCDC_KEY_CHANGED', false],
      [errors.SessionLostError, ['1f', 'gone'], 'ETCDC_SESSION_LOST', true],
      [errors.NotLeaderError, [], 'ETCDC_NOT_LEADER', false],
      [errors.NotLockedError, [], 'ETCDC_NOT_LOCKED', false],
      [errors.NoInstanceError, ['/ns/svc', 2, 1, 1], 'ETCDC_NO_INSTANCE', true],
      [errors.CompactedError, ['5', '10'], 'ETCDC_COMPACTED', false],
      [errors.SlowConsumerError, [1000], 'ETCDC_SLOW_CONSUMER', false],
      [errors.TimeoutError, ['late'], 'ETCDC_TIMEOUT', true],
      [errors.UnavailableError, ['down'], 'ETCDC_UNAVAILABLE', true],
      [errors.RequestFailedError, ['denied'], 'ETCDC_REQUEST_FAILED', false],
      [errors.AuthenticationFailedError, ['bad password'], 'ETCDC_AUTH_FAILED', false],
      [errors.PermissionDeniedError, ['no access'], 'ETCDC_PERMISSION_DENIED', false],
      [errors.TlsError, ['bad certificate'], 'ETCDC_TLS', false],
      [errors.AbortError, [], 'ETCDC_ABORTED', false],
      [errors.EtcdNotFoundError, ['etcd'], 'ETCDC_ETCD_NOT_FOUND', false],
      [errors.EtcdStartError, ['no'], 'ETCDC_ETCD_START_FAILED', true],
      [errors.TooManyParticipantsError, ['/ns/b', 2], 'ETCDC_TOO_MANY_PARTICIPANTS', false],
      [errors.TransactionConflictError, [3], 'ETCDC_TXN_CONFLICT', false],
      [errors.OutcomeUnknownError, ['/ns/q/1', 'x'], 'ETCDC_OUTCOME_UNKNOWN', false],
      [errors.ValueFormatError, ['/ns/c', 'x'], 'ETCDC_VALUE_FORMAT', false],
    ];

  for (const [Cls, args, code, retryable] of table) {
    void test(Cls.name, () => {
      const err = new (Cls as unknown as new (...a: unknown[]) => errors.EtcdConnectorError)(
        ...args,
      );
      assert.ok(err instanceof Cls);
      assert.ok(err instanceof errors.EtcdConnectorError);
      assert.ok(err instanceof Error);
      assert.equal(err.name, Cls.name, 'name is the class name');
      assert.equal(err.code, code);
      assert.equal(err.retryable, retryable);
      assert.ok(err.message.length > 0);
      assert.ok(errors.hasCode(err, code as errors.ErrorCode));
      assert.ok(String(err.stack).startsWith(Cls.name));
    });
  }

  void test('codes are unique, stable, and every class is in the table', () => {
    const codes = table.map(([, , code]) => code);
    assert.equal(new Set(codes).size, codes.length, 'unique');
    assert.deepEqual(new Set(codes), new Set(Object.values(errors.ErrorCode)), 'all covered');
    const classes = Object.values(errors).filter(
      (v) => typeof v === 'function' && v.prototype instanceof errors.EtcdConnectorError,
    );
    assert.deepEqual(new Set(classes), new Set(table.map(([Cls]) => Cls)));
  });

  void test('cause is passed through', () => {
    const cause = new Error('grpc');
    assert.equal(new errors.UnavailableError('down', { cause }).cause, cause);
    assert.equal(new errors.SessionLostError('1', 'x', { cause }).cause, cause);
    assert.equal(errors.hasCode(new Error('x'), errors.ErrorCode.Timeout), false);
  });
});

void describe('EtcdConnector with etcd', () => {
  const suite = etcdSuite();

  void test('after conn.close() a Node process exits by itself', async () => {
    const ns = uniqueName('close');
    const child = spawn(process.execPath, [CLOSE_EXITS, suite.etcd.endpoints.join(','), ns], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      const code = await withTimeout(exited, testTimeout(20000), 'the child to exit by itself');
      assert.equal(code, 0, `stdout: ${out}\nstderr: ${err}`);
    } finally {
      child.kill('SIGKILL');
    }
    const steps = out
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { step: string }).step);
    assert.deepEqual(steps, ['health healthy', 'used', 'closed']);
    // close() deleted the ephemeral key and revoked the lease of the watched key.
    assert.deepEqual(await suite.client.getAll().prefix(`/${ns}/`).keys(), [`/${ns}/plain`]);
  });

  void test('close() racing the proxy closing is final: bounded, and nothing runs afterwards', async () => {
    // Once a test process grew to ~17 GB around this race: close() and the proxy's close
    // together, while streams are opening, live, reset or blackholed. Each round must end in
    // bounded time; afterwards no call fails (none is made), no watch stream is opened again,
    // and the event loop is idle (no retry loop spinning without backoff).
    const errorsAfterClose: unknown[] = [];
    let allClosed = false;
    const onError = (msg: unknown): void => {
      if (allClosed) errorsAfterClose.push(msg);
    };
    subscribe('etcd-connector:call.error', onError);
    const rssBefore = process.memoryUsage().rss;
    const closed: EtcdConnector[] = [];
    try {
      for (let round = 0; round < 12; round++) {
        const proxy = await startProxy(suite.endpoint);
        const conn = new EtcdConnector([proxy.endpoint], uniqueName('race'), {
          dialTimeoutMs: 500,
          callTimeoutMs: 1000,
          watchSilenceMs: 300,
        });
        const elector = conn.newLeaderElector(conn.constructPath('e'), 'me', 2).start();
        const streams = [
          elector,
          conn.newObserver(conn.constructPath('o')).start({ recursive: true }),
          conn.newServiceTracker(conn.constructPath('s')).start(),
          conn.status(),
        ];
        let leading = false;
        for (const [i, stream] of streams.entries()) {
          void (async () => {
            for await (const item of stream) {
              if (i === 0 && (item as { status?: string }).status === LEStatus.Leader) {
                leading = true;
              }
            }
          })().catch(() => undefined);
        }
        void conn
          .newEphemeralKey(conn.constructPath('k'))
          .create('v', 2)
          .catch(() => undefined);
        // Rounds close at once (streams opening), once live, or live and then cut.
        if (round % 3 !== 0) {
          await waitFor(() => leading, { timeoutMs: testTimeout(10_000), message: 'a leader' });
        }
        if (round % 3 === 2) {
          if (round % 2 === 0) proxy.blackhole();
          else proxy.reset();
        }
        await withTimeout(
          round % 2 === 0
            ? Promise.all([conn.close(), proxy.close()])
            : Promise.all([proxy.close(), conn.close()]),
          testTimeout(5000),
          `round ${round}: close racing the proxy`,
        );
        closed.push(conn);
      }
      allClosed = true;
      const opened = closed.map((c) => watchStats(c).streamsOpened);
      const elu = performance.eventLoopUtilization();
      // Longer than the backoffs, the silence probe and the dial timeout: a restart would show.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const busy = performance.eventLoopUtilization(elu).utilization;
      assert.deepEqual(
        closed.map((c) => watchStats(c).streamsOpened),
        opened,
        'a watch stream opened after close',
      );
      assert.ok(closed.every((c) => !watchStats(c).streamOpen && watchStats(c).watchers === 0));
      assert.deepEqual(errorsAfterClose, [], 'calls failed after every connector was closed');
      assert.ok(busy < 0.5, `the event loop is busy after close: ${busy.toFixed(2)}`);
      const grewMb = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
      assert.ok(grewMb < 300, `rss grew by ${grewMb.toFixed(0)} MiB`);
    } finally {
      unsubscribe('etcd-connector:call.error', onError);
    }
  });
});
