/**
 * A fenced transaction is judged as of now, also when it writes nothing and a follower answers.
 * etcd 3.4 serves a transaction whose branches hold no write and no linearizable read straight
 * from the member asked, without checking with the raft leader; a follower that has not applied
 * the leader's latest writes answers from the past. A test of ours composed a token into such a
 * transaction and failed about once in twenty: the key it compared had been written a moment
 * before, through another member.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { NotLockedError } from '../src/index.js';
import { uniqueName } from '../src/testing/index.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

const ROUNDS = 100;

void describe('fenced transactions without writes', () => {
  const suite = etcdSuite({ members: 3 });

  /** The raft leader's and a follower's client URLs. */
  async function leaderAndFollower(): Promise<{ leader: string; follower: string }> {
    const leader = await suite.etcd.leader();
    const follower = suite.etcd.members.find((m) => m !== leader);
    assert.ok(follower !== undefined);
    return { leader: leader.endpoint, follower: follower.endpoint };
  }

  /** A raw client that asks `endpoint` only, closed after the suite. */
  function rawOn(endpoint: string): Etcd3 {
    const client = new Etcd3({ hosts: [endpoint] });
    suite.defer(() => {
      client.close();
    });
    return client;
  }

  test('after our key was deleted through the raft leader, a follower refuses the token', async () => {
    const { leader, follower } = await leaderAndFollower();
    // Ours asks the follower only; the key is deleted through the leader.
    const ns = uniqueName('fr');
    const conn = suite.connect(ns, { endpoints: [follower] });
    const viaLeader = rawOn(leader);
    const mutex = conn.newMutex(`/${ns}/locks/a`, { ttl: 10 });
    for (let i = 0; i < ROUNDS; i++) {
      const lock = await mutex.lock();
      await viaLeader.delete().key(lock.key);
      // Nothing to write: only "is it still mine?". (Or our watch saw the delete first: also no.)
      await assert.rejects(lock.fencedTxn([]), NotLockedError, `round ${i}`);
      await lock.unlock();
    }
  });

  test('a user transaction with the token and a read is answered as of now', async () => {
    const { leader, follower } = await leaderAndFollower();
    const ns = uniqueName('fr');
    const conn = suite.connect(ns, { endpoints: [leader] });
    const viaFollower = rawOn(follower);
    const lock = await conn.newMutex(`/${ns}/locks/b`).lock();
    for (let i = 0; i < ROUNDS; i++) {
      await lock.fencedTxn([conn.client.put(`/${ns}/data`).value(String(i))]);
      // Through the follower, right after the leader acknowledged the write.
      const res = await lock.token
        .compare(viaFollower.if(`/${ns}/data`, 'Value', '==', String(i)))
        .then(viaFollower.get(`/${ns}/data`))
        .commit();
      assert.equal(res.succeeded, true, `round ${i}`);
    }
    await lock.unlock();
  });
});
