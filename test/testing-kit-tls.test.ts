// The kit's TLS material, TLS members and enableAuth, against real etcd: what the tests of "etcd
// cannot be used" (wrong CA, no client cert, wrong password, no permission) build on.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { noop } from 'cockatiel';
import {
  EtcdAuthenticationFailedError,
  EtcdPermissionDeniedError,
  GRPCInvalidArgumentError,
  GRPCUnavailableError,
  Etcd3,
  type IOptions,
} from 'etcd3';
import { InvalidArgumentError, RequestFailedError } from '../src/errors.js';
import {
  enableAuth,
  etcd3Credentials,
  makeTlsMaterial,
  startEtcd,
  startEtcdCluster,
  startProxy,
  testTimeout,
  uniqueName,
  type Etcd3Credentials,
  type EtcdCluster,
  type TlsMaterial,
} from '../src/testing/index.js';

/** A client with a short per-call deadline and no retries: a refusal surfaces at once. */
function newClient(hosts: string[], options: Partial<IOptions> = {}): Etcd3 {
  return new Etcd3({
    hosts,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 3000 }),
    faultHandling: { host: () => noop, global: noop },
    ...options,
  });
}

/** Runs `fn` with a fresh client and closes it. */
async function withClient<T>(
  hosts: string[],
  options: Partial<IOptions>,
  fn: (client: Etcd3) => Promise<T>,
): Promise<T> {
  const client = newClient(hosts, options);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** Writes and reads back a key. */
async function assertServes(hosts: string[], options: Partial<IOptions>): Promise<void> {
  await withClient(hosts, options, async (client) => {
    const key = uniqueName('/tls');
    await client.put(key).value('v').exec();
    assert.equal(await client.get(key).string(), 'v');
  });
}

/** Asserts that a get through such a client is refused with `type` and a message matching `re`. */
async function assertRefused(
  hosts: string[],
  options: Partial<IOptions>,
  type: new (...args: never[]) => Error,
  re: RegExp,
  key = '/k',
): Promise<void> {
  await withClient(hosts, options, async (client) => {
    await assert.rejects(client.get(key).string(), (err: unknown) => {
      assert.ok(err instanceof type, `${String(err)} is not a ${type.name}`);
      assert.match(err.message, re);
      return true;
    });
  });
}

/** A fresh material's PEMs as etcd3 credentials, mixed as a test needs. */
function credentials(ca: string, client?: { cert: string; key: string }): Etcd3Credentials {
  const rootCertificate = Buffer.from(ca);
  if (client === undefined) return { rootCertificate };
  return {
    rootCertificate,
    certChain: Buffer.from(client.cert),
    privateKey: Buffer.from(client.key),
  };
}

// grpc-js reports TLS failures as UNAVAILABLE, with the OpenSSL reason in the message.
const UNVERIFIED_SERVER = /UNAVAILABLE.*unable to verify the first certificate/;
const REFUSED_CLIENT_CERT = /UNAVAILABLE.*alert bad certificate/;

void describe('makeTlsMaterial', () => {
  void test('a CA, a server and a client cert signed by it, and an unrelated CA', async () => {
    const tls = await makeTlsMaterial();
    const ca = new X509Certificate(tls.ca.cert);
    const otherCa = new X509Certificate(tls.otherCa.cert);
    const server = new X509Certificate(tls.server.cert);
    assert.ok(ca.ca && otherCa.ca);
    assert.equal(server.subjectAltName, 'IP Address:127.0.0.1, DNS:localhost');
    assert.ok(server.checkIssued(ca) && server.verify(ca.publicKey));
    assert.ok(!server.verify(otherCa.publicKey));
    assert.ok(new X509Certificate(tls.client.cert).verify(ca.publicKey));
    assert.ok(new X509Certificate(tls.otherClient.cert).verify(otherCa.publicKey));
    assert.equal(server.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.equal(readFileSync(tls.server.keyFile, 'utf8'), tls.server.key);
    assert.ok(tls.ca.certFile.startsWith(tls.dir));
  });

  void test('clientCommonName names the client certificates', async () => {
    const tls = await makeTlsMaterial({ clientCommonName: 'alice' });
    assert.match(new X509Certificate(tls.client.cert).subject, /^CN=alice$/m);
    assert.match(new X509Certificate(tls.otherClient.cert).subject, /^CN=alice$/m);
    await assert.rejects(makeTlsMaterial({ clientCommonName: 'a/b' }), InvalidArgumentError);
  });

  void test('clientCertAuth without tls is refused before anything starts', async () => {
    await assert.rejects(startEtcd({ clientCertAuth: true }), InvalidArgumentError);
  });
});

void describe('a TLS member', () => {
  let tls: TlsMaterial;
  let etcd: EtcdCluster;

  before(async () => {
    tls = await makeTlsMaterial();
    etcd = await startEtcd({ tls });
  });

  after(() => etcd.stop());

  void test('serves https to a client that trusts the CA', async () => {
    assert.match(etcd.endpoints[0] ?? '', /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(etcd.tls, tls);
    await assertServes(etcd.endpoints, { credentials: etcd3Credentials(tls) });
  });

  void test('a client that trusts only the other CA fails', async () => {
    await assertRefused(
      etcd.endpoints,
      { credentials: credentials(tls.otherCa.cert) },
      GRPCUnavailableError,
      UNVERIFIED_SERVER,
    );
  });

  void test('a fault proxy passes TLS through', async (t) => {
    const proxy = await startProxy(etcd.endpoints[0] ?? '');
    t.after(() => proxy.close());
    assert.match(proxy.endpoint, /^https:/);
    await assertServes([proxy.endpoint], { credentials: etcd3Credentials(tls) });
  });

  void test('restart keeps serving TLS on the same endpoint', async () => {
    const member = etcd.members[0];
    assert.ok(member);
    const before = member.pid;
    await member.restart();
    assert.notEqual(member.pid, before);
    await assertServes(etcd.endpoints, { credentials: etcd3Credentials(tls) });
  });
});

void describe('a 3-member cluster with clientCertAuth', () => {
  let tls: TlsMaterial;
  let cluster: EtcdCluster;
  const creds = (): Etcd3Credentials => etcd3Credentials(tls);

  before(async () => {
    tls = await makeTlsMaterial({ clientCommonName: 'cn-user' });
    cluster = await startEtcdCluster(3, { tls, clientCertAuth: true });
  });

  after(() => cluster.stop());

  void test('a client needs a certificate signed by the CA', async () => {
    assert.ok(cluster.clientCertAuth);
    await assertServes(cluster.endpoints, { credentials: creds() });
    await assertRefused(
      cluster.endpoints,
      { credentials: etcd3Credentials(tls, { clientCert: false }) },
      GRPCUnavailableError,
      REFUSED_CLIENT_CERT,
    );
    await assertRefused(
      cluster.endpoints,
      { credentials: credentials(tls.ca.cert, tls.otherClient) },
      GRPCUnavailableError,
      REFUSED_CLIENT_CERT,
    );
  });

  void test('leader() and a leader restart work over mutual TLS', async () => {
    const leader = await cluster.leader();
    await leader.kill();
    await cluster.leader(testTimeout(15000));
    await leader.restart();
    await cluster.waitHealthy();
    await assertServes([leader.endpoint], { credentials: creds() });
  });

  // Last: auth stays on for the rest of the cluster's life.
  void test('enableAuth over mutual TLS; the certificate CN is a user', async () => {
    const ns = `/${uniqueName('cn')}/`;
    await enableAuth(cluster, {
      rootPassword: 'rootpw',
      users: [
        { name: 'cn-user', password: 'pw', permissions: [{ prefix: ns, permission: 'read' }] },
      ],
    });
    const root = { credentials: creds(), auth: { username: 'root', password: 'rootpw' } };
    await withClient(cluster.endpoints, root, (c) => c.put(`${ns}a`).value('1').exec());
    // No password: etcd takes the request to come from the certificate's CN.
    await withClient(cluster.endpoints, { credentials: creds() }, async (c) => {
      assert.equal(await c.get(`${ns}a`).string(), '1');
    });
    await assertRefused(
      cluster.endpoints,
      { credentials: creds() },
      EtcdPermissionDeniedError,
      /permission denied/,
      '/elsewhere',
    );
  });
});

void describe('enableAuth', () => {
  let etcd: EtcdCluster;
  const ns = `/${uniqueName('auth')}`;

  before(async () => {
    etcd = await startEtcd();
    await enableAuth(etcd, {
      rootPassword: 'rootpw',
      roles: [{ name: 'shared', permissions: [{ key: `${ns}/shared`, permission: 'read' }] }],
      users: [
        {
          name: 'alice',
          password: 'alicepw',
          permissions: [{ prefix: `${ns}/alice/`, permission: 'readwrite' }],
          roles: ['shared'],
        },
        { name: 'nobody', password: 'nobodypw' },
      ],
    });
  });

  after(() => etcd.stop());

  const as = (username: string, password: string): Partial<IOptions> => ({
    auth: { username, password },
  });

  void test('the root user reads and writes anywhere', async () => {
    await withClient(etcd.endpoints, as('root', 'rootpw'), async (c) => {
      await c.put(`${ns}/elsewhere`).value('e').exec();
      assert.equal(await c.get(`${ns}/elsewhere`).string(), 'e');
    });
  });

  void test('a user sees only what it was granted', async () => {
    await withClient(etcd.endpoints, as('root', 'rootpw'), (c) =>
      c.put(`${ns}/shared`).value('s').exec(),
    );
    await withClient(etcd.endpoints, as('alice', 'alicepw'), async (c) => {
      await c.put(`${ns}/alice/x`).value('1').exec();
      assert.equal(await c.get(`${ns}/alice/x`).string(), '1');
      assert.equal(await c.get(`${ns}/shared`).string(), 's'); // through the role "shared"
      await assert.rejects(c.put(`${ns}/shared`).value('2').exec(), EtcdPermissionDeniedError);
    });
    await assertRefused(
      etcd.endpoints,
      as('alice', 'alicepw'),
      EtcdPermissionDeniedError,
      /^7 PERMISSION_DENIED: etcdserver: permission denied$/,
      `${ns}/elsewhere`,
    );
    await assertRefused(
      etcd.endpoints,
      as('nobody', 'nobodypw'),
      EtcdPermissionDeniedError,
      /permission denied/,
      `${ns}/alice/x`,
    );
  });

  void test('a wrong password or no credentials fail', async () => {
    await assertRefused(
      etcd.endpoints,
      as('alice', 'wrong'),
      EtcdAuthenticationFailedError,
      /^3 INVALID_ARGUMENT: etcdserver: authentication failed, invalid user ID or password$/,
    );
    await assertRefused(
      etcd.endpoints,
      {},
      GRPCInvalidArgumentError,
      /etcdserver: user name is empty/,
    );
  });

  void test('mistakes are reported as typed errors', async () => {
    await assert.rejects(
      enableAuth(etcd, { rootPassword: 'x', users: [{ name: 'u', password: 'p', roles: ['no'] }] }),
      InvalidArgumentError,
    );
    // Auth is on already: etcd refuses the kit's unauthenticated setup.
    await assert.rejects(enableAuth(etcd, { rootPassword: 'x' }), (err: unknown) => {
      assert.ok(err instanceof RequestFailedError, String(err));
      assert.match(err.message, /^enableAuth: creating role root: .*user name is empty/);
      return true;
    });
  });
});
