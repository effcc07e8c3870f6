// Fast tests of the multiplexer's resume bookkeeping: no etcd.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { IEvent, IWatchResponse } from 'etcd3';
import { applyResponse, matchCreated, type ResumePoint } from '../../src/transport/resume-point.js';

function ev(revision: number, type: 'Put' | 'Delete' = 'Put', key = `k${revision}`): IEvent {
  return {
    type,
    kv: {
      key: Buffer.from(key),
      value: Buffer.from(type === 'Put' ? `v${revision}` : ''),
      create_revision: String(revision),
      mod_revision: String(revision),
      version: '1',
      lease: '0',
    },
    prev_kv: undefined as unknown as IEvent['prev_kv'],
  };
}

function res(
  events: IEvent[],
  opts: { fragment?: boolean; header?: number } = {},
): Pick<IWatchResponse, 'fragment' | 'events' | 'header'> {
  return {
    fragment: opts.fragment ?? false,
    events,
    header: { revision: String(opts.header ?? 0) } as IWatchResponse['header'],
  };
}

function revisions(d: ReturnType<typeof applyResponse>): number[] {
  return d.kind === 'events' ? d.events.map((e) => e.revision) : [];
}

void describe('resume point', () => {
  void test('events move the resume point to the last delivered + 1', () => {
    const p: ResumePoint = { next: 5, fragments: undefined };
    assert.deepEqual(revisions(applyResponse(p, res([ev(5), ev(6), ev(9)]))), [5, 6, 9]);
    assert.equal(p.next, 10);
  });

  void test('a replay after a reconnect repeats nothing', () => {
    const p: ResumePoint = { next: 10, fragments: undefined };
    assert.deepEqual(revisions(applyResponse(p, res([ev(8), ev(9), ev(10), ev(11)]))), [10, 11]);
    assert.equal(p.next, 12);
    assert.deepEqual(applyResponse(p, res([ev(11)])), { kind: 'none' });
    assert.equal(p.next, 12);
  });

  void test('events of one revision stay together', () => {
    const p: ResumePoint = { next: 3, fragments: undefined };
    const d = applyResponse(p, res([ev(3, 'Put', 'a'), ev(3, 'Delete', 'b')]));
    assert.deepEqual(d.kind === 'events' ? d.events.map((e) => [e.revision, e.type, e.key]) : [], [
      [3, 'put', 'a'],
      [3, 'delete', 'b'],
    ]);
    assert.equal(p.next, 4);
  });

  void test('fragments are held until the last one', () => {
    const p: ResumePoint = { next: 1, fragments: undefined };
    assert.deepEqual(applyResponse(p, res([ev(7, 'Put', 'a')], { fragment: true })), {
      kind: 'none',
    });
    assert.deepEqual(applyResponse(p, res([ev(7, 'Put', 'b')], { fragment: true })), {
      kind: 'none',
    });
    assert.equal(p.next, 1, 'nothing delivered yet');
    const d = applyResponse(p, res([ev(7, 'Put', 'c')]));
    assert.deepEqual(d.kind === 'events' ? d.events.map((e) => e.key) : [], ['a', 'b', 'c']);
    assert.equal(p.fragments, undefined);
    assert.equal(p.next, 8);
  });

  void test('a fragment of more events than a call takes arguments', () => {
    // 200,000 deletes of short keys fit in one of etcd's 1.5 MiB fragments.
    const p: ResumePoint = { next: 1, fragments: undefined };
    const many = Array.from({ length: 200_000 }, (_, i) => ev(7, 'Delete', `k${i}`));
    assert.deepEqual(applyResponse(p, res(many, { fragment: true })), { kind: 'none' });
    const d = applyResponse(p, res([ev(7, 'Delete', 'last')]));
    assert.equal(d.kind === 'events' ? d.events.length : 0, 200_001);
    assert.equal(p.next, 8);
  });

  void test('a progress notification moves the resume point forward only', () => {
    const p: ResumePoint = { next: 20, fragments: undefined };
    assert.deepEqual(applyResponse(p, res([], { header: 30 })), { kind: 'progress', revision: 30 });
    assert.equal(p.next, 31);
    applyResponse(p, res([], { header: 25 }));
    assert.equal(p.next, 31, 'never backwards');
  });

  void test('a created answer belongs to its id, else to the oldest create waiting', () => {
    const a = { id: '1' };
    const b = { id: '2' };
    const byId = (id: string) => [a, b].find((x) => x.id === id);
    assert.equal(matchCreated([a, b], byId, '2'), b);
    assert.equal(matchCreated([a, b], byId, '-1'), a, 'a refusal carries no id');
    assert.equal(matchCreated([a, b], byId, '77'), a, 'an etcd that picks its own ids');
    assert.equal(matchCreated([b], byId, '1'), b, 'an id whose create was answered already');
    assert.equal(matchCreated([], byId, '1'), undefined);
  });
});
