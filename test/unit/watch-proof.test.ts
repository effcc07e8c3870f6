// Fast tests of the proof watch's bookkeeping (engines/watch-proof.ts): no etcd.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ProofWatchState } from '../../src/engines/watch-proof.js';
import type { WatchEvent } from '../../src/transport/resume-point.js';

const OURS = '/l/m/694d8a1b2c3d4e02';
const PRED = '/l/m/694d8a1b2c3d4e01';
const OTHER = '/l/m/694d8a1b2c3d4e01f'; // sorts between the two

function ev(type: 'put' | 'delete', key: string, revision: number): WatchEvent {
  return {
    type,
    key,
    value: '',
    revision,
    createRevision: type === 'put' ? revision : 0,
    version: type === 'put' ? 1 : 0,
    lease: '0',
  };
}

function created(at = 10): ProofWatchState {
  const s = new ProofWatchState(OURS, PRED);
  assert.equal(s.created(at), true);
  return s;
}

void describe('proof watch', () => {
  test('the predecessor’s delete proves, at its revision', () => {
    assert.deepEqual(created().batch([ev('delete', PRED, 12)]), { wake: true, deletedAt: 12 });
  });

  test('our own key in the same revision, before or after: no proof', () => {
    for (const batch of [
      [ev('delete', OURS, 12), ev('delete', PRED, 12)],
      [ev('delete', PRED, 12), ev('delete', OURS, 12)],
    ]) {
      assert.deepEqual(created().batch(batch), { wake: true, deletedAt: 0 });
    }
  });

  test('once our key changed, no later batch proves anything', () => {
    const s = created();
    assert.deepEqual(s.batch([ev('put', OURS, 11)]), { wake: true, deletedAt: 0 });
    assert.deepEqual(s.batch([ev('delete', PRED, 12)]), { wake: true, deletedAt: 0 });
  });

  test('a put on the predecessor wakes without proof; a key between the two is ignored', () => {
    const s = created();
    assert.deepEqual(s.batch([ev('put', PRED, 11)]), { wake: true, deletedAt: 0 });
    assert.deepEqual(s.batch([ev('put', OTHER, 12), ev('delete', OTHER, 13)]), {
      wake: false,
      deletedAt: 0,
    });
    assert.deepEqual(s.batch([ev('delete', PRED, 14)]), { wake: true, deletedAt: 14 });
  });

  test('covers a read only when created at or before it, and only the first creation counts', () => {
    const s = new ProofWatchState(OURS, PRED);
    assert.equal(s.covers(10), false, 'not created yet');
    assert.equal(s.created(10), true);
    assert.equal(s.covers(9), false, 'revision 10 passed after that read');
    assert.equal(s.covers(10), true);
    assert.equal(s.covers(11), true);
    assert.equal(s.created(15), false, 'a re-creation after a reconnect resumes');
    assert.equal(s.covers(10), true);
  });
});
