/**
 * `etcdc queue`, `etcdc counter` and `etcdc barrier` end to end: the built CLI against a real
 * etcd, Go's key layouts checked with etcdctl, every --json line in the one envelope, usage
 * errors exit 2, errors exit 1, Ctrl-C ends a waiting pop without taking anything.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { testTimeout, uniqueName, waitFor } from '../src/testing/index.js';
import { assertEnvelope, CliProcess, killAll, runCli, untimed } from './fixtures/cli-harness.js';
import { etcdctlDump } from './fixtures/etcdctl-dump.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

void describe('etcdc queue / counter / barrier', () => {
  const suite = etcdSuite();
  suite.defer(killAll);

  function at(ns: string): string[] {
    return ['--endpoints', suite.endpoint, '--namespace', ns];
  }

  void test('queue push / pop: Go layout, FIFO, --json envelope, --priority, --timeout', async () => {
    const ns = uniqueName('cliq');
    const push = await runCli(['queue', 'push', 'jobs', 'a', 'b', 'c', '--json', ...at(ns)]);
    assert.equal(push.code, 0, push.describe);
    assertEnvelope(push.records, push.describe);
    const keys = push.records.map((r) => String(r.key));
    for (const k of keys) assert.match(k, new RegExp(String.raw`^/${ns}/queues/jobs/\d{19}$`));
    assert.deepEqual(
      (await etcdctlDump(suite.etcd.endpoints, `/${ns}/queues/jobs/`)).map((kv) => [
        kv.key,
        kv.value,
        kv.lease,
      ]),
      [
        [keys[0], 'a', ''],
        [keys[1], 'b', ''],
        [keys[2], 'c', ''],
      ],
    );
    const pop = await runCli(['queue', 'pop', 'jobs', '--count', '2', '--json', ...at(ns)]);
    assert.equal(pop.code, 0, pop.describe);
    assertEnvelope(pop.records, pop.describe);
    assert.deepEqual(
      pop.records.map((r) => [r.event, r.key, r.value]),
      [
        ['dequeued', keys[0], 'a'],
        ['dequeued', keys[1], 'b'],
      ],
    );
    const human = await runCli(['queue', 'pop', 'jobs', ...at(ns)]);
    assert.equal(human.code, 0, human.describe);
    assert.match(human.lines.join('\n'), /dequeued .* = c$/m);

    const prio = await runCli([
      'queue',
      'push',
      'urgent',
      'x',
      '--priority',
      '3',
      '--json',
      ...at(ns),
    ]);
    assert.deepEqual(untimed(prio.records[0]), {
      event: 'enqueued',
      key: `/${ns}/queues/urgent/00003/0000000000000000`,
      value: 'x',
      priority: 3,
    });
    const popPrio = await runCli(['queue', 'pop', 'urgent', '--priority', '--json', ...at(ns)]);
    assert.equal(popPrio.records[0]?.value, 'x', popPrio.describe);

    const empty = await runCli(['queue', 'pop', 'jobs', '--timeout', '300', '--json', ...at(ns)]);
    assert.equal(empty.code, 1, empty.describe);
    assert.match(empty.stderr, /"code":"ETCDC_TIMEOUT"/, empty.describe);
  });

  void test('queue pop waits for a push; Ctrl-C ends a waiting pop and takes nothing', async () => {
    const ns = uniqueName('cliq');
    const waiting = new CliProcess(['queue', 'pop', 'later', '--json', ...at(ns)]);
    await waitFor(
      async () =>
        (await etcdctlDump(suite.etcd.endpoints, `/${ns}/queues/__later.queue/line/`)).length === 1,
      { timeoutMs: testTimeout(10000), message: 'pop waiting in line' },
    );
    const push = await runCli(['queue', 'push', 'later', 'hello', ...at(ns)]);
    assert.equal(push.code, 0, push.describe);
    const got = await waiting.waitRecord((r) => r.event === 'dequeued', 'dequeued');
    assert.equal(got.value, 'hello');
    assert.equal((await waiting.exit()).code, 0);

    const interrupted = new CliProcess(['queue', 'pop', 'later', ...at(ns)]);
    // Waiting for real (its place in line is in etcd) before Ctrl-C.
    await waitFor(
      async () =>
        (await etcdctlDump(suite.etcd.endpoints, `/${ns}/queues/__later.queue/line/`)).length === 1,
      { timeoutMs: testTimeout(10000), message: 'pop waiting in line' },
    );
    interrupted.interrupt();
    assert.equal((await interrupted.exit()).code, 0, interrupted.describe());
    await runCli(['queue', 'push', 'later', 'kept', ...at(ns)]);
    assert.equal((await etcdctlDump(suite.etcd.endpoints, `/${ns}/queues/later/`)).length, 1);
  });

  void test('counter get / add: one key, the integer in decimal; negative delta after --', async () => {
    const ns = uniqueName('clic');
    assert.deepEqual((await runCli(['counter', 'get', 'hits', ...at(ns)])).lines, ['0']);
    assert.deepEqual((await runCli(['counter', 'add', 'hits', ...at(ns)])).lines, ['1']);
    assert.deepEqual((await runCli(['counter', 'add', 'hits', '41', ...at(ns)])).lines, ['42']);
    const json = await runCli(['counter', 'add', 'hits', '--json', ...at(ns), '--', '-2']);
    assert.equal(json.code, 0, json.describe);
    assertEnvelope(json.records, json.describe);
    assert.deepEqual(untimed(json.records[0]), {
      event: 'value',
      key: `/${ns}/counters/hits`,
      value: 40,
      delta: -2,
    });
    assert.deepEqual(
      (await etcdctlDump(suite.etcd.endpoints, `/${ns}/counters/hits`)).map((kv) => [
        kv.key,
        kv.value,
        kv.lease,
      ]),
      [[`/${ns}/counters/hits`, '40', '']],
    );
    const bad = await runCli(['counter', 'add', 'hits', 'abc', ...at(ns)]);
    assert.equal(bad.code, 2, bad.describe);
    assert.match(bad.stderr, /\[ETCDC_INVALID_ARGUMENT\] delta/);
  });

  void test('barrier hold / wait / release: the key itself, no lease', async () => {
    const ns = uniqueName('clib');
    const hold = await runCli(['barrier', 'hold', 'gate', '--json', ...at(ns)]);
    assert.deepEqual(untimed(hold.records[0]), {
      event: 'held',
      key: `/${ns}/barriers/gate`,
      changed: true,
    });
    assert.deepEqual(
      (await etcdctlDump(suite.etcd.endpoints, `/${ns}/barriers/gate`)).map((kv) => [
        kv.key,
        kv.value,
        kv.lease,
      ]),
      [[`/${ns}/barriers/gate`, '', '']],
    );
    const waiting = new CliProcess(['barrier', 'wait', 'gate', '--json', ...at(ns)]);
    const timedOut = await runCli(['barrier', 'wait', 'gate', '--timeout', '300', ...at(ns)]);
    assert.equal(timedOut.code, 1, timedOut.describe);
    const release = await runCli(['barrier', 'release', 'gate', ...at(ns)]);
    assert.equal(release.code, 0, release.describe);
    await waiting.waitRecord((r) => r.event === 'open', 'open');
    assert.equal((await waiting.exit()).code, 0);
  });

  void test('usage errors exit 2', async () => {
    for (const args of [
      ['queue', 'push', 'jobs'],
      ['queue', 'push', 'jobs', 'x', '--priority', '70000'],
      ['queue', 'pop', 'jobs', '--count', '0'],
      ['queue', 'push', '', 'x'],
      ['counter', 'add'],
      ['barrier', 'open', 'gate'],
    ]) {
      const r = await runCli([...args, ...at('ns'), '--dial-timeout', '500']);
      assert.equal(r.code, 2, r.describe);
    }
  });
});
