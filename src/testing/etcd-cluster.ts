/** Starting real etcd clusters on loopback for tests. */
import { rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { findEtcdBinary } from './binary.js';
import {
  getProcessDir,
  keepProcessDirAtExit,
  processTag,
  registerOutsideDir,
  unregisterOutsideDir,
} from './cleanup.js';
import { EtcdMemberImpl, type EtcdMember } from './etcd-member.js';
import { releasePorts, reservePorts } from './ports.js';
import { kitClientTls, type TlsMaterial } from './tls.js';
import { testTimeout, waitFor } from './wait.js';

/** How to run etcd. Every field is optional. */
export interface EtcdOptions {
  /** `--heartbeat-interval` in ms, default 100. */
  heartbeatIntervalMs?: number;
  /** `--election-timeout` in ms, default 1000. */
  electionTimeoutMs?: number;
  /** `--auto-compaction-mode`. */
  autoCompactionMode?: 'periodic' | 'revision';
  /** `--auto-compaction-retention`, e.g. `'1h'` (periodic) or `'1000'` (revision). */
  autoCompactionRetention?: string;
  /** `--experimental-watch-progress-notify-interval` in ms (etcd 3.4.11+). */
  progressNotifyIntervalMs?: number;
  /** More etcd flags, passed through verbatim after the kit's own. */
  extraArgs?: string[];
  /** How long a start may take, default `testTimeout(20000)`. Also used by `restart()`. */
  startTimeoutMs?: number;
  /** Where cluster directories go, default a per-process directory under `os.tmpdir()`. */
  dataDirParent?: string;
  /**
   * etcd's `--log-level`, default `'error'`. etcd's output goes to `etcd.log` next to each data
   * dir; it is kept only when a start fails (its tail is then in the error message).
   */
  logLevel?: string;
  /**
   * Serve clients over TLS with `tls.server` (e.g. from `makeTlsMaterial()`): endpoints are
   * `https://127.0.0.1:PORT`. Peer traffic stays plain http.
   */
  tls?: TlsMaterial;
  /**
   * With `tls`: require client certificates signed by `tls.ca` (`--client-cert-auth
   * --trusted-ca-file`).
   */
  clientCertAuth?: boolean;
}

/** A running etcd cluster of one or more members, all on 127.0.0.1. */
export interface EtcdCluster extends AsyncDisposable {
  /** The members, in start order. */
  readonly members: readonly EtcdMember[];
  /** Client URLs of all members (`http://127.0.0.1:PORT`, `https://` with `tls`), in order. */
  readonly endpoints: string[];
  /** The `tls` option the cluster was started with. */
  readonly tls: TlsMaterial | undefined;
  /** Whether members require client certificates (the `clientCertAuth` option). */
  readonly clientCertAuth: boolean;
  /**
   * The current raft leader: a reachable member whose status says it leads, with no reachable
   * member naming another leader. Waits (default `testTimeout(10000)`) until there is one.
   *
   * @throws {@link TimeoutError} when no leader is found in time
   */
  leader(timeoutMs?: number): Promise<EtcdMember>;
  /**
   * Waits (default `testTimeout(20000)`) until every running, not paused member answers
   * `GET /health` with `{"health":"true"}` (which needs a leader and quorum).
   *
   * @throws {@link TimeoutError} when that does not happen in time
   */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /**
   * SIGKILLs every member (paused ones too), waits for them to exit and removes the data dirs.
   * Idempotent, never throws; `[Symbol.asyncDispose]` does the same.
   */
  stop(): Promise<void>;
}

let clusterCounter = 0;
const MAX_PORT_ATTEMPTS = 5;

class Cluster implements EtcdCluster {
  readonly members: readonly EtcdMemberImpl[];
  readonly tls: TlsMaterial | undefined;
  readonly clientCertAuth: boolean;
  readonly #dir: string;
  readonly #ports: number[];
  #stopping: Promise<void> | undefined;

  constructor(members: EtcdMemberImpl[], dir: string, ports: number[], options: EtcdOptions) {
    this.members = members;
    this.tls = options.tls;
    this.clientCertAuth = options.clientCertAuth ?? false;
    this.#dir = dir;
    this.#ports = ports;
  }

  get endpoints(): string[] {
    return this.members.map((m) => m.endpoint);
  }

  #reachable(): EtcdMemberImpl[] {
    return this.members.filter((m) => m.running && !m.paused);
  }

  async leader(timeoutMs = testTimeout(10000)): Promise<EtcdMember> {
    return waitFor(
      async () => {
        const statuses = await Promise.all(
          this.#reachable().map(async (member) => {
            try {
              return { member, ...(await member.status(1000)) };
            } catch {
              return undefined;
            }
          }),
        );
        const known = statuses.filter((s) => s !== undefined);
        const leader = known.find((s) => s.memberId === s.leaderId);
        if (leader === undefined) return undefined;
        // A deposed leader that was paused may still believe it leads for a moment.
        const disagree = known.some((s) => s.leaderId !== '0' && s.leaderId !== leader.memberId);
        return disagree ? undefined : leader.member;
      },
      { timeoutMs, intervalMs: 50, message: 'an etcd leader' },
    );
  }

  async waitHealthy(timeoutMs = testTimeout(20000)): Promise<void> {
    await waitFor(
      async () => {
        const health = await Promise.all(this.#reachable().map((m) => m.healthy()));
        return health.every(Boolean);
      },
      { timeoutMs, intervalMs: 50, message: 'every running etcd member to be healthy' },
    );
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    try {
      for (const member of this.members) member.close();
      await Promise.all(this.members.map((m) => m.kill()));
      await rm(this.#dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // stop never throws: a leftover directory is removed at process exit at the latest
    } finally {
      unregisterOutsideDir(this.#dir);
      releasePorts(this.#ports);
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

function etcdArgs(
  options: EtcdOptions,
  spec: { name: string; clientPort: number; peerPort: number; dataDir: string },
  initialCluster: string,
  token: string,
): string[] {
  const client = `${options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${spec.clientPort}`;
  const peer = `http://127.0.0.1:${spec.peerPort}`;
  const args = [
    `--name=${spec.name}`,
    `--data-dir=${spec.dataDir}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=${initialCluster}`,
    `--initial-cluster-token=${token}`,
    '--initial-cluster-state=new',
    `--heartbeat-interval=${options.heartbeatIntervalMs ?? 100}`,
    `--election-timeout=${options.electionTimeoutMs ?? 1000}`,
    '--logger=zap',
    '--log-outputs=stderr',
    `--log-level=${options.logLevel ?? 'error'}`,
  ];
  if (options.tls !== undefined) {
    args.push(
      `--cert-file=${options.tls.server.certFile}`,
      `--key-file=${options.tls.server.keyFile}`,
    );
    if (options.clientCertAuth === true) {
      args.push('--client-cert-auth', `--trusted-ca-file=${options.tls.ca.certFile}`);
    }
  }
  if (options.autoCompactionMode !== undefined) {
    args.push(`--auto-compaction-mode=${options.autoCompactionMode}`);
  }
  if (options.autoCompactionRetention !== undefined) {
    args.push(`--auto-compaction-retention=${options.autoCompactionRetention}`);
  }
  if (options.progressNotifyIntervalMs !== undefined) {
    args.push(
      `--experimental-watch-progress-notify-interval=${options.progressNotifyIntervalMs}ms`,
    );
  }
  args.push(...(options.extraArgs ?? []));
  return args;
}

/** One attempt on fresh ports. Failing members are killed before this rejects. */
async function tryStart(
  binary: string,
  n: number,
  options: EtcdOptions,
  startTimeoutMs: number,
): Promise<{ cluster?: Cluster; error?: unknown; portTaken: boolean; dir: string }> {
  const ports = await reservePorts(2 * n);
  clusterCounter += 1;
  const token = `${processTag}-c${clusterCounter}`;
  const parent = options.dataDirParent ?? getProcessDir();
  const dir = join(parent, token);
  if (options.dataDirParent !== undefined) registerOutsideDir(dir);
  const specs = Array.from({ length: n }, (_, i) => {
    const name = `m${i}`;
    const memberDir = join(dir, name);
    return {
      name,
      clientPort: ports[2 * i] ?? 0,
      peerPort: ports[2 * i + 1] ?? 0,
      dir: memberDir,
      dataDir: join(memberDir, 'data'),
      logFile: join(memberDir, 'etcd.log'),
    };
  });
  const initialCluster = specs.map((s) => `${s.name}=http://127.0.0.1:${s.peerPort}`).join(',');
  const members = specs.map(
    (s) =>
      new EtcdMemberImpl({
        ...s,
        binary,
        args: etcdArgs(options, s, initialCluster, token),
        startTimeoutMs,
        clientTls: options.tls === undefined ? undefined : kitClientTls(options.tls),
      }),
  );
  const cluster = new Cluster(members, dir, ports, options);
  try {
    // All at once: members of a new cluster wait for each other to form quorum.
    for (const member of members) member.spawnProcess();
    const deadline = Date.now() + startTimeoutMs;
    await Promise.all(members.map((m) => m.waitReady(deadline)));
    return { cluster, portTaken: false, dir };
  } catch (error) {
    for (const member of members) member.close();
    await Promise.all(members.map((m) => m.kill()));
    releasePorts(ports);
    return { error, portTaken: members.some((m) => m.portWasTaken()), dir };
  }
}

/**
 * Starts a new etcd cluster of `n` members on free loopback ports (above 20000) with a unique
 * `--initial-cluster-token`, and resolves once every member answers `/health`. If another process
 * grabbed one of the chosen ports first, it retries on new ports.
 *
 * Stop it with `stop()` or `await using`; the kit also kills leftover members when the process
 * exits, is interrupted, or is SIGKILLed (through a watchdog).
 *
 * @param n - number of members, default 3
 * @throws {@link InvalidArgumentError} for `n` < 1, or `clientCertAuth` without `tls`
 * @throws {@link EtcdNotFoundError} when no etcd binary is found (see {@link findEtcdBinary})
 * @throws {@link EtcdStartError} when a member exits during start or the cluster is not healthy
 *   within `startTimeoutMs`; the message holds the tail of the member's log, which is kept
 */
export async function startEtcdCluster(n = 3, options: EtcdOptions = {}): Promise<EtcdCluster> {
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('n', 'must be an integer >= 1');
  if (options.clientCertAuth === true && options.tls === undefined) {
    throw new InvalidArgumentError('clientCertAuth', 'needs the tls option');
  }
  const binary = findEtcdBinary('etcd');
  const startTimeoutMs = options.startTimeoutMs ?? testTimeout(20000);
  for (let attempt = 1; ; attempt++) {
    const result = await tryStart(binary, n, options, startTimeoutMs);
    if (result.cluster !== undefined) return result.cluster;
    if (result.portTaken && attempt < MAX_PORT_ATTEMPTS) {
      rmSync(result.dir, { recursive: true, force: true });
      unregisterOutsideDir(result.dir);
      continue;
    }
    // Keep the logs for the user; drop the data, which is of no use.
    for (let i = 0; i < n; i++) {
      rmSync(join(result.dir, `m${i}`, 'data'), { recursive: true, force: true });
    }
    unregisterOutsideDir(result.dir);
    if (options.dataDirParent === undefined) keepProcessDirAtExit();
    throw result.error;
  }
}

/**
 * Starts a single-member etcd cluster; shorthand for `startEtcdCluster(1, options)`.
 *
 * @throws {@link EtcdNotFoundError} when no etcd binary is found
 * @throws {@link EtcdStartError} when etcd does not start (with the tail of its log)
 */
export function startEtcd(options: EtcdOptions = {}): Promise<EtcdCluster> {
  return startEtcdCluster(1, options);
}
