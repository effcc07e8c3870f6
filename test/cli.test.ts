/**
 * End-to-end tests of `etcdc`: the built CLI runs as child processes against a real single-member
 * etcd. `--json` output is parsed line by line (every line must be JSON); Ctrl-C is a real SIGINT,
 * and what it must release (keys, leases) is checked in etcd with a separate client.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { testTimeout, uniqueName } from '../src/testing/index.js';
import {
  assertEnvelope,
  assertJsonError,
  CliProcess,
  forEachLimited,
  killAll,
  runCli,
  untimed,
  type CliResult,
  type JsonRecord,
} from './fixtures/cli-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

/** Nothing hangs: a command that should end quickly gets this long (scaled). */
const QUICK_MS = 15000;
/** Ctrl-C must end a command this fast (scaled; generous for a loaded 2-core machine). */
const INTERRUPT_MS = 5000;
const DEAD = '127.0.0.1:1';
const FAST_FAIL = ['--command-timeout', '500', '--dial-timeout', '500'];
/** CLI processes started at once by a test that runs many (see forEachLimited). */
const CLI_AT_ONCE = 4;

/** Every stdout line is JSON, in the one envelope (`event`, `time`, ...). */
function assertAllJson(r: {
  notJson: string[];
  records: JsonRecord[];
  describe: string | (() => string);
}): void {
  const where = typeof r.describe === 'function' ? r.describe() : r.describe;
  assert.deepEqual(r.notJson, [], `every --json stdout line is JSON\n${where}`);
  assertEnvelope(r.records, where);
}

/** The one JSON error line on stderr in --json mode: its `error` field. */
function jsonError(r: CliResult): { message: string; code: string; problem?: string } {
  const lines = r.stderr
    .split('\n')
    .filter((l) => l.trim() !== '' && !/DEP0123|--trace-dep/.test(l));
  assert.equal(lines.length, 1, `one error line on stderr\n${r.describe}`);
  const parsed = JSON.parse(lines[0] ?? '') as JsonRecord;
  assertEnvelope([parsed], r.describe);
  assert.equal(parsed.event, 'error', r.describe);
  assertJsonError(parsed.error, r.describe);
  assert.match(String(parsed.error.code), /^ETCDC_[A-Z_]+$/, r.describe);
  return parsed.error as { message: string; code: string; problem?: string };
}

void describe('etcdc (CLI, end to end)', () => {
  const suite = etcdSuite();
  suite.defer(killAll);

  const at = (ns: string): string[] => ['--endpoints', suite.endpoint, '--namespace', ns];

  async function leaseOf(key: string): Promise<string> {
    const res = await suite.client.get(key).exec();
    const lease = res.kvs[0]?.lease;
    assert.ok(lease !== undefined && lease !== '0', `${key} has a lease`);
    return lease;
  }

  /** Revoked (or expired): etcd no longer knows the lease. */
  async function assertLeaseGone(id: string, what: string): Promise<void> {
    const ttl = await suite.client.leaseClient.leaseTimeToLive({ ID: id });
    assert.equal(Number(ttl.TTL), -1, `${what}: lease ${id} is gone`);
    const { leases } = await suite.client.leaseClient.leaseLeases();
    assert.ok(!leases.some((l) => l.ID === id), `${what}: lease ${id} not listed`);
  }

  void test('--help on every command exits 0 and names its arguments', async () => {
    const expect: Record<string, string[]> = {
      elect: ['<name>', '<identity>', '--ttl'],
      leader: ['<name>', '--watch'],
      register: ['<service>', '<instance>', '[value]', '--ttl', '--format'],
      services: ['<service>', '--watch'],
      endpoints: ['<service>', '--watch'],
      observe: ['<path>', '--rev', '--prefix'],
      health: ['--watch', '--interval'],
      demo: ['--ttl'],
    };
    // The shared flags, with their defaults and environment variables, in every command's help
    // (commander wraps lines: compared with whitespace folded).
    const shared = [
      '--endpoints <list>',
      'default: 127.0.0.1:2379',
      'env: ETCDC_ENDPOINTS',
      '--namespace <name>',
      'default: "etcdc", env: ETCDC_NAMESPACE',
      '--user <name[:password]>',
      'env: ETCDC_USER',
      '--password <password>',
      'env: ETCDC_PASSWORD',
      '--cacert <file>',
      'env: ETCDC_CACERT',
      '--cert <file>',
      'env: ETCDC_CERT',
      '--key <file>',
      'env: ETCDC_KEY',
      '--dial-timeout <ms> connection timeout in ms (default: 3000)',
      '--command-timeout <ms> deadline of each etcd call in ms (default: 5000)',
      '--json',
    ];
    const root = [...shared, ...Object.keys(expect)];
    const runs = [
      ['--help', root] as const,
      ...Object.entries(expect).map(([cmd, words]) => [cmd, [...words, ...shared]] as const),
    ];
    await forEachLimited(runs, CLI_AT_ONCE, async ([cmd, words]) => {
      const r = await runCli(cmd === '--help' ? ['--help'] : [cmd, '--help']);
      assert.equal(r.code, 0, r.describe);
      const text = r.lines.join('\n');
      const folded = text.replace(/\s+/g, ' ');
      if (cmd !== '--help') assert.match(text, new RegExp(`^Usage: etcdc ${cmd} `, 'm'));
      for (const w of words) assert.ok(folded.includes(w), `${cmd} --help mentions ${w}\n${text}`);
    });
  });

  void test('usage errors exit 2 before connecting', async () => {
    const cases: [string[], RegExp][] = [
      [['bogus'], /unknown command 'bogus'/],
      [['elect', 'job'], /missing required argument 'identity'/],
      [['register', 'svc', 'inst'], /missing required argument 'value'/],
      [['elect', 'job', 'me', '--ttl', '0'], /--ttl/],
      [['elect', 'job', 'me', '--ttl', 'abc'], /--ttl/],
      [['register', 'svc', 'inst', 'v', '--ttl', '1.5'], /--ttl/],
      [['health', '--interval', '-1'], /--interval/],
      [['observe', 'config', '--rev', '-3'], /--rev/],
      [['--command-timeout', '0', 'health'], /--command-timeout/],
      // Bad paths are the library's InvalidArgumentError, also a usage error (exit 2).
      [['observe', 'a/../b'], /\[ETCDC_INVALID_ARGUMENT\]/],
      [['elect', '/outside/ns', 'me'], /\[ETCDC_INVALID_ARGUMENT\]/],
      // An empty name would silently mean the group itself (the namespace root for observe).
      [['observe', ''], /path: must not be empty; .*observe \/etcdc --prefix/],
      [['observe', '', '--prefix', '--namespace', 'ns1'], /observe \/ns1 --prefix/],
      [['services', ''], /\[ETCDC_INVALID_ARGUMENT\] service: must not be empty/],
      [['register', '', 'inst', 'v'], /\[ETCDC_INVALID_ARGUMENT\] service: must not be empty/],
      [['elect', '', 'me'], /\[ETCDC_INVALID_ARGUMENT\] name: must not be empty/],
      [['leader', ''], /\[ETCDC_INVALID_ARGUMENT\] name: must not be empty/],
      // The library's instance check: one path segment, not empty.
      [['register', 'api', '', 'v'], /\[ETCDC_INVALID_ARGUMENT\] instance: must be a non-empty/],
      [['register', 'api', 'a/b', 'v'], /instance: must be one path segment .*: a\/b/],
      [['register', 'api', '..', 'v'], /instance: must be one path segment/],
      [['register', 'api', '.', 'v'], /instance: must be one path segment/],
      // Credentials: etcdctl's user:password, or --user and --password, not both.
      [['health', '--user', 'alice:pw', '--password', 'pw2'], /--user: alice:<password> .*either/],
      [['health', '--password', 'pw'], /--password: needs --user/],
      [['health', '--user', ':pw'], /--user: the user name is missing/],
    ];
    await forEachLimited(cases, CLI_AT_ONCE, async ([args, stderr]) => {
      // A dead endpoint: had parsing let the command through, it would exit 1, not 2.
      const r = await runCli([...args, '--endpoints', DEAD, ...FAST_FAIL]);
      assert.equal(r.code, 2, r.describe);
      assert.match(r.stderr, stderr, r.describe);
      assert.ok(!r.stderr.includes('pw2'), 'a password is never echoed');
      assert.deepEqual(r.lines, [], 'nothing on stdout');
    });
    // The same with the password from the environment: the error says where it came from.
    const env = { ETCDC_PASSWORD: 'pw2' };
    const r = await runCli(['health', '--user', 'alice:pw', '--endpoints', DEAD], { env });
    assert.equal(r.code, 2, r.describe);
    assert.match(r.stderr, /--password \(from ETCDC_PASSWORD\) gives another/, r.describe);
    // With --json, usage errors are JSON lines too (commander's own ones included).
    const jsonCases: [string[], RegExp][] = [
      [['register', 'api', 'a/b', 'v'], /instance: must be one path segment/],
      [['elect', 'job'], /^usage: missing required argument 'identity'$/],
      [['elect', 'job', 'me', '--ttl', '0'], /^usage: option '--ttl <seconds>' argument '0'/],
      [['bogus'], /^usage: unknown command 'bogus'$/],
    ];
    await Promise.all(
      jsonCases.map(async ([args, message]) => {
        const json = await runCli([...args, '--json', '--endpoints', DEAD, ...FAST_FAIL]);
        assert.equal(json.code, 2, json.describe);
        assert.deepEqual(json.lines, [], json.describe);
        const error = jsonError(json);
        assert.equal(error.code, 'ETCDC_INVALID_ARGUMENT', json.describe);
        assert.match(error.message, message, json.describe);
      }),
    );
  });

  void test('bad names against a live etcd: exit 2 and nothing written', async () => {
    const ns = uniqueName('cli-names');
    const cases = [
      ['register', 'api', '', 'v'],
      ['register', 'api', 'a/b', 'v'],
      ['register', '', 'inst', 'v'],
      ['elect', '', 'me'],
    ];
    await Promise.all(
      cases.map(async (args) => {
        // Had the check been missing, register/elect would hold the key until killed.
        const r = await runCli([...args, '--ttl', '1', ...at(ns)], {}, QUICK_MS);
        assert.equal(r.code, 2, r.describe);
        assert.match(r.stderr, /\[ETCDC_INVALID_ARGUMENT\]/, r.describe);
      }),
    );
    const { kvs } = await suite.client.getAll().prefix(`/${ns}`).exec();
    assert.deepEqual(
      kvs.map((kv) => kv.key.toString()),
      [],
      'no key written in the namespace',
    );
  });

  void test('an unreachable endpoint exits 1 with a typed error code on stderr', async () => {
    const bound = testTimeout(QUICK_MS);
    const t0 = performance.now();
    const human = ['elect job me --ttl 2', 'observe config --prefix', 'services svc --watch'];
    const json = ['leader job', 'services svc', 'register svc inst v --ttl 2', 'elect job me'];
    await Promise.all([
      ...human.map(async (cmd) => {
        const r = await runCli([...cmd.split(' '), '--endpoints', DEAD, ...FAST_FAIL]);
        assert.equal(r.code, 1, r.describe);
        assert.match(r.stderr, /^etcdc: \[ETCDC_[A-Z_]+\] /m, r.describe);
      }),
      ...json.map(async (cmd) => {
        const r = await runCli([...cmd.split(' '), '--json', '--endpoints', DEAD, ...FAST_FAIL]);
        assert.equal(r.code, 1, r.describe);
        assertAllJson(r);
        jsonError(r);
      }),
      (async () => {
        // --endpoints from the environment.
        const env = { ETCDC_ENDPOINTS: DEAD };
        const r = await runCli(['leader', 'job', '--json', ...FAST_FAIL], { env });
        assert.equal(r.code, 1, r.describe);
        assert.match(jsonError(r).message, /127\.0\.0\.1:1\b/);
      })(),
    ]);
    assert.ok(performance.now() - t0 < bound, 'every command failed fast');
  });

  void test('health: --json healthy (endpoint from ETCDC_ENDPOINTS); a dead member exits 1', async () => {
    const [ok, human, bad, badHuman] = await Promise.all([
      runCli(['health', '--json'], { env: { ETCDC_ENDPOINTS: suite.endpoint } }),
      runCli(['health', '--endpoints', suite.endpoint]),
      runCli(['health', '--json', '--endpoints', `${suite.endpoint},${DEAD}`]),
      runCli(['health', '--endpoints', `${suite.endpoint},${DEAD}`]),
    ]);
    assert.equal(ok.code, 0, ok.describe);
    assertAllJson(ok);
    assert.equal(ok.records.length, 1);
    const report = ok.records[0] as { event: string; status: string; members: JsonRecord[] };
    assert.equal(report.event, 'health');
    assert.equal(report.status, 'healthy');
    assert.equal(report.members.length, 1);
    assert.deepEqual(
      report.members.map((m) => [m.endpoint, m.healthy]),
      [[suite.endpoint, true]],
    );

    assert.equal(human.code, 0, human.describe);
    assert.match(human.lines.join('\n'), /cluster healthy/);
    assert.ok(human.lines.some((l) => l.startsWith(suite.endpoint)));

    assert.equal(bad.code, 1, bad.describe);
    assertAllJson(bad);
    const degraded = bad.records[0] as { status: string; members: JsonRecord[] };
    assert.notEqual(degraded.status, 'healthy');
    const byEndpoint = new Map(degraded.members.map((m) => [m.endpoint, m]));
    assert.equal(byEndpoint.get(suite.endpoint)?.healthy, true);
    assert.equal(byEndpoint.get(`http://${DEAD}`)?.healthy, false);
    const error = byEndpoint.get(`http://${DEAD}`)?.error;
    assertJsonError(error, bad.describe);
    assert.equal(error.code, 'ETCDC_UNAVAILABLE');
    assert.ok(!('problem' in error), 'a dead member is not a credentials problem');
    assert.match(String(error.message), /ECONNREFUSED 127\.0\.0\.1:1\b/);

    // The human table: the dead member's reason in full on a line under the table (once it was
    // cut at 60 characters, so "ECONNREFUSED" was never visible).
    assert.equal(badHuman.code, 1, badHuman.describe);
    const text = badHuman.lines.join('\n');
    assert.match(text, /cluster unhealthy/, badHuman.describe);
    assert.match(text, new RegExp(`^http://${DEAD}\\s+unhealthy\\s`, 'm'), badHuman.describe);
    const reason = String(error.message).replace(`status of http://${DEAD}: `, '').trim();
    assert.ok(
      badHuman.lines.includes(`http://${DEAD}: ${reason}`),
      `the full reason on its own line: ${reason}\n${badHuman.describe}`,
    );
    assert.ok(!badHuman.lines.some((l) => l.endsWith('...')), 'nothing is cut');
  });

  void test('health: a failed TLS handshake is a TLS problem, not an unhealthy cluster', async () => {
    // A TLS server whose self-signed certificate the client does not trust (no --cacert): the
    // handshake fails every time, the same way (https:// to etcd's plain port does not: etcd
    // sometimes just resets the connection).
    const dir = mkdtempSync(join(tmpdir(), 'etcdc-cli-tls-'));
    const sockets = new Set<Socket>();
    let server: TlsServer | undefined;
    try {
      const [key, cert] = [join(dir, 'key.pem'), join(dir, 'cert.pem')];
      // openssl makes the test's certificate (as the kit's makeTlsMaterial does): needed, not optional.
      execFileSync(
        'openssl',
        ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'].concat([
          '-nodes',
          '-subj',
          '/CN=localhost',
          '-days',
          '1',
          '-keyout',
          key,
          '-out',
          cert,
        ]),
        { stdio: 'ignore' },
      );
      const tlsServer = createTlsServer({ key: readFileSync(key), cert: readFileSync(cert) });
      server = tlsServer;
      tlsServer.on('connection', (socket: Socket) => {
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
      });
      tlsServer.on('tlsClientError', () => undefined);
      await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
      const { port } = tlsServer.address() as AddressInfo;
      const tls = `https://127.0.0.1:${port}`;

      const [human, json, other] = await Promise.all([
        runCli(['health', '--endpoints', tls]),
        runCli(['health', '--json', '--endpoints', tls]),
        runCli(['services', 'api', '--endpoints', tls, ...FAST_FAIL]),
      ]);
      assert.equal(human.code, 1, human.describe);
      const text = human.lines.join('\n');
      assert.match(text, /cluster health unknown: TLS failed: check the endpoint scheme/);
      assert.doesNotMatch(text, /unhealthy/, 'the cluster is not called unhealthy');
      assert.match(text, new RegExp(`^${tls}\\s+TLS failed\\s`, 'm'));
      assert.match(text, new RegExp(`^${tls}: .*self-signed certificate`, 'm'), 'reason in full');

      assert.equal(json.code, 1, json.describe);
      assertAllJson(json);
      const report = json.records[0] as { status: string; problem: string; members: JsonRecord[] };
      assert.equal(report.status, 'unknown');
      assert.equal(report.problem, 'tls');
      const error = report.members[0]?.error;
      assertJsonError(error, json.describe);
      assert.equal(error.problem, 'tls');

      // Any other command says what to check too.
      assert.equal(other.code, 1, other.describe);
      assert.match(other.stderr, /self-signed certificate/, other.describe);
      assert.match(other.stderr, /^etcdc: TLS failed: check the endpoint scheme/m, other.describe);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => {
        if (server === undefined) resolve();
        else
          server.close(() => {
            resolve();
          });
      });
      rmSync(dir, { recursive: true, force: true });
    }
  });

  void test('elect / leader: queue, follower, SIGINT resigns, takeover, leases revoked', async () => {
    const ns = uniqueName('cli-elect');
    const prefix = `/${ns}/elections/job/`;
    const elect = (id: string): CliProcess =>
      new CliProcess(['elect', 'job', id, '--json', '--ttl', '2', ...at(ns)]);
    const isStatus =
      (status: string, leader?: string) =>
      (r: JsonRecord): boolean =>
        r.event === 'status' &&
        r.status === status &&
        (leader === undefined || r.leader === leader);

    const a = elect('node-a');
    const aLead = await a.waitRecord(isStatus('leader'), 'node-a leads');
    assert.equal(aLead.identity, 'node-a');
    assert.match(String(aLead.token), /^[1-9]\d*$/, 'a fencing token');
    assert.ok(Number(aLead.revision) >= Number(aLead.token), 'the grant read at or after it');
    const aLease = await leaseOf(String(aLead.key));
    assert.equal(aLead.key, prefix + BigInt(aLease).toString(16), 'Go layout: prefix/lease hex');
    const b = elect('node-b');
    const c = elect('node-c');
    await b.waitRecord(isStatus('follower', 'node-a'), 'node-b follows node-a');
    await c.waitRecord(isStatus('follower', 'node-a'), 'node-c follows node-a');

    // `leader` once (JSON and human) and following (--watch).
    const [once, onceHuman] = await Promise.all([
      runCli(['leader', 'job', '--json', ...at(ns)]),
      runCli(['leader', 'job', ...at(ns)]),
    ]);
    assert.equal(once.code, 0, once.describe);
    assertAllJson(once);
    assert.deepEqual(once.records.map(untimed), [
      { event: 'leader', leader: 'node-a', key: aLead.key, token: aLead.token },
    ]);
    assert.equal(onceHuman.code, 0, onceHuman.describe);
    assert.match(onceHuman.lines.join('\n'), /leader node-a \(key /);
    const watch = new CliProcess(['leader', 'job', '--watch', '--json', ...at(ns)]);
    await watch.waitRecord((r) => r.leader === 'node-a', 'watch shows node-a');

    const keys = async (): Promise<string[]> =>
      (await suite.client.getAll().prefix(prefix).keys()).sort();
    assert.equal((await keys()).length, 3, 'three candidates queue');

    // Ctrl-C of a follower: it leaves the queue and revokes its lease at once.
    const values = await suite.client.getAll().prefix(prefix).strings();
    const cKey = Object.keys(values).find((key) => values[key] === 'node-c') ?? '';
    const cLease = await leaseOf(cKey);
    c.interrupt();
    assert.equal((await c.exit(INTERRUPT_MS)).code, 0, c.describe());
    assert.equal(await suite.client.get(cKey).string(), null, "node-c's key is deleted");
    await assertLeaseGone(cLease, 'follower after Ctrl-C');

    // Ctrl-C of the leader: prints `resigned`, exits 0 promptly; the next in line leads.
    const sent = performance.now();
    a.interrupt();
    const aExit = await a.exit(INTERRUPT_MS);
    assert.equal(aExit.code, 0, a.describe());
    assert.ok((a.exitedAt ?? Infinity) - sent < testTimeout(INTERRUPT_MS), 'prompt exit');
    assert.deepEqual(untimed(a.records.at(-1)), { event: 'resigned', identity: 'node-a' });
    assert.equal(await suite.client.get(aLead.key).string(), null, "node-a's key is deleted");
    await assertLeaseGone(aLease, 'leader after Ctrl-C');
    const bLead = await b.waitRecord(isStatus('leader'), 'node-b takes over');
    assert.ok(BigInt(String(bLead.token)) > BigInt(String(aLead.token)), 'tokens increase');
    assert.deepEqual(await keys(), [bLead.key], 'only node-b is left in the queue');
    await watch.waitRecord((r) => r.leader === 'node-b', 'watch follows the change');

    const bLease = await leaseOf(String(bLead.key));
    const seen = watch.records.length;
    b.interrupt();
    assert.equal((await b.exit(INTERRUPT_MS)).code, 0, b.describe());
    await assertLeaseGone(bLease, 'second leader after Ctrl-C');
    await watch.waitRecord(
      (r) => r.event === 'leader' && !('leader' in r),
      'no leader',
      10000,
      seen,
    );
    assert.deepEqual(await keys(), []);

    watch.interrupt();
    assert.equal((await watch.exit(INTERRUPT_MS)).code, 0, watch.describe());
    for (const p of [a, b, c, watch]) {
      assertAllJson({ notJson: p.notJson, records: p.records, describe: () => p.describe() });
      assert.equal(p.stderr, '', `no stderr from ${p.args.join(' ')}`);
    }
  });

  void test('register / services: listed, watched, deleted at once on SIGINT', async () => {
    const ns = uniqueName('cli-svc');
    const key = `/${ns}/services/api/inst-1`;
    // TTL 10 s: the key vanishing right after exit can only be the delete, not lease expiry.
    const reg = new CliProcess([
      'register',
      'api',
      'inst-1',
      '1.2.3.4:80',
      '--ttl',
      '10',
      '--json',
      ...at(ns),
    ]);
    const registered = await reg.waitRecord((r) => r.event === 'registered', 'registered');
    assert.deepEqual(untimed(registered), {
      event: 'registered',
      key,
      value: '1.2.3.4:80',
      ttl: 10,
    });
    assert.equal(await suite.client.get(key).string(), '1.2.3.4:80');

    const [list, human] = await Promise.all([
      runCli(['services', 'api', '--json', ...at(ns)]),
      runCli(['services', 'api', ...at(ns)]),
    ]);
    assert.equal(list.code, 0, list.describe);
    assertAllJson(list);
    assert.equal(list.records.length, 1);
    const [listed] = list.records;
    assert.equal(listed?.event, 'services');
    assert.deepEqual(listed.services, { 'inst-1': '1.2.3.4:80' });
    assert.ok(Number(listed.revision) > 0);
    assert.equal(human.code, 0, human.describe);
    assert.ok(
      human.lines.some((l) => /^inst-1\s+1\.2\.3\.4:80$/.test(l)),
      human.describe,
    );

    const watch = new CliProcess(['services', 'api', '--watch', '--json', ...at(ns)]);
    const has = (r: JsonRecord): boolean =>
      r.event === 'services' && (r.services as JsonRecord)['inst-1'] === '1.2.3.4:80';
    await watch.waitRecord(has, 'watch lists inst-1');
    const seen = watch.records.length;

    const lease = await leaseOf(key);
    reg.interrupt();
    assert.equal((await reg.exit(INTERRUPT_MS)).code, 0, reg.describe());
    // Right after exit: gone now, 10 s before the lease could have expired.
    assert.equal(await suite.client.get(key).string(), null, 'deleted at once');
    await assertLeaseGone(lease, 'registration after Ctrl-C');
    assert.deepEqual(untimed(reg.records.at(-1)), { event: 'deregistered', key });
    const empty = (r: JsonRecord): boolean =>
      r.event === 'services' && Object.keys(r.services as JsonRecord).length === 0;
    await watch.waitRecord(empty, 'watch sees inst-1 disappear', 10000, seen);

    watch.interrupt();
    assert.equal((await watch.exit(INTERRUPT_MS)).code, 0, watch.describe());
    for (const p of [reg, watch])
      assertAllJson({ notJson: p.notJson, records: p.records, describe: () => p.describe() });
  });

  void test('observe: put/delete events in order with revisions; --rev replays history', async () => {
    const ns = uniqueName('cli-obs');
    const k = (rel: string): string => `/${ns}/${rel}`;
    const live = new CliProcess(['observe', 'config', '--prefix', '--json', ...at(ns)]);
    // The observer starts "now", with no ready line: write a probe until it is seen.
    const probe = k('config/probe');
    for (let i = 0; ; i++) {
      await suite.client.put(probe).value(String(i));
      try {
        await live.waitRecord((r) => r.key === probe, 'probe seen', 200);
        break;
      } catch (err) {
        if (i >= 50 || !live.running) throw err;
      }
    }
    const from = live.records.length;
    const expected: JsonRecord[] = [];
    const put = async (rel: string, value: string): Promise<void> => {
      const res = await suite.client.put(k(rel)).value(value);
      expected.push({ event: 'put', key: k(rel), value, revision: Number(res.header.revision) });
    };
    const del = async (rel: string): Promise<void> => {
      const res = await suite.client.delete().key(k(rel));
      expected.push({
        event: 'delete',
        key: k(rel),
        value: '',
        revision: Number(res.header.revision),
      });
    };
    await put('config/a', '1');
    await put('config/b', '2');
    await suite.client.put(k('other/x')).value('not observed');
    await del('config/a');
    await put('config/b', '3');
    await put('config/deep/c', 'nested');

    const last = expected.at(-1)?.revision;
    await live.waitRecord((r) => r.revision === last, 'last write observed');
    const got = live.records
      .slice(from)
      .filter((r) => r.key !== probe)
      .map(untimed);
    assert.deepEqual(got, expected, 'every event once, in order, with its revision');

    const first = Number(expected[0]?.revision);
    const replay = new CliProcess([
      'observe',
      'config',
      '--prefix',
      '--json',
      '--rev',
      String(first),
      ...at(ns),
    ]);
    const single = new CliProcess([
      'observe',
      'config/b',
      '--json',
      '--rev',
      String(first),
      ...at(ns),
    ]);
    await replay.waitRecord((r) => r.revision === last, 'replay reaches the last write');
    assert.deepEqual(replay.records.map(untimed), expected, '--rev replays the same history');
    const onlyB = expected.filter((e) => e.key === k('config/b'));
    await single.waitRecord((r) => r.revision === onlyB.at(-1)?.revision, 'single key replay');
    assert.deepEqual(single.records.map(untimed), onlyB, 'without --prefix: that key only');

    for (const p of [live, replay, single]) {
      p.interrupt();
      assert.equal((await p.exit(INTERRUPT_MS)).code, 0, p.describe());
      assertAllJson({ notJson: p.notJson, records: p.records, describe: () => p.describe() });
    }
  });

  void test('observe --json: a resync line has one event field and the snapshot', async () => {
    const ns = uniqueName('cli-resync');
    const k = (rel: string): string => `/${ns}/${rel}`;
    const first = await suite.client.put(k('config/a')).value('1');
    await suite.client.put(k('config/b')).value('2');
    await suite.client.delete().key(k('config/a'));
    const last = await suite.client.put(k('config/b')).value('3');
    const compactAt = last.header.revision;
    await suite.client.kv.compact({ revision: compactAt, physical: true });
    // Replaying from before the compaction: the history is gone, so a resync comes first.
    const obs = new CliProcess([
      'observe',
      'config',
      '--prefix',
      '--json',
      '--rev',
      first.header.revision,
      ...at(ns),
    ]);
    const resync = await obs.waitRecord((r) => r.event === 'resync', 'the resync line');
    await suite.client.put(k('config/c')).value('4');
    await obs.waitRecord((r) => r.key === k('config/c'), 'the change after the resync');
    obs.interrupt();
    assert.equal((await obs.exit(INTERRUPT_MS)).code, 0, obs.describe());
    assertAllJson({ notJson: obs.notJson, records: obs.records, describe: () => obs.describe() });
    assert.deepEqual(untimed(resync), {
      event: 'resync',
      reason: 'compacted',
      compactRevision: Number(compactAt),
      revision: Number(compactAt),
      snapshot: { [k('config/b')]: '3' },
    });
    assert.deepEqual(
      obs.records.map((r) => r.event),
      ['resync', 'put'],
    );
  });
});
