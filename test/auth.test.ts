// etcd with authentication on: the connector's `auth` option end to end, and what an observer does
// when etcd refuses it (a typed error, never a silent stream). One etcd of its own: auth is
// cluster-wide.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import {
  EtcdConnector,
  ErrorCode,
  PermissionDeniedError,
  type ObserverEvent,
} from '../src/index.js';
import {
  enableAuth,
  startEtcd,
  testTimeout,
  withTimeout,
  type EtcdCluster,
} from '../src/testing/index.js';

describe('etcd with authentication', () => {
  let etcd: EtcdCluster;
  let root: Etcd3;
  let conn: EtcdConnector;

  before(async () => {
    etcd = await startEtcd();
    await enableAuth(etcd, {
      rootPassword: 'rootpw',
      users: [
        {
          name: 'reader',
          password: 'readerpw',
          permissions: [
            { prefix: '/auth_ns/open/', permission: 'read' },
            { prefix: '/auth_ns/open', permission: 'read' },
          ],
        },
      ],
    });
    root = new Etcd3({ hosts: etcd.endpoints, auth: { username: 'root', password: 'rootpw' } });
    conn = new EtcdConnector(etcd.endpoints, 'auth_ns', {
      auth: { username: 'reader', password: 'readerpw' },
      callTimeoutMs: 2000,
    });
  });

  after(async () => {
    await conn.close();
    root.close();
    await etcd.stop();
  });

  test('an observer with read permission sees the writes', async () => {
    const obs = conn.newObserver(conn.constructPath('open'));
    const from = Number((await root.get('/auth_ns/open').exec()).header.revision) + 1;
    await root.put('/auth_ns/open/a').value('1');
    const seen: ObserverEvent[] = [];
    await withTimeout(
      (async () => {
        for await (const ev of obs.start(from, true)) {
          seen.push(ev);
          break;
        }
      })(),
      testTimeout(10_000),
      'first event',
    );
    assert.deepEqual(
      seen.map((e) =>
        e.type === 'resync' || e.type === 'status' ? e.type : [e.type, e.key, e.value],
      ),
      [['put', '/auth_ns/open/a', '1']],
    );
  });

  for (const from of [0, 1]) {
    // 0 reads the current revision first (a refused range); 1 goes straight to the watch, which
    // etcd creates and cancels at once: both must end the stream with the typed error.
    test(`a refused observer (from ${from}) ends with PermissionDeniedError`, async () => {
      const obs = conn.newObserver(conn.constructPath('secret'));
      const err = await withTimeout(
        (async () => {
          try {
            for await (const _ of obs.start(from, true)) {
              return new Error('an event from a key we may not read');
            }
            return new Error('the stream ended without an error');
          } catch (e) {
            return e;
          }
        })(),
        testTimeout(10_000),
        'the observer to fail',
      );
      assert.ok(err instanceof PermissionDeniedError, String(err));
      assert.equal(err.code, ErrorCode.PermissionDenied);
      assert.match(err.message, /permission denied/);
      await obs.stop();
    });
  }
});
