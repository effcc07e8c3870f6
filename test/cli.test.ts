/**
 * End-to-end tests of `etcdc`: the built CLI runs as child processes against a real single-member
 * etcd. `--json` output is parsed line by line (every line must be JSON); Ctrl-C is a real SIGINT,
 * and what it must release (keys, leases) is checked in etcd with a separate client.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { startEtcd, testTimeout, uniqueName, type EtcdCluster } from '../src/testing/index.js';
import {
  CliProcess,
  killAll,
  runCli,
  type CliResult,
  type JsonRecord,
} from './fixtures/cli-harness.js';

/** Nothing hangs: a command that should end quickly gets this long (scaled). */
const QUICK_MS = 15000;
/** Ctrl-C must end a command this fast (scaled; generous for a loaded 2-core machine). */
const INTERRUPT_MS = 5000;
const DEAD = '127.0.0.1:1';
const FAST_FAIL = ['--command-timeout', '500', '--dial-timeout', '500'];

function assertAllJson(r: { notJson: string[]; describe?: string | (() => string) }): void {
  const where = typeof r.describe === 'function' ? r.describe() : (r.describe ?? '');
  assert.deepEqual(r.notJson, [], `every --json stdout line is JSON\n${where}`);
}

/** The one JSON error line on stderr in --json mode. */
function jsonError(r: CliResult): { error: string; code: string } {
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  assert.equal(lines.length, 1, `one error line on stderr\n${r.describe}`);
  const parsed = JSON.parse(lines[0] ?? '') as { error: unknown; code: unknown };
  assert.equal(typeof parsed.error, 'string');
  assert.match(String(parsed.code), /^ETCDC_[A-Z_]+$/, r.describe);
  return parsed as { error: string; code: string };
}

void describe('etcdc (CLI, end to end)', () => {
  let cluster: EtcdCluster;
  let client: Etcd3;
  let endpoint: string;

  before(async () => {
    cluster = await startEtcd();
    endpoint = cluster.endpoints[0] ?? '';
    client = new Etcd3({ hosts: [...cluster.endpoints] });
  });

  after(async () => {
    await killAll();
    // Both unset when before() failed.
    (client as Etcd3 | undefined)?.close();
    await (cluster as EtcdCluster | undefined)?.stop();
  });

  const at = (ns: string): string[] => ['--endpoints', endpoint, '--namespace', ns];

  async function leaseOf(key: string): Promise<string> {
    const res = await client.get(key).exec();
    const lease = res.kvs[0]?.lease;
    assert.ok(lease !== undefined && lease !== '0', `${key} has a lease`);
    return lease;
  }

  /** Revoked (or expired): etcd no longer knows the lease. */
  async function assertLeaseGone(id: string, what: string): Promise<void> {
    const ttl = await client.leaseClient.leaseTimeToLive({ ID: id });
    assert.equal(Number(ttl.TTL), -1, `${what}: lease ${id} is gone`);
    const { leases } = await client.leaseClient.leaseLeases();
    assert.ok(!leases.some((l) => l.ID === id), `${what}: lease ${id} not listed`);
  }

  void test('--help on every command exits 0 and names its arguments', async () => {
    const expect: Record<string, string[]> = {
      elect: ['<name>', '<identity>', '--ttl'],
      leader: ['<name>', '--watch'],
      register: ['<service>', '<instance>', '<value>', '--ttl'],
      services: ['<service>', '--watch'],
      observe: ['<path>', '--rev', '--prefix'],
      health: ['--watch', '--interval'],
      demo: ['--ttl'],
    };
    const root = ['--endpoints', '--namespace', '--json', ...Object.keys(expect)];
    const runs = [
      ['--help', root] as const,
      ...Object.entries(expect).map(([cmd, words]) => [cmd, words] as const),
    ].map(async ([cmd, words]) => {
      const r = await runCli(cmd === '--help' ? ['--help'] : [cmd, '--help']);
      assert.equal(r.code, 0, r.describe);
      const text = r.lines.join('\n');
      if (cmd !== '--help') assert.match(text, new RegExp(`^Usage: etcdc ${cmd} `, 'm'));
      for (const w of words) assert.ok(text.includes(w), `${cmd} --help mentions ${w}\n${text}`);
    });
    await Promise.all(runs);
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
    ];
    await Promise.all(
      cases.map(async ([args, stderr]) => {
        // A dead endpoint: had parsing let the command through, it would exit 1, not 2.
        const r = await runCli([...args, '--endpoints', DEAD, ...FAST_FAIL]);
        assert.equal(r.code, 2, r.describe);
        assert.match(r.stderr, stderr, r.describe);
        assert.deepEqual(r.lines, [], 'nothing on stdout');
      }),
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
        assert.match(jsonError(r).error, /127\.0\.0\.1:1\b/);
      })(),
    ]);
    assert.ok(performance.now() - t0 < bound, 'every command failed fast');
  });

  void test('health: --json healthy (endpoint from ETCDC_ENDPOINTS); a dead member exits 1', async () => {
    const [ok, human, bad] = await Promise.all([
      runCli(['health', '--json'], { env: { ETCDC_ENDPOINTS: endpoint } }),
      runCli(['health', '--endpoints', endpoint]),
      runCli(['health', '--json', '--endpoints', `${endpoint},${DEAD}`]),
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
      [[endpoint, true]],
    );

    assert.equal(human.code, 0, human.describe);
    assert.match(human.lines.join('\n'), /cluster healthy/);
    assert.ok(human.lines.some((l) => l.startsWith(endpoint)));

    assert.equal(bad.code, 1, bad.describe);
    assertAllJson(bad);
    const degraded = bad.records[0] as { status: string; members: JsonRecord[] };
    assert.notEqual(degraded.status, 'healthy');
    const byEndpoint = new Map(degraded.members.map((m) => [m.endpoint, m]));
    assert.equal(byEndpoint.get(endpoint)?.healthy, true);
    assert.equal(byEndpoint.get(`http://${DEAD}`)?.healthy, false);
    assert.equal(typeof byEndpoint.get(`http://${DEAD}`)?.error, 'string');
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
    assert.deepEqual(once.records, [
      { event: 'leader', leader: 'node-a', key: aLead.key, token: aLead.token },
    ]);
    assert.equal(onceHuman.code, 0, onceHuman.describe);
    assert.match(onceHuman.lines.join('\n'), /leader node-a \(key /);
    const watch = new CliProcess(['leader', 'job', '--watch', '--json', ...at(ns)]);
    await watch.waitRecord((r) => r.leader === 'node-a', 'watch shows node-a');

    const keys = async (): Promise<string[]> =>
      (await client.getAll().prefix(prefix).keys()).sort();
    assert.equal((await keys()).length, 3, 'three candidates queue');

    // Ctrl-C of a follower: it leaves the queue and revokes its lease at once.
    const values = await client.getAll().prefix(prefix).strings();
    const cKey = Object.keys(values).find((key) => values[key] === 'node-c') ?? '';
    const cLease = await leaseOf(cKey);
    c.interrupt();
    assert.equal((await c.exit(INTERRUPT_MS)).code, 0, c.describe());
    assert.equal(await client.get(cKey).string(), null, "node-c's key is deleted");
    await assertLeaseGone(cLease, 'follower after Ctrl-C');

    // Ctrl-C of the leader: prints `resigned`, exits 0 promptly; the next in line leads.
    const sent = performance.now();
    a.interrupt();
    const aExit = await a.exit(INTERRUPT_MS);
    assert.equal(aExit.code, 0, a.describe());
    assert.ok((a.exitedAt ?? Infinity) - sent < testTimeout(INTERRUPT_MS), 'prompt exit');
    assert.deepEqual(a.records.at(-1), { event: 'resigned', identity: 'node-a' });
    assert.equal(await client.get(aLead.key).string(), null, "node-a's key is deleted");
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
      assertAllJson({ notJson: p.notJson, describe: () => p.describe() });
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
    assert.deepEqual(registered, { event: 'registered', key, value: '1.2.3.4:80', ttl: 10 });
    assert.equal(await client.get(key).string(), '1.2.3.4:80');

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
    assert.equal(await client.get(key).string(), null, 'deleted at once');
    await assertLeaseGone(lease, 'registration after Ctrl-C');
    assert.deepEqual(reg.records.at(-1), { event: 'deregistered', key });
    const empty = (r: JsonRecord): boolean =>
      r.event === 'services' && Object.keys(r.services as JsonRecord).length === 0;
    await watch.waitRecord(empty, 'watch sees inst-1 disappear', 10000, seen);

    watch.interrupt();
    assert.equal((await watch.exit(INTERRUPT_MS)).code, 0, watch.describe());
    for (const p of [reg, watch])
      assertAllJson({ notJson: p.notJson, describe: () => p.describe() });
  });

  void test('observe: put/delete events in order with revisions; --rev replays history', async () => {
    const ns = uniqueName('cli-obs');
    const k = (rel: string): string => `/${ns}/${rel}`;
    const live = new CliProcess(['observe', 'config', '--prefix', '--json', ...at(ns)]);
    // The observer starts "now", with no ready line: write a probe until it is seen.
    const probe = k('config/probe');
    for (let i = 0; ; i++) {
      await client.put(probe).value(String(i));
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
      const res = await client.put(k(rel)).value(value);
      expected.push({ event: 'put', key: k(rel), value, revision: Number(res.header.revision) });
    };
    const del = async (rel: string): Promise<void> => {
      const res = await client.delete().key(k(rel));
      expected.push({
        event: 'delete',
        key: k(rel),
        value: '',
        revision: Number(res.header.revision),
      });
    };
    await put('config/a', '1');
    await put('config/b', '2');
    await client.put(k('other/x')).value('not observed');
    await del('config/a');
    await put('config/b', '3');
    await put('config/deep/c', 'nested');

    const last = expected.at(-1)?.revision;
    await live.waitRecord((r) => r.revision === last, 'last write observed');
    const got = live.records.slice(from).filter((r) => r.key !== probe);
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
    assert.deepEqual(replay.records, expected, '--rev replays the same history');
    const onlyB = expected.filter((e) => e.key === k('config/b'));
    await single.waitRecord((r) => r.revision === onlyB.at(-1)?.revision, 'single key replay');
    assert.deepEqual(single.records, onlyB, 'without --prefix: that key only');

    for (const p of [live, replay, single]) {
      p.interrupt();
      assert.equal((await p.exit(INTERRUPT_MS)).code, 0, p.describe());
      assertAllJson({ notJson: p.notJson, describe: () => p.describe() });
    }
  });
});
