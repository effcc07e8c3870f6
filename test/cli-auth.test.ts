/**
 * `etcdc` against an etcd with authentication on (one etcd of its own: auth is cluster-wide):
 * etcdctl's `--user name:password`, `--user` with `--password`, ETCDC_USER, and what a wrong
 * password looks like — above all in `health`, where it must not read as an unhealthy cluster.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Etcd3, Range } from 'etcd3';
import { startEtcd, uniqueName, type EtcdCluster } from '../src/testing/index.js';
import {
  assertEnvelope,
  assertJsonError,
  CliProcess,
  killAll,
  runCli,
  untimed,
  type CliResult,
  type JsonRecord,
} from './fixtures/cli-harness.js';

const NS = 'cliauth';
/** Split at the first ':' only, as etcdctl does: the password may contain colons. */
const PASSWORD = 'pw:with:colons';
const INTERRUPT_MS = 5000;

function json(r: CliResult): JsonRecord[] {
  assert.deepEqual(r.notJson, [], r.describe);
  assertEnvelope(r.records, r.describe);
  return r.records;
}

/** The `error` of the one JSON line on stderr. */
function stderrError(r: CliResult): JsonRecord {
  const [line, ...more] = r.stderr.split('\n').filter((l) => l.trim() !== '');
  assert.deepEqual(more, [], `one line on stderr\n${r.describe}`);
  const parsed = JSON.parse(line ?? '') as JsonRecord;
  assertEnvelope([parsed], r.describe);
  assertJsonError(parsed.error, r.describe);
  return parsed.error;
}

void describe('etcdc with etcd authentication', () => {
  let etcd: EtcdCluster;
  let endpoint: string;

  before(async () => {
    etcd = await startEtcd();
    endpoint = etcd.endpoints[0] ?? '';
    const admin = new Etcd3({ hosts: etcd.endpoints });
    try {
      await admin.role('root').create();
      await (await admin.user('root').create('rootpw')).addRole('root');
      // alice may use the namespace and nothing else.
      const app = await admin.role('app').create();
      await app.grant({ permission: 'Readwrite', range: Range.prefix(`/${NS}/`) });
      await (await admin.user('alice').create(PASSWORD)).addRole('app');
      await admin.auth.authEnable();
    } finally {
      admin.close();
    }
  });

  after(async () => {
    await killAll();
    await (etcd as EtcdCluster | undefined)?.stop();
  });

  const at = (): string[] => ['--endpoints', endpoint, '--namespace', NS];

  void test('user:password, --user with --password and ETCDC_USER all authenticate', async () => {
    const service = uniqueName('api');
    const reg = new CliProcess([
      'register',
      service,
      'inst-1',
      '10.0.0.1:80',
      '--json',
      '--user',
      `alice:${PASSWORD}`,
      ...at(),
    ]);
    try {
      const registered = await reg.waitRecord((r) => r.event === 'registered', 'registered');
      assert.deepEqual(untimed(registered), {
        event: 'registered',
        key: `/${NS}/services/${service}/inst-1`,
        value: '10.0.0.1:80',
        ttl: 10,
      });
      const list = ['services', service, '--json', ...at()];
      const runs = await Promise.all([
        runCli([...list, '--user', `alice:${PASSWORD}`]),
        runCli([...list, '--user', 'alice', '--password', PASSWORD]),
        runCli(list, { env: { ETCDC_USER: `alice:${PASSWORD}` } }),
        runCli(list, { env: { ETCDC_USER: 'alice', ETCDC_PASSWORD: PASSWORD } }),
      ]);
      for (const r of runs) {
        assert.equal(r.code, 0, r.describe);
        const [services, ...more] = json(r);
        assert.deepEqual(more, [], r.describe);
        assert.equal(services?.event, 'services', r.describe);
        assert.deepEqual(services.services, { 'inst-1': '10.0.0.1:80' }, r.describe);
      }
      const [leader, health] = await Promise.all([
        runCli(['leader', 'job', '--json', '--user', `alice:${PASSWORD}`, ...at()]),
        runCli(['health', '--json', '--user', `alice:${PASSWORD}`, ...at()]),
      ]);
      assert.equal(leader.code, 0, leader.describe);
      assert.deepEqual(json(leader).map(untimed), [{ event: 'leader' }]);
      assert.equal(health.code, 0, health.describe);
      assert.equal(json(health)[0]?.status, 'healthy', health.describe);
    } finally {
      reg.interrupt();
      assert.equal((await reg.exit(INTERRUPT_MS)).code, 0, reg.describe());
    }
    assert.deepEqual(untimed(reg.records.at(-1)), {
      event: 'deregistered',
      key: `/${NS}/services/${service}/inst-1`,
    });
    assert.equal(reg.stderr, '', reg.describe());
  });

  void test('a wrong password or none: exit 1, an authentication problem', async () => {
    const [wrong, wrongJson, none] = await Promise.all([
      runCli(['services', 'api', '--user', 'alice:wrong', ...at()]),
      runCli(['services', 'api', '--json', '--user', 'alice', '--password', 'wrong', ...at()]),
      runCli(['services', 'api', ...at()]),
    ]);
    assert.equal(wrong.code, 1, wrong.describe);
    assert.match(wrong.stderr, /invalid user ID or password/, wrong.describe);
    assert.match(wrong.stderr, /^etcdc: authentication failed: check --user\/--password/m);
    assert.ok(!wrong.stderr.includes(PASSWORD));

    assert.equal(wrongJson.code, 1, wrongJson.describe);
    assert.deepEqual(wrongJson.lines, []);
    const error = stderrError(wrongJson);
    assert.equal(error.problem, 'authentication', wrongJson.describe);
    assert.equal(error.code, 'ETCDC_AUTH_FAILED');

    // etcd needs a user, none was given: the same advice.
    assert.equal(none.code, 1, none.describe);
    assert.match(none.stderr, /user name is empty/, none.describe);
    assert.match(none.stderr, /^etcdc: authentication failed: check --user\/--password/m);
  });

  void test('health with a wrong password: "health unknown: authentication failed", not unhealthy', async () => {
    const [human, jsonRun] = await Promise.all([
      runCli(['health', '--user', 'alice:wrong', ...at()]),
      runCli(['health', '--json', '--user', 'alice:wrong', ...at()]),
    ]);
    assert.equal(human.code, 1, human.describe);
    const text = human.lines.join('\n');
    assert.match(
      text,
      /cluster health unknown: authentication failed: check --user\/--password .*not a cluster fault/,
    );
    assert.doesNotMatch(text, /unhealthy/, 'the cluster is not called unhealthy');
    assert.match(text, new RegExp(`^${endpoint}\\s+auth failed\\s`, 'm'), human.describe);
    // The reason in full, on its own line under the table.
    assert.ok(
      human.lines.some(
        (l) =>
          l.startsWith(`${endpoint}: `) &&
          l.endsWith('etcdserver: authentication failed, invalid user ID or password'),
      ),
      human.describe,
    );

    assert.equal(jsonRun.code, 1, jsonRun.describe);
    const [report, ...more] = json(jsonRun);
    assert.deepEqual(more, []);
    assert.equal(report?.event, 'health');
    assert.equal(report.status, 'unknown');
    assert.equal(report.problem, 'authentication');
    const [member] = report.members as JsonRecord[];
    assert.equal(member?.healthy, false);
    assertJsonError(member.error, jsonRun.describe);
    assert.equal(member.error.problem, 'authentication');
  });
});
