/**
 * `etcdc inspect` and the inspector behind it, against a real etcd with real peers: `etcdctl elect`
 * and `etcdctl lock` (Go's Election and Mutex), `etcdc elect` and `etcdc register` processes, and
 * the Go peer running etcd's own RWMutex, barriers, queues and naming endpoints. What the command
 * says is checked against what etcd holds, read with a separate client.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EtcdConnector, LEStatus } from '../src/index.js';
import type { InspectorState, RecipeView } from '../src/index.js';
import { findEtcdBinary, testTimeout, uniqueName, waitFor } from '../src/testing/index.js';
import {
  assertEnvelope,
  CliProcess,
  killAll,
  runCli,
  type JsonRecord,
} from './fixtures/cli-harness.js';
import { grpcCalls } from './fixtures/etcd-metrics.js';
import { startGoPeer } from './fixtures/go-peer.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

interface EntryRecord {
  role: string;
  name: string;
  key: string;
  value: string;
  lease?: string;
  ttl?: number;
  createRevision: number;
  createdAt?: string;
}

interface RecipeRecord extends JsonRecord {
  kind: string;
  path: string;
  summary: string;
  entries: EntryRecord[];
}

void describe('etcdc inspect', () => {
  const suite = etcdSuite();
  suite.defer(killAll);
  const etcdctlBin = findEtcdBinary('etcdctl');

  const at = (ns: string): string[] => ['--endpoints', suite.endpoint, '--namespace', ns];

  /** A long-running `etcdctl` (elect, lock): a real Go peer of the CLI kind. */
  function etcdctl(...args: string[]): CliProcess {
    return new CliProcess([`--endpoints=${suite.endpoint}`, ...args], {
      command: etcdctlBin,
      env: { ETCDCTL_API: '3' },
    });
  }

  /** The keys under `prefix` in create order, once there are `n` of them. */
  async function keysUnder(prefix: string, n: number) {
    return waitFor(
      async () => {
        const res = await suite.client.getAll().prefix(prefix).sort('Create', 'Ascend').exec();
        return res.kvs.length === n ? res.kvs : undefined;
      },
      { timeoutMs: testTimeout(10000), message: `${n} keys under ${prefix}` },
    );
  }

  /** `etcdc inspect <path> --json`: the recipe lines, checked for the envelope. */
  async function inspectJson(ns: string, path: string[] = []): Promise<RecipeRecord[]> {
    const r = await runCli(['inspect', ...path, ...at(ns), '--json']);
    assert.equal(r.code, 0, r.describe);
    assert.deepEqual(r.notJson, [], r.describe);
    assertEnvelope(r.records, r.describe);
    const last = r.records.at(-1);
    assert.equal(last?.event, 'inspected', r.describe);
    const recipes = r.records.filter((x) => x.event === 'recipe') as RecipeRecord[];
    assert.equal(last.recipes, recipes.length, r.describe);
    return recipes;
  }

  function one(recipes: RecipeRecord[], kind: string, path: string): RecipeRecord {
    const found = recipes.find((r) => r.kind === kind && r.path === path);
    assert.ok(found !== undefined, `${kind} ${path} in ${JSON.stringify(recipes, null, 1)}`);
    return found;
  }

  const roles = (r: { entries: readonly { role: string; name: string }[] }): string[] =>
    r.entries.map((e) => `${e.role} ${e.name}`);

  const hex = (lease: string): string => BigInt(lease).toString(16);

  void test('an election of etcdctl elect and etcdc elect processes: leader and candidates in order, with leases and TTLs', async () => {
    const ns = uniqueName('insp');
    const path = `/${ns}/elections/mixed`;
    etcdctl('elect', path, 'ctl-first');
    await keysUnder(`${path}/`, 1);
    new CliProcess(['elect', 'mixed', 'node-second', '--ttl', '5', ...at(ns), '--json']);
    await keysUnder(`${path}/`, 2);
    etcdctl('elect', path, 'ctl-third');
    const kvs = await keysUnder(`${path}/`, 3);

    const recipes = await inspectJson(ns, ['elections/mixed']);
    assert.equal(recipes.length, 1);
    const election = one(recipes, 'election', path);
    assert.deepEqual(roles(election), [
      'leader ctl-first',
      'candidate node-second',
      'candidate ctl-third',
    ]);
    // Same keys, leases and create revisions as etcd says, in etcd's create order.
    assert.deepEqual(
      election.entries.map((e) => [e.key, e.lease, e.createRevision]),
      kvs.map((kv) => [kv.key.toString(), hex(kv.lease), Number(kv.create_revision)]),
    );
    // TTLs left: etcdctl's sessions have 60 s, ours 5 s.
    const ttls = election.entries.map((e) => e.ttl ?? -2);
    assert.ok(ttls[0] !== undefined && ttls[0] > 5 && ttls[0] <= 60, `ttl ${ttls[0]}`);
    assert.ok(ttls[1] !== undefined && ttls[1] >= 0 && ttls[1] <= 5, `ttl ${ttls[1]}`);

    // The human table says the same.
    const human = await runCli(['inspect', 'elections/mixed', ...at(ns)]);
    assert.equal(human.code, 0, human.describe);
    const text = human.lines.join('\n');
    assert.match(text, /election \/\S+\/elections\/mixed: leader ctl-first, 2 other candidates/);
    assert.match(text, /^\s+leader\s+ctl-first\s+[0-9a-f]+\s+\d+s/m);
    assert.match(text, /^\s+candidate\s+node-second\s+[0-9a-f]+\s+\d+s/m);
  });

  void test('a lock of etcdctl lock processes: holder, then waiters in order; the next holds after a crash', async () => {
    const ns = uniqueName('insp');
    const path = `/${ns}/locks/billing`;
    const holder = etcdctl('lock', path, '--ttl', '2');
    await holder.waitLine(new RegExp(`^${path}/`), 'etcdctl lock holds');
    etcdctl('lock', path, '--ttl', '2');
    await keysUnder(`${path}/`, 2);
    etcdctl('lock', path, '--ttl', '2');
    const kvs = await keysUnder(`${path}/`, 3);
    const leases = kvs.map((kv) => hex(kv.lease));

    let lock = one(await inspectJson(ns, ['locks']), 'lock', path);
    assert.deepEqual(roles(lock), [
      `holder ${leases[0] ?? ''}`,
      `waiter ${leases[1] ?? ''}`,
      `waiter ${leases[2] ?? ''}`,
    ]);
    assert.match(lock.summary, new RegExp(`held by lease ${leases[0] ?? ''}, 2 waiters`));

    // The holder crashes: once its lease expires, the first waiter holds.
    await holder.kill();
    await keysUnder(`${path}/`, 2);
    lock = one(await inspectJson(ns, [path]), 'lock', path);
    assert.deepEqual(roles(lock), [`holder ${leases[1] ?? ''}`, `waiter ${leases[2] ?? ''}`]);
  });

  void test("etcd's own Go recipes (RWMutex, barriers, queues, endpoints) and our registrations", async () => {
    const ns = uniqueName('insp');
    const root = `/${ns}`;
    // No Go peer is a failure here as in every interop test (npm test builds it), never a skip.
    const a = await startGoPeer({ endpoints: suite.etcd.endpoints, ttl: 10, name: 'go-a' });
    suite.defer(() => a.close());
    const b = await startGoPeer({ endpoints: suite.etcd.endpoints, ttl: 10, name: 'go-b' });
    suite.defer(() => b.close());
    // RWMutex: A reads; B waits to write; A reads again (behind the writer).
    await a.ok({ cmd: 'rwmutex.rlock', path: `${root}/rw` });
    b.begin({ cmd: 'rwmutex.lock', path: `${root}/rw` });
    await keysUnder(`${root}/rw/`, 2);
    // Barrier and double barrier (count 3: both wait).
    await a.ok({ cmd: 'barrier.hold', path: `${root}/gate` });
    a.begin({ cmd: 'doublebarrier.enter', path: `${root}/dbar`, count: 3 });
    b.begin({ cmd: 'doublebarrier.enter', path: `${root}/dbar`, count: 3 });
    await keysUnder(`${root}/dbar/waiters/`, 2);
    // Queues.
    await a.ok({ cmd: 'queue.enqueue', path: `${root}/jobs`, value: 'job-1' });
    await b.ok({ cmd: 'queue.enqueue', path: `${root}/jobs`, value: 'job-2' });
    await a.ok({ cmd: 'pqueue.enqueue', path: `${root}/pq`, value: 'normal', priority: 100 });
    await a.ok({ cmd: 'pqueue.enqueue', path: `${root}/pq`, value: 'urgent', priority: 1 });
    // Go naming endpoints, one leased.
    await a.ok({
      cmd: 'endpoints.add',
      path: `${root}/grpc`,
      addr: '10.0.0.5:9000',
      metadata: { weight: 3 },
    });
    await b.ok({
      cmd: 'endpoints.add',
      path: `${root}/grpc`,
      addr: '10.0.0.6:9000',
      withLease: true,
    });
    // Our registrations, and a plain configuration key.
    const conn = new EtcdConnector([suite.endpoint], ns);
    try {
      const regs = ['api-1', 'api-2'].map((name, i) =>
        conn.newRegistration(`${root}/services/api`, name).register(`10.0.1.${i}:80`, 10),
      );
      await Promise.all(regs);
      await suite.client.put(`${root}/config/limit`).value('100');

      const recipes = await inspectJson(ns);
      assert.deepEqual(
        recipes.map((r) => `${r.kind} ${r.path}`),
        [
          `unknown ${root}/config`,
          `double-barrier ${root}/dbar`,
          `barrier ${root}/gate`,
          `endpoints ${root}/grpc`,
          `queue ${root}/jobs`,
          `priority-queue ${root}/pq`,
          `rwmutex ${root}/rw`,
          `services ${root}/services/api`,
        ],
      );
      assert.deepEqual(roles(one(recipes, 'rwmutex', `${root}/rw`)), [
        `reader ${a.lease}`,
        `waiting-writer ${b.lease}`,
      ]);
      const dbar = one(recipes, 'double-barrier', `${root}/dbar`);
      assert.deepEqual(
        dbar.entries.map((e) => e.role),
        ['waiter', 'waiter'],
      );
      // The waiter keys hold the Go process's clock: an exact creation time.
      for (const e of dbar.entries) {
        assert.ok(e.createdAt !== undefined, JSON.stringify(e));
        assert.ok(Math.abs(Date.parse(e.createdAt) - Date.now()) < 60_000, e.createdAt);
      }
      assert.deepEqual(roles(one(recipes, 'queue', `${root}/jobs`)), ['item job-1', 'item job-2']);
      assert.deepEqual(roles(one(recipes, 'priority-queue', `${root}/pq`)), [
        'item 1/0: urgent',
        'item 100/0: normal',
      ]);
      const grpc = one(recipes, 'endpoints', `${root}/grpc`);
      assert.deepEqual(roles(grpc), ['endpoint 10.0.0.5:9000', 'endpoint 10.0.0.6:9000']);
      assert.equal(grpc.entries[1]?.lease, b.lease);
      assert.deepEqual(
        one(recipes, 'services', `${root}/services/api`).entries.map((e) => [e.name, e.value]),
        [
          ['api-1', '10.0.1.0:80'],
          ['api-2', '10.0.1.1:80'],
        ],
      );

      // The writer holds once the reader leaves.
      await a.ok({ cmd: 'rwmutex.runlock', path: `${root}/rw` });
      await keysUnder(`${root}/rw/`, 1);
      assert.deepEqual(roles(one(await inspectJson(ns, ['rw']), 'rwmutex', `${root}/rw`)), [
        `writer ${b.lease}`,
      ]);
    } finally {
      await conn.close();
    }
  });

  void test('the inspector follows changes live: a new candidate seen as it came, its TTL asked at once, a new leader', async () => {
    const ns = uniqueName('insp');
    const conn = new EtcdConnector([suite.endpoint], ns);
    const other = new EtcdConnector([suite.endpoint], ns);
    try {
      const path = conn.constructPath('elections', 'live');
      const states: InspectorState[] = [];
      // A long lease round: a TTL that shows up must come from the batch for new leases.
      const inspector = conn.newInspector(conn.root, { leaseRefreshMs: 60_000 });
      const stream = inspector.start();
      const reading = (async () => {
        for await (const s of stream) states.push(s);
      })();
      const election = (s: InspectorState | undefined): RecipeView | undefined =>
        s?.recipes.find((r) => r.kind === 'election' && r.path === path);
      /** The first state from index `from` on that satisfies `ok`. */
      const until = (ok: (s: InspectorState) => boolean, what: string, from = 0) =>
        waitFor(() => states.slice(from).find(ok), {
          timeoutMs: testTimeout(10000),
          message: what,
        });
      await until((s) => s.recipes.length === 0, 'the first (empty) state');

      const a = conn.newLeaderElector(path, 'node-a', 5);
      // Read to the end in the background: leaving the loop would stop the elector.
      let aLeads = false;
      const aEvents = (async () => {
        for await (const ev of a.start()) aLeads ||= ev.status === LEStatus.Leader;
      })();
      await waitFor(() => aLeads, { timeoutMs: testTimeout(10000), message: 'node-a leads' });
      const b = other.newLeaderElector(path, 'node-b', 5);
      void b.start();
      const both = await until((s) => {
        const e = election(s);
        const lease = e?.entries[1]?.lease;
        return e?.entries.length === 2 && lease !== undefined && s.leases.has(lease);
      }, 'node-b as a candidate, with its TTL');
      const view = election(both);
      assert.ok(view !== undefined);
      assert.deepEqual(roles(view), ['leader node-a', 'candidate node-b']);
      // Created while watched: its age is known from the watch.
      const candidate = view.entries[1];
      assert.equal(candidate?.since?.source, 'watch');
      const ttl = both.leases.get(candidate.lease ?? '');
      assert.ok(ttl !== undefined && ttl.ttl > 0 && ttl.ttl <= 5 && ttl.grantedTtl === 5);

      const mark = states.length;
      await a.stop();
      await aEvents;
      const after = await until(
        (s) => election(s)?.entries.length === 1,
        'node-a resigned, node-b leads',
        mark,
      );
      assert.deepEqual(roles(election(after) ?? { entries: [] }), ['leader node-b']);
      // The resigned leader's lease is no longer in view.
      assert.ok(!after.leases.has(view.entries[0]?.lease ?? ''));
      await inspector.stop();
      await reading;
      assert.equal(await stream.closed, undefined);
    } finally {
      await other.close();
      await conn.close();
    }
  });

  void test('lease TTLs: one LeaseTimeToLive per distinct lease, not per key', async () => {
    const ns = uniqueName('insp');
    const conn = new EtcdConnector([suite.endpoint], ns);
    try {
      // Four keys of one connector share its one lease per TTL; etcdctl brings a second lease.
      await Promise.all(
        ['a', 'b', 'c'].map((name) =>
          conn.newRegistration(conn.constructPath('services', 'api'), name).register('v', 10),
        ),
      );
      void conn.newLeaderElector(conn.constructPath('elections', 'e'), 'ours', 10).start();
      etcdctl('elect', conn.constructPath('elections', 'e'), 'theirs');
      await keysUnder(`${conn.root}/elections/e/`, 2);
      const before = await grpcCalls(suite.endpoint, 'LeaseTimeToLive');
      const recipes = await inspectJson(ns);
      const leases = new Set(recipes.flatMap((r) => r.entries.flatMap((e) => e.lease ?? [])));
      assert.equal(recipes.flatMap((r) => r.entries).length, 5);
      assert.equal(leases.size, 2);
      assert.equal((await grpcCalls(suite.endpoint, 'LeaseTimeToLive')) - before, 2);
    } finally {
      await conn.close();
    }
  });

  void test('usage errors exit 2; an unreachable etcd exits 1 with the error', async () => {
    const help = await runCli(['inspect', '--help']);
    assert.equal(help.code, 0, help.describe);
    assert.match(help.lines.join('\n'), /^Usage: etcdc inspect \[options\] \[path\]/m);
    const ns = uniqueName('insp');
    for (const args of [
      ['inspect', '/elsewhere/x'],
      ['inspect', 'a/../b'],
      ['inspect', 'a', 'b'],
      ['inspect', ''],
    ]) {
      const r = await runCli([...args, ...at(ns), '--json']);
      assert.equal(r.code, 2, r.describe);
    }
    const dead = await runCli([
      'inspect',
      '--endpoints',
      '127.0.0.1:1',
      '--dial-timeout',
      '500',
      '--command-timeout',
      '500',
      '--json',
    ]);
    assert.equal(dead.code, 1, dead.describe);
    assert.match(dead.stderr, /"event":"error"/, dead.describe);
    assert.match(dead.stderr, /ETCDC_UNAVAILABLE|ETCDC_TIMEOUT/, dead.describe);
  });
});
