// Fault tests of the queue and the STM on a 3-member etcd cluster, with child processes:
//
// - Queue: 4 consumer processes take 4,000 items while consumers are SIGKILLed (and replaced)
//   and SIGSTOPped past their lease TTL, and the etcd leader dies once. "Delivered" = the consumer's dequeue returned the item
//   and the consumer wrote it to its log (its acknowledgement, before anything else). Checked
//   against etcd's own history: every item was claimed exactly once (one delete each, with the
//   claimer's receipt in the same revision); no item is in two logs; an item claimed but in no
//   log was claimed by a process that was then killed (at most one per kill: one claim in
//   flight per consumer), never by one that lived.
// - STM: 8 worker processes transfer money between 10 accounts while etcd members are killed
//   and restarted. The total never changes (checked while it runs, on single-revision reads),
//   and every account ends at exactly what the logged transfers say — so no commit was applied
//   twice or lost, including those whose answer a member's death cut off.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { EtcdConnector, EtcdConnectorError, type ObserverChange } from '../src/index.js';
import { testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { Child } from './fixtures/elector-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Lines of a JSON-lines file (a torn last line of a killed writer cannot happen: one write each). */
function readLog<T>(file: string): T[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as T);
}

/**
 * Every change under `prefix` from revision `from` on, from etcd's history, up to a marker key
 * written now (so the last revision's events all arrive before it).
 */
async function history(
  conn: EtcdConnector,
  prefix: string,
  from: number,
): Promise<ObserverChange[]> {
  const marker = `${prefix}/history-end`;
  await conn.client.put(marker).value('');
  const changes: ObserverChange[] = [];
  const observer = conn.newObserver(prefix);
  const stream = observer.start(from, true);
  await withTimeout(
    (async () => {
      for await (const ev of stream) {
        if (ev.type === 'resync') throw new Error('history was compacted');
        if (ev.type !== 'put' && ev.type !== 'delete') continue;
        if (ev.key === marker) break;
        changes.push(ev);
      }
    })(),
    testTimeout(60000),
    'history replay',
  );
  await observer.stop();
  return changes;
}

void describe('toolbox under faults (3-member cluster, child processes)', () => {
  const suite = etcdSuite({ members: 3 });
  const dir = mkdtempSync(join(tmpdir(), 'etcdc-toolbox-faults-'));
  suite.defer(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  void test('queue: 4 consumers x 1,000 items with kill -9 and SIGSTOP -> each item exactly once', async () => {
    const ns = uniqueName('qf');
    const conn = suite.connect(ns);
    const path = conn.constructPath('jobs');
    const TOTAL = 4000;
    const TTL = 2;
    let generation = 0;
    const consumers = new Map<Child, { log: string; killed: boolean }>();
    const spawnConsumer = async (): Promise<Child> => {
      const log = join(dir, `consumer-${generation++}.log`);
      const child = new Child(`consumer-${generation}`, 'toolbox-worker', [
        'consume',
        suite.etcd.endpoints.join(','),
        ns,
        path,
        log,
        String(TTL),
      ]);
      suite.defer(() => child.kill());
      consumers.set(child, { log, killed: false });
      await child.waitLine((l) => l.event === 'started', 'started');
      return child;
    };
    const live = await Promise.all([0, 1, 2, 3].map(() => spawnConsumer()));
    const startRevision = Number((await suite.client.get(path).exec()).header.revision);

    const producer = conn.newQueue(path);
    let enqueued = 0;
    const producing = Promise.all(
      [0, 1, 2, 3].map(async (p) => {
        for (let i = p; i < TOTAL; i += 4) {
          // A rejected enqueue (other than OutcomeUnknownError) was not enqueued: retry is safe.
          for (;;) {
            try {
              await producer.enqueue(`item-${i}`);
              break;
            } catch (err) {
              if (!(err instanceof EtcdConnectorError) || !err.retryable) throw err;
            }
          }
          enqueued += 1;
        }
      }),
    );

    // Faults while items flow: SIGKILL (a new consumer takes its place) and SIGSTOP, 1 s (the
    // lease survives) or 3 s (the lease, its receipts and its place in line expire meanwhile).
    let kills = 0;
    let stops = 0;
    const remaining = async (): Promise<number> => suite.client.getAll().prefix(`${path}/`).count();
    let memberKills = 0;
    for (let round = 0; round < 8; round++) {
      await sleep(400 + Math.random() * 400);
      if (round === 4) {
        // And an etcd member, the leader, dies and comes back while claims are in flight.
        const leader = await suite.etcd.leader();
        await leader.kill();
        await sleep(1000);
        await leader.restart();
        memberKills += 1;
      }
      const victim = live[Math.floor(Math.random() * live.length)];
      if (victim === undefined) continue;
      if (round % 2 === 0) {
        victim.child.kill('SIGKILL');
        await victim.exited;
        const info = consumers.get(victim);
        if (info !== undefined) info.killed = true;
        kills += 1;
        live.splice(live.indexOf(victim), 1, await spawnConsumer());
      } else {
        victim.child.kill('SIGSTOP');
        await sleep(round % 4 === 1 ? 1000 : 3000);
        victim.child.kill('SIGCONT');
        stops += 1;
      }
    }
    await withTimeout(producing, testTimeout(120000), 'producers');
    assert.equal(enqueued, TOTAL);
    await waitFor(async () => (await remaining()) === 0, {
      timeoutMs: testTimeout(120000),
      message: 'queue drained',
    });
    for (const c of live) c.send('stop');
    for (const c of live) {
      const { line } = await c.waitLine((l) => l.event === 'done' || l.event === 'error', 'done');
      assert.equal(line.event, 'done', `${c.id}: ${JSON.stringify(line)}`);
    }

    // What the consumers acknowledged.
    interface Logged {
      key: string;
      value: string;
      revision: string;
    }
    const owner = new Map<string, { child: Child; logged: Logged }>();
    for (const [child, info] of consumers) {
      for (const logged of readLog<Logged>(info.log)) {
        const seen = owner.get(logged.value);
        assert.equal(
          seen,
          undefined,
          `${logged.value} delivered twice (${child.id}, ${seen?.child.id})`,
        );
        owner.set(logged.value, { child, logged });
      }
    }

    // What etcd says: each item's delete and the receipt written in the same revision.
    const events = await history(conn, conn.root, startRevision + 1);
    const deletes = new Map<string, ObserverChange[]>();
    const receiptLease = new Map<number, string>();
    const receipts = `${conn.constructPath('__jobs.queue', 'receipts')}/`;
    for (const e of events) {
      if (e.type === 'delete' && e.key.startsWith(`${path}/`)) {
        deletes.set(e.key, [...(deletes.get(e.key) ?? []), e]);
      }
      if (e.type === 'put' && e.key.startsWith(receipts) && e.value.startsWith('w:')) {
        receiptLease.set(e.revision, e.key.slice(receipts.length).split('.')[0] ?? '');
      }
    }
    assert.equal(deletes.size, TOTAL, 'every item claimed');
    const byKey = new Map<string, Logged>();
    for (const { logged } of owner.values()) byKey.set(logged.key, logged);
    const survivorLeases = new Set<string>();
    for (const { child, logged } of owner.values()) {
      const lease = receiptLease.get(Number(logged.revision));
      assert.ok(
        lease !== undefined,
        `${logged.key}: no receipt at its claim revision ${logged.revision}; there: ${JSON.stringify(
          events.filter((e) => e.revision === Number(logged.revision)),
        )}; its delete: ${JSON.stringify(deletes.get(logged.key))}`,
      );
      if (consumers.get(child)?.killed === false) survivorLeases.add(lease);
    }
    let unacknowledged = 0;
    for (const [key, dels] of deletes) {
      assert.equal(dels.length, 1, `${key} deleted ${dels.length} times`);
      const del = dels[0];
      assert.ok(del !== undefined);
      const lease = receiptLease.get(del.revision);
      assert.ok(lease !== undefined, `${key}: claimed without a receipt`);
      const logged = byKey.get(key);
      if (logged !== undefined) {
        assert.equal(Number(logged.revision), del.revision, `${key}: logged claim revision`);
        continue;
      }
      // Claimed, never acknowledged: only a process that was killed may do that.
      unacknowledged += 1;
      assert.ok(!survivorLeases.has(lease), `${key} claimed by a living consumer and not logged`);
    }
    assert.ok(
      unacknowledged <= kills,
      `${unacknowledged} unacknowledged claims for ${kills} kills`,
    );
    assert.equal(owner.size + unacknowledged, TOTAL);
    process.stdout.write(
      `# queue faults: ${TOTAL} items, ${kills} kills, ${stops} stops, ${memberKills} member kill, ` +
        `${unacknowledged} claimed by a consumer killed before it logged\n`,
    );
  });

  void test('stm: 8 workers transfer between 10 accounts while members die -> total and balances exact', async () => {
    const ns = uniqueName('bank');
    const conn = suite.connect(ns);
    const prefix = conn.constructPath('acct');
    const ACCOUNTS = 10;
    for (let i = 0; i < ACCOUNTS; i++) await suite.client.put(`${prefix}/${i}`).value('100');
    const isolations = ['serializable-snapshot', 'serializable', 'repeatable-reads'];
    const logs: string[] = [];
    const workers = Array.from({ length: 8 }, (_, i) => {
      const log = join(dir, `bank-${ns}-${i}.log`);
      logs.push(log);
      const child = new Child(`bank-${i}`, 'toolbox-worker', [
        'bank',
        suite.etcd.endpoints.join(','),
        ns,
        prefix,
        String(ACCOUNTS),
        '40',
        isolations[i % isolations.length] ?? 'serializable-snapshot',
        log,
      ]);
      suite.defer(() => child.kill());
      return child;
    });
    const done = Promise.all(
      workers.map((w) =>
        w.waitLine(
          (l) => l.event === 'done' || l.event === 'error',
          'done',
          0,
          testTimeout(180000),
        ),
      ),
    );
    // Set when the workers are done (an object: the compiler would assume a plain let stays false).
    const state = { finished: false };
    void done.finally(() => (state.finished = true));

    // The total, read at one revision, never changes.
    const totals: number[] = [];
    const watching = (async () => {
      while (!state.finished) {
        try {
          const all = await suite.client.getAll().prefix(`${prefix}/`).strings();
          totals.push(Object.values(all).reduce((s, v) => s + Number(v), 0));
        } catch {
          // a member is down: read again
        }
        await sleep(50);
      }
    })();

    // Member faults: the leader killed and restarted, then a follower.
    for (const pick of ['leader', 'follower'] as const) {
      await sleep(1500);
      if (state.finished) break;
      const leader = await suite.etcd.leader();
      const victim = pick === 'leader' ? leader : suite.etcd.members.find((m) => m !== leader);
      assert.ok(victim !== undefined);
      await victim.kill();
      await sleep(1500);
      await victim.restart();
    }
    const results = await done;
    await watching;
    for (const { line } of results) assert.equal(line.event, 'done', JSON.stringify(line));

    const balances = await suite.client.getAll().prefix(`${prefix}/`).strings();
    const expected = new Array<number>(ACCOUNTS).fill(100);
    let transfers = 0;
    for (const log of logs) {
      for (const t of readLog<{ from: number; to: number; amount: number }>(log)) {
        expected[t.from] = (expected[t.from] ?? 0) - t.amount;
        expected[t.to] = (expected[t.to] ?? 0) + t.amount;
        transfers += 1;
      }
    }
    assert.ok(totals.length > 0);
    assert.deepEqual([...new Set(totals)], [100 * ACCOUNTS], 'the total never changed');
    for (let i = 0; i < ACCOUNTS; i++) {
      assert.equal(Number(balances[`${prefix}/${i}`]), expected[i], `account ${i}`);
    }
    process.stdout.write(
      `# stm faults: ${transfers} transfers committed, ${totals.length} checks\n`,
    );
  });
});
