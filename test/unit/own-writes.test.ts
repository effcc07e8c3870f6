// Fast tests of how an ephemeral key tells its own writes from others' changes: no etcd.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { IKeyValue } from 'etcd3';
import { OwnWrites, readAsEvent } from '../../src/engines/own-writes.js';
import type { KeyView } from '../../src/engines/key-ownership.js';
import type { WatchEvent } from '../../src/transport/watch-types.js';

function put(revision: number, value = 'v', lease = '100'): WatchEvent {
  return { type: 'put', key: '/k', value, revision, createRevision: 1, version: 1, lease };
}
function del(revision: number): WatchEvent {
  return {
    type: 'delete',
    key: '/k',
    value: '',
    revision,
    createRevision: 0,
    version: 0,
    lease: '0',
  };
}

/** An OwnWrites whose judge takes the events and records what was foreign. */
function journal(): { log: OwnWrites; judged: number[]; foreign: [KeyView, KeyView][] } {
  const judged: number[] = [];
  const foreign: [KeyView, KeyView][] = [];
  const log: OwnWrites = new OwnWrites(() => {
    const latest = log.take((prior, next) => foreign.push([prior, next]));
    if (latest !== undefined) judged.push(latest.revision);
  });
  return { log, judged, foreign };
}

function deferred(): { promise: Promise<number>; resolve: (n: number) => void } {
  let resolve!: (n: number) => void;
  const promise = new Promise<number>((r) => (resolve = r));
  return { promise, resolve };
}

void describe('own writes', () => {
  void test('events are judged at once while no write is in flight', () => {
    const { log, judged, foreign } = journal();
    log.begin({ present: true, lease: '100', value: 'v', revision: 5 });
    log.push([put(6, 'x')]);
    assert.deepEqual(judged, [6]);
    assert.equal(foreign.length, 1);
    assert.equal(foreign[0]?.[0].revision, 5, 'the state before the event');
    assert.equal(log.busy, false);
  });

  void test('an event that comes before the answer of our write waits, then counts as ours', async () => {
    const { log, judged, foreign } = journal();
    log.begin({ present: true, lease: '100', value: 'v', revision: 5 });
    const answer = deferred();
    const write = log.serial(async () => {
      const revision = await answer.promise;
      log.wrote(revision);
      return revision;
    });
    log.push([put(7, 'w')]);
    assert.deepEqual(judged, [], 'not judged while our write is out');
    assert.equal(log.busy, true);
    answer.resolve(7);
    assert.equal(await write, 7);
    assert.deepEqual(judged, [7]);
    assert.equal(foreign.length, 0, 'revision 7 was our write');
    assert.equal(log.replaced({ present: false, lease: '0', value: '', revision: 6 }), true);
    assert.equal(log.replaced({ present: false, lease: '0', value: '', revision: 8 }), false);
  });

  void test('writes run one at a time, in order, even after a failure', async () => {
    const { log } = journal();
    const order: string[] = [];
    const first = deferred();
    const a = log.serial(async () => {
      order.push('a start');
      await first.promise;
      order.push('a end');
      throw new Error('a failed');
    });
    const b = log.serial(() => {
      order.push('b');
      return Promise.resolve(2);
    });
    await Promise.resolve();
    assert.deepEqual(order, ['a start']);
    first.resolve(0);
    await assert.rejects(a, /a failed/);
    assert.equal(await b, 2);
    assert.deepEqual(order, ['a start', 'a end', 'b']);
  });

  void test('events at or below the state seen are skipped (a re-read overlaps them)', () => {
    const { log, judged, foreign } = journal();
    log.begin({ present: true, lease: '100', value: 'v', revision: 9 });
    log.push([put(8, 'old'), put(9, 'v'), del(10)]);
    assert.deepEqual(judged, [10]);
    assert.deepEqual(
      foreign.map(([, next]) => next.revision),
      [10],
    );
    assert.equal(log.seen.present, false);
  });

  void test('drop() and reset() forget what waits', () => {
    const { log, judged } = journal();
    const quiet = new OwnWrites(() => undefined);
    quiet.push([put(3)]);
    assert.equal(quiet.busy, true);
    quiet.drop();
    assert.equal(quiet.busy, false);
    log.wrote(12);
    log.begin({ present: true, lease: '100', value: 'v', revision: 12 });
    log.reset();
    assert.equal(log.seen.revision, 0);
    assert.equal(log.replaced({ present: true, lease: '1', value: '', revision: 1 }), false);
    assert.deepEqual(judged, []);
  });

  void test('a read stands for the events missed: a put of what it found, or a delete', () => {
    const kv = {
      key: Buffer.from('/k'),
      value: Buffer.from('v'),
      mod_revision: '7',
      create_revision: '3',
      version: '2',
      lease: '100',
    } as unknown as IKeyValue;
    assert.deepEqual(readAsEvent('/k', kv, 20), {
      type: 'put',
      key: '/k',
      value: 'v',
      revision: 7,
      createRevision: 3,
      version: 2,
      lease: '100',
    });
    assert.deepEqual(readAsEvent('/k', undefined, 20), del(20));
  });
});
