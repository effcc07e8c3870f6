// Fast tests of which queue item a consumer tries to claim next: no etcd.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { IKeyValue } from 'etcd3';
import { ClaimCandidates } from '../../src/engines/claim-candidates.js';
import type { WatchEvent } from '../../src/transport/watch-types.js';

function kv(key: string, modRevision: number): IKeyValue {
  return { key: Buffer.from(key), mod_revision: String(modRevision) } as unknown as IKeyValue;
}
function event(type: 'put' | 'delete', key: string, revision: number): WatchEvent {
  return { type, key, value: '', revision, createRevision: revision, version: 1, lease: '0' };
}
/** Takes every candidate, head first: the keys in claiming order. */
function drain(c: ClaimCandidates): string[] {
  const out: string[] = [];
  while (c.length > 0) {
    const { key } = c.pick();
    out.push(key);
    c.apply([event('delete', key, 0)]);
  }
  return out;
}

void describe('claim candidates', () => {
  void test('oldest first: watch events join (puts) and leave (deletes) in mod revision order', () => {
    const c = new ClaimCandidates({ order: 'Mod' });
    c.set([kv('/q/b', 5), kv('/q/a', 7)]);
    c.apply([event('put', '/q/c', 6), event('delete', '/q/b', 8), event('put', '/q/d', 9)]);
    // A put of a key already there moves it to its new place.
    c.apply([event('put', '/q/c', 10)]);
    assert.deepEqual(drain(c), ['/q/a', '/q/d', '/q/c']);
    c.set([kv('/q/b', 5), kv('/q/a', 7)]);
    c.apply([event('put', '/q/c', 6)]);
    assert.deepEqual(drain(c), ['/q/b', '/q/c', '/q/a']);
  });

  void test('lowest key first for a priority queue', () => {
    const c = new ClaimCandidates({ order: 'Key' });
    c.set([kv('/q/10', 5)]);
    c.apply([event('put', '/q/05', 6), event('put', '/q/20', 7)]);
    assert.deepEqual(drain(c), ['/q/05', '/q/10', '/q/20']);
  });

  void test('the head until a race is lost; then spread over 4, 8, 16 of the head group', () => {
    const c = new ClaimCandidates({ order: 'Mod', group: (k) => k.slice(0, 3) });
    c.set(Array.from({ length: 20 }, (_, i) => kv(`/${i < 18 ? 'a' : 'b'}/${i}`, 10 + i)));
    const last = (): string => c.pick(() => 0.999).key;
    assert.equal(last(), '/a/0', 'no race lost: the head');
    c.lost();
    assert.equal(last(), '/a/3', 'first 4');
    c.lost();
    assert.equal(last(), '/a/7', 'first 8');
    c.lost();
    c.lost();
    assert.equal(last(), '/a/15', 'first 16 at most');
    // Only the head's group: the 'b' keys are never picked.
    c.set([kv('/a/1', 1), kv('/b/2', 2), kv('/b/3', 3)]);
    assert.equal(last(), '/a/1');
  });

  void test('eight claims in a row that land bring back strict order', () => {
    const c = new ClaimCandidates({ order: 'Mod' });
    c.set([kv('/q/a', 1), kv('/q/b', 2), kv('/q/c', 3), kv('/q/d', 4)]);
    c.lost();
    for (let i = 0; i < 7; i++) c.won();
    assert.equal(c.pick(() => 0.999).key, '/q/d', 'still spread after 7');
    c.won();
    assert.equal(c.pick(() => 0.999).key, '/q/a', 'the head after 8');
    c.clear();
    assert.equal(c.length, 0);
    assert.throws(() => c.pick());
  });
});
