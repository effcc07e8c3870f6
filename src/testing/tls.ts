/** Throwaway TLS material for tests: CAs and certificates made with the system `openssl`. */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { EtcdStartError, InvalidArgumentError } from '../errors.js';
import { processDirRemovedAtExit } from './cleanup.js';
import type { ClientTls } from './http.js';

const run = promisify(execFile);

/** A key pair: PEM files on disk and their contents. */
export interface TlsKeyPair {
  /** Path of the PEM certificate. */
  readonly certFile: string;
  /** Path of the PEM private key (PKCS#8, ECDSA P-256). */
  readonly keyFile: string;
  /** The PEM certificate. */
  readonly cert: string;
  /** The PEM private key. */
  readonly key: string;
}

/** What {@link makeTlsMaterial} creates. Every certificate is valid for 365 days. */
export interface TlsMaterial {
  /** The directory holding every file (removed when the process exits). */
  readonly dir: string;
  /** The CA that signed `server` and `client`. */
  readonly ca: TlsKeyPair;
  /**
   * Server certificate for `127.0.0.1` and `localhost` (subjectAltName), signed by `ca`. It
   * serves as a client certificate too, without a CN: etcd's HTTP gateway dials etcd with it, and
   * so do the kit's own https polls (with auth on, etcd refuses gateway requests whose client
   * certificate has a CN).
   */
  readonly server: TlsKeyPair;
  /** Client certificate signed by `ca`, for mutual TLS; CN `clientCommonName` if given. */
  readonly client: TlsKeyPair;
  /** An unrelated CA: a client that trusts only it must fail to verify the server. */
  readonly otherCa: TlsKeyPair;
  /** A client certificate signed by `otherCa`: etcd with `clientCertAuth` must refuse it. */
  readonly otherClient: TlsKeyPair;
}

/** Options of {@link makeTlsMaterial}. */
export interface TlsMaterialOptions {
  /**
   * CN of `client` and `otherClient`, default none. With `clientCertAuth` and auth enabled,
   * etcd takes a gRPC request without a token to come from the user of that name (and refuses
   * HTTP gateway requests from the certificate). Letters, digits and `_.@:-` only.
   */
  clientCommonName?: string;
}

// One config for every step: the system's openssl.cnf may be missing or add extensions of its own.
const OPENSSL_CONFIG = `[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
`;

/** ECDSA P-256: key generation takes milliseconds (RSA takes far longer). */
const NEW_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
const DAYS = '365';

/** A random positive 120-bit serial: certificates of one CA must not share a serial. */
function serial(): string {
  const bytes = randomBytes(15);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return `0x${bytes.toString('hex')}`;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  try {
    await run('openssl', args, { cwd: dir, timeout: 30_000 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    const why =
      e.code === 'ENOENT'
        ? 'the openssl binary is not on PATH (install the openssl package)'
        : (e.stderr?.trim() ?? e.message);
    throw new EtcdStartError(`openssl ${args.join(' ')} failed: ${why}`, { cause: err });
  }
}

async function readPair(dir: string, name: string): Promise<TlsKeyPair> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const [cert, key] = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]);
  return { certFile, keyFile, cert, key };
}

async function makeCa(dir: string, name: string): Promise<TlsKeyPair> {
  // prettier-ignore
  await openssl(dir, [
    'req', '-x509', '-config', 'openssl.cnf', '-extensions', 'ca_ext', ...NEW_KEY,
    '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', DAYS,
    '-subj', `/O=etcdc-kit/CN=etcdc-kit-${name}`, '-set_serial', serial(),
  ]);
  return readPair(dir, name);
}

async function makeLeaf(
  dir: string,
  name: string,
  ca: string,
  extensions: 'server_ext' | 'client_ext',
  subject: string,
): Promise<TlsKeyPair> {
  // prettier-ignore
  await openssl(dir, [
    'req', '-new', '-config', 'openssl.cnf', ...NEW_KEY,
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject,
  ]);
  // prettier-ignore
  await openssl(dir, [
    'x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`,
    '-set_serial', serial(), '-days', DAYS, '-out', `${name}.crt`,
    '-extfile', 'openssl.cnf', '-extensions', extensions,
  ]);
  return readPair(dir, name);
}

/**
 * Creates a CA, a server certificate for 127.0.0.1/localhost and a client certificate signed by
 * it, and a second, unrelated CA with a client certificate of its own, so tests can show TLS
 * material being rejected. Keys are ECDSA P-256, made by the system `openssl` (no shell) in a
 * fresh directory that the kit removes when the process exits, like its etcd data directories.
 * Pass the result to `startEtcd({ tls })`.
 *
 * @throws {@link InvalidArgumentError} for a `clientCommonName` with other characters
 * @throws {@link EtcdStartError} when `openssl` is missing or fails (the message has its stderr)
 */
export async function makeTlsMaterial(options: TlsMaterialOptions = {}): Promise<TlsMaterial> {
  const cn = options.clientCommonName;
  if (cn !== undefined && !/^[A-Za-z0-9_.@:-]+$/.test(cn)) {
    throw new InvalidArgumentError('clientCommonName', 'letters, digits and _.@:- only');
  }
  const clientSubject = `/O=etcdc-kit-client${cn === undefined ? '' : `/CN=${cn}`}`;
  const dir = await mkdtemp(join(processDirRemovedAtExit(), 'tls-'));
  await writeFile(join(dir, 'openssl.cnf'), OPENSSL_CONFIG);
  const [ca, otherCa] = await Promise.all([makeCa(dir, 'ca'), makeCa(dir, 'other-ca')]);
  const [server, client, otherClient] = await Promise.all([
    makeLeaf(dir, 'server', 'ca', 'server_ext', '/O=etcdc-kit-server'),
    makeLeaf(dir, 'client', 'ca', 'client_ext', clientSubject),
    makeLeaf(dir, 'other-client', 'other-ca', 'client_ext', clientSubject),
  ]);
  return { dir, ca, server, client, otherCa, otherClient };
}

/** etcd3's `credentials` option (`new Etcd3({ hosts, credentials })`). */
export interface Etcd3Credentials {
  rootCertificate: Buffer;
  certChain?: Buffer;
  privateKey?: Buffer;
}

/**
 * The `credentials` an `etcd3` client needs for a cluster started with `tls`: it trusts `tls.ca`
 * and, unless `clientCert` is `false`, presents `tls.client` (needed under `clientCertAuth`,
 * ignored by etcd otherwise). For rejected material, build the object from the PEMs yourself,
 * e.g. `{ rootCertificate: Buffer.from(tls.otherCa.cert) }`.
 */
export function etcd3Credentials(
  tls: TlsMaterial,
  options: { clientCert?: boolean } = {},
): Etcd3Credentials {
  const rootCertificate = Buffer.from(tls.ca.cert);
  if (options.clientCert === false) return { rootCertificate };
  return {
    rootCertificate,
    certChain: Buffer.from(tls.client.cert),
    privateKey: Buffer.from(tls.client.key),
  };
}

/** @internal What the kit's own https polls present: the server certificate, which has no CN. */
export function kitClientTls(tls: TlsMaterial): ClientTls {
  return { ca: tls.ca.cert, cert: tls.server.cert, key: tls.server.key };
}
