// Fast tests of the ownership judgement behind self-healing ephemeral keys: no etcd.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ITxnResponse } from 'etcd3';
import {
  ABSENT,
  claimOutcome,
  claimTxn,
  deleteIfUnderTxn,
  foreignChange,
  isDesired,
  mayTake,
  viewOf,
  type KeyView,
  type Ownership,
} from '../../src/engines/key-ownership.js';

const OURS = '100';
const OLD = '99'; // a lease of ours that was lost
const OTHER = '200';
const own: Ownership = { current: OURS, value: 'v', unconfirmed: [] };

function put(lease: string, value: string, revision = 10): KeyView {
  return { present: true, lease, value, revision };
}
function del(revision = 10): KeyView {
  return { present: false, lease: '0', value: '', revision };
}

void describe('key ownership', () => {
  void test('desired: present, under our live lease, with our value', () => {
    assert.equal(isDesired(put(OURS, 'v'), own), true);
    assert.equal(isDesired(put(OURS, 'x'), own), false);
    assert.equal(isDesired(put(OTHER, 'v'), own), false);
    assert.equal(isDesired(put('0', 'v'), own), false);
    assert.equal(isDesired(del(), own), false);
    // Without a live lease nothing is as we want it.
    assert.equal(isDesired(put(OURS, 'v'), { ...own, current: undefined }), false);
  });

  void test('the rule: absent, no lease or our lease may be taken; another live lease never', () => {
    assert.equal(mayTake(del(), own), true);
    assert.equal(mayTake(ABSENT, own), true);
    assert.equal(mayTake(put('0', 'x'), own), true);
    assert.equal(mayTake(put(OURS, 'x'), own), true);
    assert.equal(mayTake(put(OTHER, 'x'), own), false);
    assert.equal(mayTake(put(OLD, 'v'), own), false);
  });

  void test('changes of our key are named', () => {
    const ours = put(OURS, 'v', 5);
    assert.equal(foreignChange(ours, del(), own), 'deleted');
    assert.equal(foreignChange(ours, put('0', 'x'), own), 'lease');
    assert.equal(foreignChange(ours, put('0', 'v'), own), 'lease');
    assert.equal(foreignChange(ours, put(OTHER, 'x'), own), 'lease');
    assert.equal(foreignChange(ours, put(OURS, 'x'), own), 'value');
  });

  void test('nothing of ours changed: not reported', () => {
    // Rewritten as we want it (e.g. a write of ours whose answer never came).
    assert.equal(foreignChange(put(OURS, 'v', 5), put(OURS, 'v'), own), undefined);
    // Another owner's key went, or that owner rewrote it.
    assert.equal(foreignChange(put(OTHER, 'x', 5), del(), own), undefined);
    assert.equal(foreignChange(put(OTHER, 'x', 5), put(OTHER, 'y'), own), undefined);
    // Someone took the key while it was absent: the put-back's KeyExistsError says it.
    assert.equal(foreignChange(del(5), put(OTHER, 'x'), own), undefined);
    // The key ended with a lease we lost: SessionLostError said it already.
    assert.equal(foreignChange(put(OLD, 'v', 5), del(), own), undefined);
    // While we have no live lease, every change is part of the loss.
    const lost = { ...own, current: undefined };
    assert.equal(foreignChange(put(OURS, 'v', 5), del(), lost), undefined);
  });

  void test('an unanswered write of ours that applies late is not someone else', () => {
    const waiting: Ownership = { ...own, value: 'v3', unconfirmed: ['v2'] };
    assert.equal(foreignChange(put(OURS, 'v1', 5), put(OURS, 'v2'), waiting), undefined);
    assert.equal(foreignChange(put(OURS, 'v1', 5), put(OURS, 'zz'), waiting), 'value');
    // Only under our lease: the same value without a lease is someone else's write.
    assert.equal(foreignChange(put(OURS, 'v1', 5), put('0', 'v2'), waiting), 'lease');
  });

  void test('watch events become views', () => {
    const base = { key: '/k', createRevision: 3, version: 1 };
    assert.deepEqual(viewOf({ ...base, type: 'put', value: 'v', revision: 7, lease: OURS }), {
      present: true,
      lease: OURS,
      value: 'v',
      revision: 7,
    });
    assert.deepEqual(viewOf({ ...base, type: 'delete', value: '', revision: 8, lease: '0' }), {
      present: false,
      lease: '0',
      value: '',
      revision: 8,
    });
  });

  void test('the claim transaction: ours or lease-less is written, another lease is read', () => {
    const key = Buffer.from('/k');
    const txn = claimTxn(key, 'v', OURS);
    assert.equal(txn.compare?.[0]?.lease, OURS);
    const nested = txn.failure?.[0]?.request_txn;
    assert.ok(nested !== undefined);
    assert.equal(nested.compare?.[0]?.lease, '0');
    assert.deepEqual(nested.failure, [{ request_range: { key } }]);
    assert.deepEqual(deleteIfUnderTxn(key, OURS).success, [{ request_delete_range: { key } }]);

    const answer = (succeeded: boolean, inner?: ITxnResponse): ITxnResponse =>
      ({
        header: { revision: '9' },
        succeeded,
        responses: inner === undefined ? [] : [{ response_txn: inner }],
      }) as unknown as ITxnResponse;
    assert.deepEqual(claimOutcome(answer(true)), { written: true });
    assert.deepEqual(claimOutcome(answer(false, answer(true))), { written: true });
    const held = {
      ...answer(false),
      responses: [{ response_range: { kvs: [{ lease: OTHER }] } }],
    } as unknown as ITxnResponse;
    assert.deepEqual(claimOutcome(answer(false, held)), { written: false, holder: OTHER });
  });
});
