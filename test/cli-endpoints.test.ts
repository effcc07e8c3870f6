/**
 * `etcdc register --format endpoints` and `etcdc endpoints` end to end: the built CLI against a
 * real etcd, read back with etcdctl and with the library's endpoint tracker.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import { findEtcdBinary, testTimeout, uniqueName } from '../src/testing/index.js';
import {
  assertEnvelope,
  CliProcess,
  killAll,
  runCli,
  untimed,
  type JsonRecord,
} from './fixtures/cli-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

const execFileAsync = promisify(execFile);
const DEAD = '127.0.0.1:1';
const FAST_FAIL = ['--command-timeout', '500', '--dial-timeout', '500'];

void describe('etcdc endpoints / register --format endpoints', () => {
  const suite = etcdSuite();
  suite.defer(killAll);

  const at = (ns: string): string[] => ['--endpoints', suite.endpoint, '--namespace', ns];

  void test('usage errors exit 2 before connecting', async () => {
    const cases: [string[], RegExp][] = [
      [['register', 'svc', 'inst'], /missing required argument 'value'/],
      [['register', '--format', 'endpoints', 'api', 'nohost'], /addr: must be host:port/],
      [['register', '--format', 'endpoints', 'api', 'h:1', '{bad'], /metadata must be JSON/],
      [['register', '--format', 'xml', 'api', 'h:1'], /--format/],
      [['endpoints', ''], /\[ETCDC_INVALID_ARGUMENT\] service: must not be empty/],
    ];
    await Promise.all(
      cases.map(async ([args, stderr]) => {
        const r = await runCli([...args, '--endpoints', DEAD, ...FAST_FAIL]);
        assert.equal(r.code, 2, r.describe);
        assert.match(r.stderr, stderr, r.describe);
        assert.deepEqual(r.lines, [], 'nothing on stdout');
      }),
    );
  });

  void test("register --format endpoints writes Go's value; endpoints lists and watches it; Ctrl-C deletes it", async () => {
    const ns = uniqueName('cli-ep');
    const key = `/${ns}/services/api/127.0.0.1:50051`;
    const value = '{"Op":0,"Addr":"127.0.0.1:50051","Metadata":{"w":1,"zone":"a\\u003cb"}}';
    const reg = new CliProcess([
      'register',
      '--format',
      'endpoints',
      'api',
      '127.0.0.1:50051',
      '{"zone":"a<b","w":1}',
      '--ttl',
      '10',
      '--json',
      ...at(ns),
    ]);
    const registered = await reg.waitRecord((r) => r.event === 'registered', 'registered');
    assertEnvelope(reg.records, reg.describe());
    assert.deepEqual(untimed(registered), {
      event: 'registered',
      key,
      value,
      ttl: 10,
      format: 'endpoints',
    });
    const { stdout } = await execFileAsync(
      findEtcdBinary('etcdctl'),
      [`--endpoints=${suite.endpoint}`, 'get', key, '--print-value-only'],
      { env: { ...process.env, ETCDCTL_API: '3' }, timeout: testTimeout(10000) },
    );
    assert.equal(stdout, `${value}\n`, 'etcdctl shows the Go value');
    await suite.client.put(`/${ns}/services/api/plain`).value('10.0.0.1:80');

    const [list, human] = await Promise.all([
      runCli(['endpoints', 'api', '--json', ...at(ns)]),
      runCli(['endpoints', 'api', ...at(ns)]),
    ]);
    assert.equal(list.code, 0, list.describe);
    assert.deepEqual(list.notJson, []);
    assertEnvelope(list.records, list.describe);
    assert.equal(list.records.length, 1);
    const [listed] = list.records;
    assert.equal(listed?.event, 'endpoints');
    assert.deepEqual(listed.endpoints, {
      '127.0.0.1:50051': { addr: '127.0.0.1:50051', metadata: { w: 1, zone: 'a<b' } },
    });
    assert.deepEqual(listed.skipped, { plain: 'not JSON' });
    assert.ok(Number(listed.revision) > 0);
    assert.equal(human.code, 0, human.describe);
    assert.ok(
      human.lines.some((l) => /^127\.0\.0\.1:50051\s+\{"w":1,"zone":"a<b"\}\s+\/.*:50051$/.test(l)),
      human.describe,
    );
    assert.ok(
      human.lines.some((l) => /skipped .*\/plain: not JSON/.test(l)),
      human.describe,
    );

    const watch = new CliProcess(['endpoints', 'api', '--watch', '--json', ...at(ns)]);
    await watch.waitRecord(
      (r) => r.event === 'endpoints' && Object.keys(r.endpoints as JsonRecord).length === 1,
      'watch lists it',
    );
    const seen = watch.records.length;
    reg.interrupt();
    assert.equal((await reg.exit(5000)).code, 0, reg.describe());
    assert.equal(await suite.client.get(key).string(), null, 'deleted at once');
    assert.deepEqual(untimed(reg.records.at(-1)), { event: 'deregistered', key });
    await watch.waitRecord(
      (r) => r.event === 'endpoints' && Object.keys(r.endpoints as JsonRecord).length === 0,
      'watch sees it go',
      10000,
      seen,
    );
    watch.interrupt();
    assert.equal((await watch.exit(5000)).code, 0, watch.describe());
    assertEnvelope(watch.records, watch.describe());
    assert.equal(watch.stderr, '');
  });

  void test('an unreachable endpoint: endpoints exits 1 with a typed error', async () => {
    const r = await runCli(['endpoints', 'api', '--endpoints', DEAD, ...FAST_FAIL]);
    assert.equal(r.code, 1, r.describe);
    assert.match(r.stderr, /^etcdc: \[ETCDC_[A-Z_]+\] /m, r.describe);
  });
});
