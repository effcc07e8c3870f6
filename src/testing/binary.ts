/** Locating the etcd binaries the kit runs. */
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { EtcdNotFoundError } from '../errors.js';

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Finds the `etcd` (default) or `etcdctl` binary.
 *
 * Order: the `ETCD_BIN` / `ETCDCTL_BIN` environment variable (an explicit choice is never
 * second-guessed: if it does not point at an executable file, this throws); for `etcdctl`, next to
 * `ETCD_BIN` when that is set; then every directory of `PATH`, then `/usr/bin` and
 * `/usr/local/bin` (test runners sometimes start with a reduced `PATH`).
 *
 * @returns the absolute path of the binary
 * @throws {@link EtcdNotFoundError} (code `ETCDC_ETCD_NOT_FOUND`) when it is not found
 */
export function findEtcdBinary(name: 'etcd' | 'etcdctl' = 'etcd'): string {
  const envName = name === 'etcd' ? 'ETCD_BIN' : 'ETCDCTL_BIN';
  const explicit = process.env[envName];
  if (explicit !== undefined && explicit !== '') {
    if (isExecutable(explicit)) return explicit;
    throw new EtcdNotFoundError(`${envName}=${explicit} is not an executable file`);
  }
  const dirs: string[] = [];
  const etcdBin = process.env.ETCD_BIN;
  if (name === 'etcdctl' && etcdBin !== undefined && etcdBin !== '') dirs.push(dirname(etcdBin));
  dirs.push(...(process.env.PATH ?? '').split(delimiter).filter((d) => d !== ''));
  dirs.push('/usr/bin', '/usr/local/bin');
  for (const dir of dirs) {
    const candidate = join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  throw new EtcdNotFoundError(`${name} is not on PATH, /usr/bin or /usr/local/bin`);
}
