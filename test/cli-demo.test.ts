/**
 * End-to-end tests of `etcdc demo`: the README's first command, `--json`, `--endpoints` (a
 * namespace of its own, nothing left behind) and Ctrl-C in the middle. Each embedded demo gets its
 * own kit run id (ETCDC_KIT_RUN_ID), so its etcd processes are recognisable in `ps` and "none left"
 * is checked exactly — other engineers' etcd processes on this machine do not interfere.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ETCD_DATA_DIR_MARKER, testTimeout, uniqueName } from '../src/testing/index.js';
import {
  assertEnvelope,
  CliProcess,
  ROOT,
  etcdProcessesWith,
  killAll,
  processesWith,
  runCli,
  untimed,
  type JsonRecord,
} from './fixtures/cli-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

/** The demo promises to end within a minute. */
const DEMO_MS = 60000;

/** A kit run id of its own for one demo process, and the marker its etcd processes carry. */
function demoRun(): { env: Record<string, string>; marker: string } {
  const runId = `cli${randomBytes(4).toString('hex')}`;
  return { env: { ETCDC_KIT_RUN_ID: runId }, marker: `${ETCD_DATA_DIR_MARKER}r${runId}-` };
}

const text = (r: JsonRecord): string => (typeof r.text === 'string' ? r.text : '');

/** The participants' `elect` processes of a demo on these endpoints. */
function participants(endpoints: string): string[] {
  return processesWith(' elect demo node-', endpoints);
}

/** The lock scene's `etcdc lock` workers of a demo on these endpoints. */
function lockWorkers(endpoints: string): string[] {
  return processesWith('locks/demo --ttl', endpoints);
}

/** After a demo exited: none of its etcd members, participants or lock workers is left. */
function assertNothingLeft(marker: string, endpoints: string): void {
  assert.deepEqual(etcdProcessesWith(marker), [], 'no etcd process of the demo is left');
  assert.deepEqual(participants(endpoints), [], 'no participant process is left');
  assert.deepEqual(lockWorkers(endpoints), [], 'no lock worker is left');
}

void describe('etcdc demo', () => {
  const suite = etcdSuite();
  suite.defer(killAll);

  void test("the README's first command runs the demo", async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const block = /```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
    const first = (block.split('\n')[0] ?? '').replace(/#.*$/, '').trim();
    const steps = first.split('&&').map((step) => step.trim());
    assert.equal(steps.at(-1), 'npm run demo', `the README's first command: ${first}`);
    // Setup steps a README may put in front; `npm ci` would reinstall node_modules under the
    // other tests running on this machine, so it is the one step not repeated here.
    for (const step of steps.slice(0, -1)) {
      assert.ok(['bash scripts/ensure-etcd.sh', 'npm ci'].includes(step), `known step: ${step}`);
      if (step !== 'bash scripts/ensure-etcd.sh') continue;
      const r = await runCli(['scripts/ensure-etcd.sh'], { command: 'bash', cwd: ROOT });
      assert.equal(r.code, 0, r.describe);
    }
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    assert.equal(pkg.scripts.demo, 'node dist/src/cli/main.js demo');

    // `npm run demo` itself; --ignore-scripts skips only the `predemo` bootstrap, which rebuilds
    // (`rm -rf dist`) the tree the tests running now are executing from.
    const { env, marker } = demoRun();
    const t0 = performance.now();
    const demo = new CliProcess(['run', '--ignore-scripts', 'demo'], {
      command: 'npm',
      cwd: ROOT,
      env,
      detached: true,
    });
    const up = await demo.waitLine(/cluster up: /, 'embedded cluster up', 30000);
    const endpoints = (/cluster up: (.*)$/.exec(up)?.[1] ?? '').split(', ').join(',');
    assert.equal(etcdProcessesWith(marker).length, 3, 'an embedded 3-member cluster');
    const { code } = await demo.exit(DEMO_MS);
    assert.equal(code, 0, demo.describe());
    assert.ok((demo.exitedAt ?? Infinity) - t0 < testTimeout(DEMO_MS), 'done within a minute');
    const out = demo.lines.join('\n');
    for (const line of [
      /node-a leads \(fencing token \d+\)/,
      /node-[bc] follows node-/,
      /takeover after a clean stop: [\d.]+ ms/,
      /takeover after a crash: [\d.]+ s/,
      /kill -9 of member m\d/,
      /worker-1 holds \/etcdc\/locks\/demo\/[0-9a-f]+ \(fencing token \d+\)/,
      /worker-2 holds \/etcdc\/locks\/demo\/[0-9a-f]+ \(fencing token \d+\), [\d.]+ s after the freeze/,
      /a write fenced with worker-1's token \d+ is refused: its key is gone/,
      /worker-1 runs again \(SIGCONT\): told it lost the lock [\d.]+ ms later; exit code 4/,
      /the leader keeps leading: node-/,
      /observer: DELETE \/etcdc\/config\/feature-x/,
      /tracker: 3 instance\(s\)/,
      /done in [\d.]+ s/,
    ]) {
      assert.match(out, line);
    }
    assertNothingLeft(marker, endpoints);
  });

  void test('demo --json: every line is JSON, with the takeovers and a summary', async () => {
    const { env, marker } = demoRun();
    const demo = new CliProcess(['demo', '--json'], { env, detached: true });
    const up = await demo.waitRecord(
      (r) => text(r).startsWith('cluster up: '),
      'cluster up',
      30000,
    );
    const endpoints = text(up).slice('cluster up: '.length).split(', ').join(',');
    const { code } = await demo.exit(DEMO_MS);
    assert.equal(code, 0, demo.describe());
    assert.deepEqual(demo.notJson, [], 'every stdout line is JSON');
    assert.equal(demo.records.length, demo.lines.length);
    assertEnvelope(demo.records, demo.describe());
    const texts = demo.records.map(text);
    assert.ok(texts.some((t) => t.startsWith('takeover after a clean stop: ')));
    assert.ok(texts.some((t) => t.startsWith('takeover after a crash: ')));
    const summary = demo.records.find((r) => r.event === 'summary');
    const results = summary?.results as Record<string, string> | undefined;
    assert.ok(results !== undefined, 'a summary record');
    assert.match(results['handover after a clean stop'] ?? '', /^[\d.]+ ms$/);
    assert.match(results['takeover after a crash (TTL 2s)'] ?? '', /^[\d.]+ s$/);
    // The lock's holder froze past its 2 s TTL: the lock moved after its lease ran out.
    const moved = /^([\d.]+) s$/.exec(results['lock moved after a freeze (TTL 2s)'] ?? '');
    assert.ok(moved !== null && Number(moved[1]) >= 1, `lock moved: ${String(moved?.[0])}`);
    assert.match(results['frozen holder told of its loss on resuming'] ?? '', /^[\d.]+ ms$/);
    const health = demo.records.filter((r) => r.event === 'health');
    assert.ok(health.some((r) => (r.members as unknown[]).length === 3));
    assert.ok(
      health.some((r) => r.status !== 'healthy'),
      'the member failure shows',
    );
    assertNothingLeft(marker, endpoints);
  });

  void test('demo --endpoints: its own namespace, no key left behind', async () => {
    const ns = uniqueName('cli-demo');
    const endpoints = suite.etcd.endpoints.join(',');
    const r = await runCli(
      ['demo', '--json', '--endpoints', endpoints, '--namespace', ns],
      { detached: true },
      DEMO_MS,
    );
    assert.equal(r.code, 0, r.describe);
    assert.deepEqual(r.notJson, []);
    const using = r.records.map(text).find((t) => t.startsWith('using '));
    const own = / namespace (\S+)$/.exec(using ?? '')?.[1] ?? '';
    assert.ok(own.startsWith(`${ns}-demo-`), `a namespace of its own: ${using ?? '(none)'}`);
    assert.ok(r.records.map(text).some((t) => t.startsWith('takeover after a crash: ')));
    assert.deepEqual(await suite.client.getAll().prefix(`/${own}/`).keys(), [], 'no key left');
    assert.equal(await suite.client.get(`/${own}`).string(), null);
    assert.deepEqual(participants(endpoints), [], 'no participant process is left');
  });

  // A terminal's Ctrl-C reaches the whole process group (participants resign by themselves); a
  // SIGINT to the demo alone (`kill -INT`) must make the demo end its participants itself.
  for (const target of ['process group', 'demo process only'] as const) {
    void test(`Ctrl-C during the demo (${target}) exits promptly, leaves no process`, async () => {
      const { env, marker } = demoRun();
      const demo = new CliProcess(['demo', '--json'], { env, detached: true });
      const up = await demo.waitRecord(
        (r) => text(r).startsWith('cluster up: '),
        'cluster up',
        30000,
      );
      const endpoints = text(up).slice('cluster up: '.length).split(', ').join(',');
      await demo.waitRecord((r) => text(r).includes(' leads (fencing token'), 'one leads');
      assert.equal(etcdProcessesWith(marker).length, 3);
      assert.ok(participants(endpoints).length >= 1, 'participants run');
      const sent = performance.now();
      if (target === 'process group') demo.interruptGroup();
      else demo.interrupt();
      const { code } = await demo.exit(10000);
      assert.ok((demo.exitedAt ?? Infinity) - sent < testTimeout(10000), 'prompt exit');
      assert.equal(code, 130, demo.describe());
      assert.deepEqual(untimed(demo.records.at(-1)), { event: 'interrupted' });
      assert.deepEqual(demo.notJson, []);
      assertNothingLeft(marker, endpoints);
    });
  }
});
