/**
 * `etcdc lock` end to end: the built CLI as child processes against a real etcd, beside the real
 * `etcdctl lock`.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { describe, test } from 'node:test';
import { findEtcdBinary, testTimeout, uniqueName, waitFor } from '../src/testing/index.js';
import { assertEnvelope, CliProcess, killAll, runCli } from './fixtures/cli-harness.js';
import { EtcdctlLock, queueKeys, waitQueueLength } from './fixtures/lock-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

void describe('etcdc lock', () => {
  const suite = etcdSuite();
  suite.defer(killAll);

  function at(ns: string): string[] {
    return ['--endpoints', suite.endpoint, '--namespace', ns];
  }

  test('--help names the arguments and options', async () => {
    const r = await runCli(['lock', '--help']);
    assert.equal(r.code, 0, r.describe);
    const text = r.lines.join(' ').replace(/\s+/g, ' ');
    for (const w of ['<name>', '[command...]', '--ttl', '--timeout', '--try', 'Exit codes']) {
      assert.ok(text.includes(w), `${w}\n${r.describe}`);
    }
    const root = await runCli(['--help']);
    assert.match(root.lines.join('\n'), /^\s+lock /m);
  });

  test('bad input exits 2, an unreachable endpoint exits 1, both before waiting', async () => {
    const fast = ['--command-timeout', '500', '--dial-timeout', '500'];
    const [empty, ttl, dead] = await Promise.all([
      runCli(['lock', '', ...at(uniqueName('cli-lock'))]),
      runCli(['lock', 'job', '--ttl', '0']),
      runCli(['lock', 'job', '--endpoints', '127.0.0.1:1', ...fast]),
    ]);
    assert.equal(empty.code, 2, empty.describe);
    assert.match(empty.stderr, /\[ETCDC_INVALID_ARGUMENT\] name: must not be empty/);
    assert.equal(ttl.code, 2, ttl.describe);
    assert.equal(dead.code, 1, dead.describe);
    assert.match(dead.stderr, /^etcdc: \[ETCDC_[A-Z_]+\] /m, dead.describe);
  });

  test('hold until Ctrl-C; --try exits 3; --timeout exits 3; Ctrl-C / SIGTERM while waiting exit 130 / 143', async () => {
    const ns = uniqueName('cli-lock');
    const prefix = `/${ns}/locks/job/`;
    const holder = new CliProcess(['lock', 'job', '--json', '--ttl', '2', ...at(ns)]);
    const acquired = await holder.waitRecord((r) => r.event === 'acquired', 'acquired');
    assert.match(String(acquired.key), new RegExp(`^${prefix}[0-9a-f]+$`));
    assert.equal((await queueKeys(suite.client, prefix))[0], acquired.key);

    const tried = await runCli(['lock', 'job', '--try', '--json', ...at(ns)]);
    assert.equal(tried.code, 3, tried.describe);
    assertEnvelope(tried.records);
    const [refused] = tried.records;
    assert.ok(refused !== undefined, tried.describe);
    assert.equal(refused.event, 'not-acquired');
    assert.equal(refused.reason, 'held elsewhere');

    const timed = await runCli(['lock', 'job', '--timeout', '300', '--json', ...at(ns)]);
    assert.equal(timed.code, 3, timed.describe);
    assert.equal(timed.records.at(-1)?.reason, 'timeout');

    for (const [signal, code] of [
      ['SIGINT', 130],
      ['SIGTERM', 143],
    ] as const) {
      const waiter = new CliProcess(['lock', 'job', ...at(ns)]);
      await waitQueueLength(suite.client, prefix, 2);
      // Human output names the holder, read before the waiter joined.
      await waiter.waitLine(
        new RegExp(
          ` held by ${acquired.key as string} \\(fencing token ${acquired.token as string}\\)$`,
        ),
        'the holder named',
      );
      waiter.interrupt(signal);
      assert.equal((await waiter.exit()).code, code, `${signal}: ${waiter.describe()}`);
      assert.deepEqual(
        await queueKeys(suite.client, prefix),
        [acquired.key],
        `${signal}: the waiter's key is gone`,
      );
    }

    holder.interrupt();
    assert.equal((await holder.exit()).code, 0, holder.describe());
    assertEnvelope(holder.records);
    assert.ok(holder.records.some((r) => r.event === 'released'));
    assert.deepEqual(await queueKeys(suite.client, prefix), []);
    // Human mode prints the key alone first, as etcdctl does.
    const human = new CliProcess(['lock', 'job', ...at(ns)]);
    const line = await human.waitLine(new RegExp(`^${prefix}`), 'key line');
    assert.match(line, new RegExp(`^${prefix}[0-9a-f]+$`));
    human.interrupt();
    assert.equal((await human.exit()).code, 0);
  });

  test("runs a command holding the lock: ETCD_LOCK_KEY / _REV / _TOKEN, the command's exit code", async () => {
    const ns = uniqueName('cli-lock');
    const script =
      'echo "key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV token=$ETCD_LOCK_TOKEN"; echo oops >&2; exit 7';
    const r = await runCli(['lock', 'job', ...at(ns), '--', 'sh', '-c', script]);
    assert.equal(r.code, 7, r.describe);
    const out = r.lines.find((l) => l.startsWith('key='));
    const m = /^key=(\S+) rev=(\d+) token=(\d+)$/.exec(out ?? '');
    assert.ok(m !== null, r.describe);
    assert.match(m[1] ?? '', new RegExp(`^/${ns}/locks/job/[0-9a-f]+$`));
    // etcdctl's ETCD_LOCK_REV: the acquisition's revision, at or after the key's creation.
    assert.ok(Number(m[2]) >= Number(m[3]), out);
    assert.match(r.stderr, /oops/);
    assert.deepEqual(await queueKeys(suite.client, `/${ns}/locks/job/`), [], 'released after');

    // --json: the command's lines are `output` events; stdout stays JSON.
    const j = await runCli(['lock', 'job', '--json', ...at(ns), '--', 'sh', '-c', script]);
    assert.equal(j.code, 7, j.describe);
    assert.deepEqual(j.notJson, []);
    assertEnvelope(j.records);
    assert.deepEqual(
      j.records.map((x) => x.event),
      ['acquired', 'output', 'output', 'exit', 'released'],
    );
    assert.deepEqual(
      j.records
        .filter((x) => x.event === 'output')
        .map((x) => `${String(x.stream)}: ${String(x.line)}`)
        .sort(),
      [
        `stderr: oops`,
        `stdout: key=${String(j.records[0]?.key)} rev=${String(j.records[0]?.revision)} token=${String(j.records[0]?.token)}`,
      ],
    );
  });

  test('a command that cannot run: 127 (not found) or 126, said on stderr, the lock released', async () => {
    const ns = uniqueName('cli-lock');
    const missing = await runCli(['lock', 'job', '--json', ...at(ns), '--', '/nonexistent/cmd']);
    assert.equal(missing.code, 127, missing.describe);
    assert.deepEqual(
      missing.records.map((x) => x.event),
      ['acquired', 'released'],
    );
    assert.match(missing.stderr, /cannot run \/nonexistent\/cmd: .*ENOENT/);
    // A directory: execve refuses it (EACCES), for root too.
    const notRunnable = await runCli(['lock', 'job', ...at(ns), '--', tmpdir()]);
    assert.equal(notRunnable.code, 126, notRunnable.describe);
    assert.match(notRunnable.stderr, /cannot run .*EACCES/);
    assert.deepEqual(await queueKeys(suite.client, `/${ns}/locks/job/`), [], 'released after');
  });

  test('queues with etcdctl lock on the same path, both ways', async () => {
    const ns = uniqueName('cli-lock');
    const path = `/${ns}/locks/shared`;
    const ctl = new EtcdctlLock(findEtcdBinary('etcdctl'), suite.etcd.endpoints, path);
    suite.defer(() => ctl.kill());
    await ctl.waitHeld('etcdctl holds');
    const tried = await runCli(['lock', path, '--try', ...at(ns)]);
    assert.equal(tried.code, 3, tried.describe);
    const ours = new CliProcess(['lock', path, '--json', ...at(ns), '--', 'true']);
    await waitQueueLength(suite.client, `${path}/`, 2);
    await ctl.release();
    assert.equal((await ours.exit()).code, 0, ours.describe());
    assert.ok(ours.records.some((r) => r.event === 'released'));

    const holder = new CliProcess(['lock', path, '--json', ...at(ns)]);
    await holder.waitRecord((r) => r.event === 'acquired', 'ours holds');
    const next = new EtcdctlLock(findEtcdBinary('etcdctl'), suite.etcd.endpoints, path);
    suite.defer(() => next.kill());
    await waitQueueLength(suite.client, `${path}/`, 2);
    holder.interrupt();
    await holder.exit();
    await next.waitHeld('etcdctl holds after ours');
    await next.release();
  });

  test('lost while a command runs: the command gets SIGTERM, etcdc exits 4 and says why', async () => {
    const ns = uniqueName('cli-lock');
    const prefix = `/${ns}/locks/job/`;
    const script = 'trap "echo got-term; exit 9" TERM; echo started; while :; do sleep 0.05; done';
    const p = new CliProcess(['lock', 'job', '--ttl', '2', ...at(ns), '--', 'sh', '-c', script]);
    await p.waitLine(/^started$/, 'command started');
    const [key] = await queueKeys(suite.client, prefix);
    assert.ok(key !== undefined);
    await suite.client.delete().key(key).exec(); // the lock is gone (as after an expiry)
    const exit = await p.exit();
    assert.equal(exit.code, 4, p.describe());
    assert.ok(p.lines.includes('got-term'), p.describe());
    assert.match(p.stderr, /\[ETCDC_NOT_LOCKED\] lock \S+ lost: .*SIGTERM/, p.describe());
  });

  test('Ctrl-C while a command runs reaches the command; its exit code is ours', async () => {
    const ns = uniqueName('cli-lock');
    const script = 'trap "echo got-int; exit 5" INT; echo started; while :; do sleep 0.05; done';
    const p = new CliProcess(['lock', 'job', ...at(ns), '--', 'sh', '-c', script]);
    await p.waitLine(/^started$/, 'command started');
    p.interrupt(); // etcdc only (not the group): it passes the signal on
    const exit = await p.exit();
    assert.equal(exit.code, 5, p.describe());
    await waitFor(async () => (await queueKeys(suite.client, `/${ns}/locks/job/`)).length === 0, {
      timeoutMs: testTimeout(5000),
      message: 'released',
    });
  });
});
