import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { noop } from 'cockatiel';
import { Etcd3 } from 'etcd3';
import { EtcdNotFoundError, EtcdStartError } from '../src/errors.js';
import {
  ETCD_DATA_DIR_MARKER,
  findEtcdBinary,
  startEtcd,
  startEtcdCluster,
  testTimeout,
  uniqueName,
  waitFor,
  withTimeout,
  type EtcdCluster,
  type EtcdMember,
} from '../src/testing/index.js';

/**
 * Whether a process is gone. An orphaned grandchild that was killed may linger as a zombie until
 * its new parent reaps it; it is dead all the same.
 */
function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
  return processState(pid) === 'Z';
}

/** The state letter from /proc/PID/stat (R, S, T, Z...), or undefined. */
function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

/** Processes whose command line contains `text` (ps is the ground truth, not our own registry). */
function processesWith(text: string): string[] {
  return execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.includes(text));
}

/** A client with a short per-call deadline and no retries of its own. */
function newClient(hosts: string[]): Etcd3 {
  return new Etcd3({
    hosts,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 2000 }),
    faultHandling: { host: () => noop, global: noop },
  });
}

/** Writes and reads back a key through `hosts` only. */
async function assertServes(hosts: string[], key: string): Promise<void> {
  const client = newClient(hosts);
  try {
    const value = uniqueName('v');
    await client.put(key).value(value).exec();
    assert.equal(await client.get(key).string(), value);
  } finally {
    client.close();
  }
}

function otherEndpoints(cluster: EtcdCluster, member: EtcdMember): string[] {
  return cluster.members.filter((m) => m !== member).map((m) => m.endpoint);
}

void describe('test helpers', () => {
  void test('testTimeout scales by ETCDC_TEST_TIMEOUT_SCALE', () => {
    const saved = process.env.ETCDC_TEST_TIMEOUT_SCALE;
    try {
      process.env.ETCDC_TEST_TIMEOUT_SCALE = '2.5';
      assert.equal(testTimeout(1000), 2500);
      delete process.env.ETCDC_TEST_TIMEOUT_SCALE;
      assert.equal(testTimeout(1000), 1000);
    } finally {
      if (saved === undefined) delete process.env.ETCDC_TEST_TIMEOUT_SCALE;
      else process.env.ETCDC_TEST_TIMEOUT_SCALE = saved;
    }
  });

  void test('waitFor resolves with the truthy value, or times out with the message', async () => {
    let calls = 0;
    assert.equal(
      await waitFor(() => (++calls >= 3 ? 'done' : undefined), { timeoutMs: 2000 }),
      'done',
    );
    await assert.rejects(
      waitFor(
        () => {
          throw new Error('not yet');
        },
        { timeoutMs: 100, intervalMs: 10, message: 'the impossible' },
      ),
      (err: unknown) =>
        err instanceof Error &&
        (err as { code?: unknown }).code === 'ETCDC_TIMEOUT' &&
        err.message.includes('the impossible') &&
        err.message.includes('not yet'),
    );
  });

  void test('withTimeout passes results through and times out with a name', async () => {
    assert.equal(await withTimeout(Promise.resolve(7), 1000, 'x'), 7);
    await assert.rejects(withTimeout(new Promise(() => undefined), 20, 'the never promise'), {
      code: 'ETCDC_TIMEOUT',
      message: /the never promise/,
    });
  });

  void test('uniqueName never repeats', () => {
    const names = new Set(Array.from({ length: 1000 }, () => uniqueName('t')));
    assert.equal(names.size, 1000);
    assert.match([...names][0] ?? '', /^t-\d+-\d+-[0-9a-f]+$/);
  });
});

void describe('findEtcdBinary', () => {
  void test('finds etcd and etcdctl', () => {
    assert.ok(existsSync(findEtcdBinary()));
    assert.ok(existsSync(findEtcdBinary('etcdctl')));
  });

  void test('ETCD_BIN pointing at a missing file throws EtcdNotFoundError', () => {
    const saved = process.env.ETCD_BIN;
    process.env.ETCD_BIN = '/nonexistent/etcd';
    try {
      assert.throws(
        () => findEtcdBinary(),
        (err: unknown) =>
          err instanceof EtcdNotFoundError &&
          err.code === 'ETCDC_ETCD_NOT_FOUND' &&
          err.message.includes('/nonexistent/etcd'),
      );
    } finally {
      if (saved === undefined) delete process.env.ETCD_BIN;
      else process.env.ETCD_BIN = saved;
    }
  });
});

void describe('startEtcd', () => {
  void test('start, serve, stop leaves no process and no data dir; stop is idempotent', async (t) => {
    const etcd = await startEtcd();
    t.after(() => etcd.stop());
    assert.equal(etcd.members.length, 1);
    const member = etcd.members[0];
    assert.ok(member);
    const pid = member.pid;
    assert.ok(pid !== undefined && !isGone(pid));
    assert.ok(member.running);
    assert.match(member.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.ok(Number(new URL(member.endpoint).port) > 20000);
    assert.deepEqual(etcd.endpoints, [member.endpoint]);
    assert.ok(existsSync(member.dataDir));
    assert.ok(member.dataDir.includes(ETCD_DATA_DIR_MARKER));
    await assertServes(etcd.endpoints, uniqueName('k'));

    await etcd.stop();
    assert.ok(isGone(pid), `etcd ${pid} still runs after stop()`);
    assert.equal(member.running, false);
    assert.equal(member.pid, undefined);
    assert.equal(existsSync(member.dataDir), false);
    assert.equal(existsSync(dirname(dirname(member.dataDir))), false);
    await etcd.stop();
    await etcd[Symbol.asyncDispose]();
    await assert.rejects(member.restart(), { code: 'ETCDC_CLOSED' });
  });

  void test('two clusters in one process get distinct ports and data dirs', async (t) => {
    const [a, b] = await Promise.all([startEtcd(), startEtcd()]);
    t.after(() => Promise.all([a.stop(), b.stop()]));
    assert.notEqual(a.endpoints[0], b.endpoints[0]);
    assert.notEqual(a.members[0]?.dataDir, b.members[0]?.dataDir);
  });

  void test('options reach etcd; a bad flag fails at once with the log tail', async (t) => {
    const etcd = await startEtcd({
      heartbeatIntervalMs: 50,
      electionTimeoutMs: 500,
      autoCompactionMode: 'revision',
      autoCompactionRetention: '1000',
      progressNotifyIntervalMs: 500,
    });
    t.after(() => etcd.stop());
    const pid = etcd.members[0]?.pid ?? 0;
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    assert.ok(args.includes('--heartbeat-interval=50'));
    assert.ok(args.includes('--election-timeout=500'));
    assert.ok(args.includes('--auto-compaction-mode=revision'));
    assert.ok(args.includes('--experimental-watch-progress-notify-interval=500ms'));

    // Its own parent directory: the log of a failed start is kept, and this test removes it.
    const parent = mkdtempSync(join(tmpdir(), 'etcdc-test-bad-flag-'));
    t.after(() => {
      rmSync(parent, { recursive: true, force: true });
    });
    const started = Date.now();
    await assert.rejects(
      startEtcd({ extraArgs: ['--no-such-flag'], dataDirParent: parent }),
      (err: unknown) => {
        assert.ok(err instanceof EtcdStartError);
        assert.equal(err.code, 'ETCDC_ETCD_START_FAILED');
        assert.match(err.message, /no-such-flag/);
        const log = /log (\S+etcd\.log):/.exec(err.message)?.[1];
        assert.ok(log !== undefined && log.startsWith(parent) && existsSync(log), 'log kept');
        return true;
      },
    );
    assert.ok(Date.now() - started < testTimeout(10000), 'failed fast, not by the start timeout');
  });
});

void describe('3-member cluster', () => {
  let cluster: EtcdCluster;
  const ns = uniqueName('cluster');

  before(async () => {
    cluster = await startEtcdCluster(3);
  });

  after(async () => {
    await cluster.stop();
    for (const member of cluster.members) assert.equal(member.running, false);
  });

  void test('every member is healthy and serves', async () => {
    assert.equal(cluster.members.length, 3);
    assert.equal(new Set(cluster.endpoints).size, 3);
    await cluster.waitHealthy(testTimeout(10000));
    for (const endpoint of cluster.endpoints) await assertServes([endpoint], `${ns}/each`);
  });

  void test('leader() returns the member etcd calls leader', async () => {
    const leader = await cluster.leader();
    for (const member of cluster.members) {
      const client = newClient([member.endpoint]);
      try {
        const status = await client.maintenance.status();
        const leaderClient = newClient([leader.endpoint]);
        try {
          const own = await leaderClient.maintenance.status();
          assert.equal(status.leader, own.header.member_id, `${member.name} names another leader`);
        } finally {
          leaderClient.close();
        }
      } finally {
        client.close();
      }
    }
  });

  void test('killing a follower: the others keep serving; restart brings it back', async () => {
    const leader = await cluster.leader();
    const follower = cluster.members.find((m) => m !== leader);
    assert.ok(follower);
    const pid = follower.pid;
    assert.ok(pid !== undefined);
    await follower.kill();
    assert.ok(isGone(pid));
    assert.equal(follower.running, false);
    assert.equal(follower.pid, undefined);
    await assertServes(otherEndpoints(cluster, follower), `${ns}/follower`);

    await follower.restart();
    assert.ok(follower.running);
    assert.notEqual(follower.pid, pid);
    await cluster.waitHealthy(testTimeout(10000));
    await assertServes([follower.endpoint], `${ns}/follower`);
  });

  void test('killing the leader: a new one is elected and writes go on; restart rejoins', async () => {
    const leader = await cluster.leader();
    await leader.kill();
    const next = await cluster.leader(testTimeout(15000));
    assert.notEqual(next, leader);
    // Writes may stall for about one election; each attempt has its own 2 s deadline.
    await waitFor(
      async () => {
        await assertServes(otherEndpoints(cluster, leader), `${ns}/leader`);
        return true;
      },
      { timeoutMs: testTimeout(15000), intervalMs: 100, message: 'a write after leader loss' },
    );
    await leader.restart();
    await cluster.waitHealthy(testTimeout(10000));
    await assertServes([leader.endpoint], `${ns}/leader`);
  });

  void test('pause and resume a member: the others keep serving', async (t) => {
    const leader = await cluster.leader();
    const follower = cluster.members.find((m) => m !== leader);
    assert.ok(follower?.pid !== undefined);
    const pid = follower.pid;
    follower.pause();
    t.after(() => {
      follower.resume();
    });
    assert.ok(follower.paused);
    assert.ok(follower.running);
    // SIGSTOP is delivered asynchronously.
    await waitFor(() => processState(pid) === 'T', {
      timeoutMs: testTimeout(2000),
      message: 'the process to be stopped',
    });
    await assertServes(otherEndpoints(cluster, follower), `${ns}/pause`);
    // A paused member holds its socket open but answers nothing: the deadline must fire.
    const client = newClient([follower.endpoint]);
    try {
      await assert.rejects(client.get(`${ns}/pause`).string());
    } finally {
      client.close();
    }
    follower.resume();
    assert.equal(follower.paused, false);
    await cluster.waitHealthy(testTimeout(10000));
    await assertServes([follower.endpoint], `${ns}/pause`);
  });

  void test('pausing the leader: another is elected; stop() also kills a paused member', async () => {
    const leader = await cluster.leader();
    leader.pause();
    const next = await cluster.leader(testTimeout(15000));
    assert.notEqual(next, leader);
    await waitFor(
      async () => {
        await assertServes(otherEndpoints(cluster, leader), `${ns}/pause-leader`);
        return true;
      },
      {
        timeoutMs: testTimeout(15000),
        intervalMs: 100,
        message: 'a write while the leader is paused',
      },
    );
    // Left paused on purpose: the suite's after() must kill it anyway.
    assert.ok(leader.paused);
  });
});

void describe('no etcd outlives its process', () => {
  const kitUrl = new URL('../src/testing/index.js', import.meta.url).href;

  /**
   * Runs a child that starts etcd, prints its pid and data dir, then does `then`. Resolves with
   * the printed line and the child's exit.
   */
  async function runChild(then: string): Promise<{
    pid: number;
    processDir: string;
    child: ReturnType<typeof spawn>;
    exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  }> {
    const script = [
      `import { startEtcd } from ${JSON.stringify(kitUrl)};`,
      'const etcd = await startEtcd();',
      'const m = etcd.members[0];',
      'console.log(JSON.stringify({ pid: m.pid, dataDir: m.dataDir }));',
      then,
    ].join('\n');
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exit = new Promise<{
      code: number | null;
      signal: NodeJS.Signals | null;
      stderr: string;
    }>((resolve) => {
      child.on('exit', (code, signal) => {
        resolve({ code, signal, stderr });
      });
    });
    let stdout = '';
    const line = await withTimeout(
      new Promise<string>((resolve, reject) => {
        child.stdout.on('data', (chunk: Buffer) => {
          stdout += chunk.toString();
          const nl = stdout.indexOf('\n');
          if (nl >= 0) resolve(stdout.slice(0, nl));
        });
        void exit.then((e) => {
          reject(new Error(`child exited early (${e.code ?? e.signal}): ${e.stderr}`));
        });
      }),
      testTimeout(30000),
      'the child starting etcd',
    );
    const { pid, dataDir } = JSON.parse(line) as { pid: number; dataDir: string };
    // dataDir = <per-process dir>/<cluster token>/<member>/data
    return { pid, processDir: dirname(dirname(dirname(dataDir))), child, exit };
  }

  /** Waits until etcd is gone and nothing (etcd or watchdog) mentions the child's directory. */
  async function assertCleanedUp(pid: number, processDir: string, timeoutMs: number) {
    try {
      await waitFor(() => isGone(pid), { timeoutMs, message: `etcd ${pid} to be gone` });
      await waitFor(() => processesWith(processDir).length === 0 && !existsSync(processDir), {
        timeoutMs,
        message: `no process or directory left for ${processDir}`,
      });
    } finally {
      // Never leak into other tests, even when the assertion fails.
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone, as it should be
      }
    }
  }

  void test('normal exit without stop(): a forgotten cluster does not keep the process alive', async () => {
    const { pid, processDir, exit } = await runChild('// nothing left to do');
    const result = await withTimeout(exit, testTimeout(10000), 'child exit');
    assert.equal(result.code, 0);
    await assertCleanedUp(pid, processDir, testTimeout(2000));
  });

  void test('uncaught exception', async () => {
    const { pid, processDir, exit } = await runChild(
      "setTimeout(() => { throw new Error('boom'); }, 10);",
    );
    const result = await withTimeout(exit, testTimeout(10000), 'child exit');
    assert.equal(result.code, 1);
    assert.match(result.stderr, /boom/);
    await assertCleanedUp(pid, processDir, testTimeout(2000));
  });

  void test('SIGTERM', async () => {
    const { pid, processDir, child, exit } = await runChild('setInterval(() => {}, 1000);');
    assert.ok(!isGone(pid));
    child.kill('SIGTERM');
    const result = await withTimeout(exit, testTimeout(10000), 'child exit');
    assert.equal(result.signal, 'SIGTERM', 'the signal is re-raised: exit status says SIGTERM');
    await assertCleanedUp(pid, processDir, testTimeout(2000));
  });

  void test('SIGKILL: the watchdog cleans up', async () => {
    const { pid, processDir, child, exit } = await runChild('setInterval(() => {}, 1000);');
    assert.ok(!isGone(pid));
    child.kill('SIGKILL');
    await withTimeout(exit, testTimeout(10000), 'child exit');
    await assertCleanedUp(pid, processDir, testTimeout(5000));
  });
});
