// The chaos checker. Holds: exclusion per recipe (mutex, semaphore, RWMutex, MultiLock,
// leadership, leader work through run()), grants after the deadline, and early revocations told apart from double holders.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { check, holds } from '../../chaos/checker.js';
import type { ChaosRecord, HistoryRecord } from '../../chaos/records.js';
import { P, cleanRun, failing, failedRows, h } from '../fixtures/chaos-run.js';

void describe('chaos checker: holds', () => {
  void test('a leader that regains its token after a suspension holds again (no false alarm)', () => {
    const records = cleanRun();
    const gained = records.find((r) => r.kind === 'lead.gained');
    assert.ok(gained?.kind === 'lead.gained');
    const at = gained.t;
    const again = (dt: number, r: Record<string, unknown>): ChaosRecord =>
      ({ w: gained.w, inc: gained.inc, t: at + dt, token: gained.token, ...r }) as ChaosRecord;
    records.push(
      again(1, { kind: 'lead.ended', how: 'suspended' }),
      { kind: 'fault', phase: 'start', fault: 'proxy-delay', target: 'w2', id: 9, t: at + 2 },
      again(3, { kind: 'lead.gained', key: gained.key, deadlineAt: at + 3000 }),
      { kind: 'fault', phase: 'end', fault: 'proxy-delay', target: 'w2', id: 9, t: at + 4 },
    );
    records.sort((a, b) => a.t - b.t);
    const list = holds(records, 'lead.gained', 'lead.ended');
    assert.deepEqual(
      list.map((h) => [h.end - at, h.how]),
      [
        [1, 'suspended'],
        [3000, 'deadline'],
      ],
    );
    assert.deepEqual(failing(records), []);
  });

  void test('a planted double holder is reported', () => {
    const records = cleanRun();
    // w2 claims the lock while w1's hold is still valid (its deadline is later).
    const acquired = records.findIndex(
      (r) => r.kind === 'lock.acquired' && 'w' in r && r.w === 'w1',
    );
    const at = records[acquired];
    assert.ok(at !== undefined);
    records.splice(acquired + 1, 0, {
      kind: 'lock.acquired',
      w: 'w2',
      inc: 0,
      t: at.t + 1,
      token: '999',
      key: '/c/lock/zz',
      deadlineAt: at.t + 5000,
    });
    const failed = failing(records);
    assert.ok(
      failed.some(
        (v) =>
          v.name === 'mutual exclusion: lock holders' &&
          (v.violations[0] ?? '').includes('overlap'),
      ),
      JSON.stringify(failed),
    );
  });

  void test('a second term of leader work (run) beside the first, and its write, are reported', () => {
    const records = cleanRun();
    const started = records.find((r) => r.kind === 'run.started');
    assert.ok(started?.kind === 'run.started');
    // w2's fn starts while w1's still runs (w1's key not deleted), and writes under its token.
    const key = h('put', '/c/run-election/b2', 'w2');
    records.push(
      { ...key, t: started.t + 0.5, revision: Number(started.token) + 0.25 },
      {
        kind: 'run.started',
        w: 'w2',
        inc: 0,
        t: started.t + 1,
        token: String(Number(started.token) + 0.25),
        key: key.key,
        deadlineAt: started.t + 3000,
      },
    );
    records.sort((a, b) => a.t - b.t);
    const rows = failedRows(records);
    assert.ok(
      rows.some((r) => r.startsWith('mutual exclusion: leader work terms (run): w2#0')),
      rows.join('\n'),
    );
  });

  void test('a lock granted after its session deadline is reported, overlap or not', () => {
    const records = cleanRun();
    const acquired = records.find((r) => r.kind === 'lock.acquired');
    assert.ok(acquired?.kind === 'lock.acquired');
    // As seed 6001: the join's answer handled 1.3 s after the deadline.
    acquired.deadlineAt = acquired.t - 1300;
    const failed = failing(records).find((v) => v.name.startsWith('locks granted before'));
    assert.equal(failed?.violationCount, 1, JSON.stringify(failed));
    assert.match(failed.violations[0] ?? '', /1300\.0 ms after its session's deadline/);
  });

  void test('a grant before the deadline logged after it (a worker paused between) is no late grant', () => {
    const records = cleanRun();
    const acquired = records.find((r) => r.kind === 'lock.acquired');
    assert.ok(acquired?.kind === 'lock.acquired');
    // Seed 9012: granted 1 ms before the deadline, logged 4.2 s later (paused in between).
    acquired.deadlineAt = acquired.t - 4200;
    acquired.grantedAt = acquired.deadlineAt - 1;
    assert.deepEqual(failedRows(records), []);
    // Granted after it: reported, at the grant.
    acquired.grantedAt = acquired.deadlineAt + 20;
    const rows = failedRows(records);
    assert.equal(rows.length, 1, rows.join('\n'));
    assert.match(rows[0] ?? '', /20\.0 ms after its session's deadline/);
  });

  /** Plants a hold of `recipe` by w3 that begins 1 ms after the first hold of `after` began. */
  function plantBeside(
    records: ChaosRecord[],
    after: string,
    recipe: string,
    key = '/c/x/w3',
  ): ChaosRecord[] {
    const first = records.find(
      (r) => r.kind === 'lock.acquired' && (r.recipe ?? 'mutex') === after,
    );
    assert.ok(first?.kind === 'lock.acquired');
    records.push({
      kind: 'lock.acquired',
      w: 'w3',
      inc: 0,
      t: first.t + 1,
      recipe: recipe as 'read',
      token: '998',
      key,
      lease: 'c3',
      deadlineAt: first.t + 5000,
    });
    return records.sort((a, b) => a.t - b.t);
  }

  void test('a third holder of the two semaphore permits is reported; two are not', () => {
    // The clean run's two permits are held at once: fine. A third beside the first two is not.
    const rows = failedRows(plantBeside(cleanRun(), 'semaphore', 'semaphore'));
    assert.equal(rows.length, 1, rows.join('\n'));
    // Three at once: the last of them to begin is reported beside the two before it.
    assert.match(rows[0] ?? '', /^semaphore: at most 2 permit holders: w2#0 .* began .* beside /);
    for (const who of ['w1#0 (semaphore token', 'w3#0 (semaphore token 998']) {
      assert.ok(rows[0]?.includes(who), rows[0]);
    }
  });

  void test('a writer beside readers, a reader beside a writer and a second writer are reported', () => {
    // The clean run's two readers hold together: fine.
    for (const [after, recipe] of [
      ['read', 'write'],
      ['write', 'read'],
      ['write', 'write'],
    ] as const) {
      const rows = failedRows(plantBeside(cleanRun(), after, recipe));
      assert.equal(rows.length, 1, `${recipe} beside ${after}: ${rows.join('\n')}`);
      assert.match(
        rows[0] ?? '',
        new RegExp(
          `^RWMutex: readers together, a writer alone: w3#0 \\(${recipe} token 998\\) began .* beside w1#0 \\(${after} token`,
        ),
      );
    }
  });

  void test('a MultiLock beside another on one of its paths is reported; on other paths it is not', () => {
    const rows = failedRows(plantBeside(cleanRun(), 'multi', 'multi', '/c/multi/a/c3'));
    assert.equal(rows.length, 1, rows.join('\n'));
    assert.match(
      rows[0] ?? '',
      /^MultiLock: one holder per path: w3#0 \(multi token 998\) began .* beside w1#0 \(multi token/,
    );
    assert.deepEqual(failedRows(plantBeside(cleanRun(), 'multi', 'multi', '/c/multi/d/c3')), []);
  });

  void test('a semaphore permit granted after its session deadline is reported', () => {
    const records = cleanRun();
    const permit = records.find((r) => r.kind === 'lock.acquired' && r.recipe === 'semaphore');
    assert.ok(permit?.kind === 'lock.acquired');
    permit.deadlineAt = permit.t - 10;
    assert.deepEqual(
      failing(records).map((v) => v.name),
      ["locks granted before their session's deadline"],
    );
  });

  /**
   * w2 leads (key /c/election/b2, lease b2, deadline 3 s on); `how` ends its key 20 ms in; w1
   * leads from 30 ms in.
   */
  function secondLeader(
    how:
      | 'revoked'
      | 'revoked, seen late'
      | 'revoked, an earlier delete recorded late'
      | 'revoked, loss logged before the recorder saw it'
      | 'revoked, recorded after the next grant'
      | 'single delete'
      | 'revoked after own close',
    grantRevision = 501,
  ): ChaosRecord[] {
    const records = cleanRun();
    const gained = records.find((r) => r.kind === 'lead.gained');
    assert.ok(gained?.kind === 'lead.gained');
    const at = gained.t;
    const del = (key: string): HistoryRecord => ({
      kind: 'history',
      t: at + 20,
      type: 'delete',
      key,
      value: '',
      revision: 500,
      createRevision: 0,
      version: 0,
    });
    // A lease revocation deletes every key of the lease in one revision.
    records.push(del('/c/election/b2'));
    if (how !== 'single delete') records.push(del('/c/lock/b2'));
    if (how === 'revoked, seen late') {
      // The holder notices the revocation only after the next leader took over.
      const late = { w: 'w2', inc: 0, t: at + 35, token: gained.token };
      records.push({ ...late, kind: 'lead.ended', how: 'lost' });
    }
    if (how === 'revoked, an earlier delete recorded late') {
      // The recorder, behind, logs the previous holder's release of the same key (a revision
      // before w2's) only after w2 logged its hold.
      const before = Number(gained.token) - 1;
      records.push({ ...del('/c/election/b2'), t: at + 5, revision: before });
    }
    if (how === 'revoked, loss logged before the recorder saw it') {
      // Seed 7003: the holder hears from etcd that its lease is gone (so after the revocation)
      // and logs the loss before the recorder, behind, logs the deletes.
      records.push({ kind: 'session', w: 'w2', inc: 0, t: at + 15, lease: 'b2', state: 'lost' });
    }
    if (how === 'revoked, recorded after the next grant') {
      // Seed 9001: the recorder, behind, logs the revocation after w1's grant (read at a later
      // revision) and after w2's refused fenced write ended its hold.
      for (const r of records) if (r.kind === 'history' && r.revision === 500) r.t = at + 38;
      const late = { w: 'w2', inc: 0, t: at + 36, token: gained.token };
      records.push({ ...late, kind: 'lead.ended', how: 'NotLeaderError' });
    }
    if (how === 'revoked after own close') {
      records.push({ kind: 'session', w: 'w2', inc: 0, t: at + 15, lease: 'b2', state: 'closed' });
    }
    const w1 = (dt: number, r: Record<string, unknown>): ChaosRecord =>
      ({ w: 'w1', inc: 0, t: at + dt, token: '501', ...r }) as ChaosRecord;
    records.push(
      { ...del('/c/election/a9'), type: 'put', value: 'w1', revision: 501, t: at + 29 },
      w1(30, {
        kind: 'lead.gained',
        key: '/c/election/a9',
        deadlineAt: at + 3030,
        revision: grantRevision,
      }),
      w1(40, { kind: 'lead.ended', how: 'released' }),
    );
    return records.sort((a, b) => a.t - b.t);
  }

  void test("a lease etcd revoked before the TTL it acknowledged is etcd's bug, shown in its own row", () => {
    for (const how of [
      'revoked',
      'revoked, seen late',
      'revoked, an earlier delete recorded late',
      'revoked, loss logged before the recorder saw it',
      'revoked, recorded after the next grant',
    ] as const) {
      const verdicts = check(secondLeader(how), P);
      assert.deepEqual(
        verdicts.filter((v) => !v.ok).map((v) => v.name),
        [],
        how,
      );
      const row = verdicts.find((v) => v.name.startsWith('etcd kept every lease'));
      assert.equal(row?.violationCount, 2, JSON.stringify(row)); // w2's leadership and lock
      assert.match(row.knownIssue ?? '', /#15247/);
      assert.match(row.violations.join('\n'), /leadership of w2#0 .* revoked at revision 500/);
    }
    // Not etcd's doing: one key deleted (a client's delete), or a revocation after the holder
    // closed its session (it revokes its lease itself then): two leaders.
    for (const how of ['single delete', 'revoked after own close'] as const) {
      const bad = failing(secondLeader(how)).map((v) => v.name);
      assert.deepEqual(bad, ['mutual exclusion: leaders'], how);
    }
    // A grant read before the revocation's revision proves nothing: two leaders.
    const before = failing(secondLeader('revoked, recorded after the next grant', 499));
    assert.deepEqual(
      before.map((v) => v.name),
      ['mutual exclusion: leaders'],
    );
  });
});
