import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError as UsageError, Option } from 'commander';
import { EtcdConnector, type EtcdConnectorOptions } from '../connector.js';
import { toConnectorError } from '../transport/rpc.js';
import { prepareEndpointList } from '../paths.js';

/** Flags every command shares (after commander parsed them). */
export interface GlobalFlags {
  endpoints?: string;
  namespace: string;
  user?: string;
  password?: string;
  cacert?: string;
  cert?: string;
  key?: string;
  dialTimeout: number;
  commandTimeout: number;
  json: boolean;
}

export const DEFAULT_ENDPOINT = 'http://127.0.0.1:2379';

/** Adds the shared flags to the root command. */
export function addGlobalFlags(program: Command): Command {
  return program
    .addOption(
      new Option('--endpoints <list>', 'comma-separated etcd endpoints (host[:port] or URLs)').env(
        'ETCDC_ENDPOINTS',
      ),
    )
    .addOption(
      new Option('--namespace <name>', 'root of every key etcdc touches')
        .env('ETCDC_NAMESPACE')
        .default('etcdc'),
    )
    .addOption(new Option('--user <name>', 'etcd user (auth)').env('ETCDC_USER'))
    .addOption(new Option('--password <password>', 'etcd password').env('ETCDC_PASSWORD'))
    .option('--cacert <file>', 'CA bundle (PEM) to verify the members')
    .option('--cert <file>', 'client certificate (PEM)')
    .option('--key <file>', 'client key (PEM)')
    .addOption(
      new Option('--dial-timeout <ms>', 'connection timeout in ms')
        .argParser(positiveInt)
        .default(3000),
    )
    .addOption(
      new Option('--command-timeout <ms>', 'deadline of each etcd call in ms')
        .argParser(positiveInt)
        .default(5000),
    )
    .option('--json', 'one JSON object per line instead of human output', false);
}

/** Parses a positive integer flag value, or fails as a usage error. */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) {
    throw new UsageError(`expected a positive integer, got ${value}`);
  }
  return n;
}

/** Parses an integer flag value >= 0, or fails as a usage error. */
export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`expected an integer >= 0, got ${value}`);
  return n;
}

/** `a:2379,b` -> endpoint URLs (2379 is the default port). */
export function parseEndpoints(list: string): string[] {
  return prepareEndpointList(
    list.split(',').map((s) => s.trim()),
    2379,
  );
}

export function connectorOptions(flags: GlobalFlags): EtcdConnectorOptions {
  const options: EtcdConnectorOptions = {
    dialTimeoutMs: flags.dialTimeout,
    callTimeoutMs: flags.commandTimeout,
  };
  if (flags.user !== undefined) {
    options.auth = { username: flags.user, password: flags.password ?? '' };
  }
  if (flags.cacert !== undefined || flags.cert !== undefined || flags.key !== undefined) {
    options.tls = {
      ...(flags.cacert === undefined ? {} : { ca: readFileSync(flags.cacert) }),
      ...(flags.cert === undefined ? {} : { cert: readFileSync(flags.cert) }),
      ...(flags.key === undefined ? {} : { key: readFileSync(flags.key) }),
    };
  }
  return options;
}

/** A connector from the flags (no I/O yet). */
export function connect(flags: GlobalFlags): EtcdConnector {
  return new EtcdConnector(
    parseEndpoints(flags.endpoints ?? DEFAULT_ENDPOINT),
    flags.namespace,
    connectorOptions(flags),
  );
}

/** An absolute path is taken as is (it must lie in the namespace); a name goes under `group`. */
export function resolvePath(conn: EtcdConnector, group: string, name: string): string {
  return name.startsWith('/') ? name : conn.constructPath(group, name);
}

/**
 * One call under the call deadline before a command that waits: the recipes retry a dead endpoint
 * silently forever, so without it `etcdc elect` against a wrong address would just hang (etcdctl
 * fails too). Once this passed, outages are the recipes' business. Resolves early when `signal`
 * aborts (the caller checks `signal.aborted`).
 */
export async function preflight(conn: EtcdConnector, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return;
  let onAbort: (() => void) | undefined;
  const abort = new Promise<void>((resolve) => {
    onAbort = resolve;
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    await Promise.race([
      // Status needs no key permission, so it also works for users confined to a subtree.
      conn.client.maintenance.status().catch((err: unknown) => {
        throw toConnectorError(err, `connect to ${conn.endpoints.join(',')}`);
      }),
      abort,
    ]);
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort);
  }
}
