import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError as UsageError, Option } from 'commander';
import { EtcdConnector, type EtcdConnectorOptions } from '../connector.js';
import { InvalidArgumentError } from '../errors.js';
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

/**
 * Adds the shared flags to the root command. Every subcommand's `--help` lists them too, with
 * their defaults and environment variables (commander's "Global Options").
 */
export function addGlobalFlags(program: Command): Command {
  return program
    .configureHelp({ showGlobalOptions: true })
    .addOption(
      new Option(
        '--endpoints <list>',
        'comma-separated etcd endpoints (host[:port] or URLs; default: 127.0.0.1:2379, ' +
          'demo: an embedded cluster)',
      ).env('ETCDC_ENDPOINTS'),
    )
    .addOption(
      new Option('--namespace <name>', 'root of every key etcdc touches')
        .env('ETCDC_NAMESPACE')
        .default('etcdc'),
    )
    .addOption(
      new Option(
        '--user <name[:password]>',
        'etcd user for authentication; name:password as etcdctl takes it, or with --password',
      ).env('ETCDC_USER'),
    )
    .addOption(new Option('--password <password>', 'password of --user').env('ETCDC_PASSWORD'))
    .addOption(
      new Option('--cacert <file>', 'CA bundle (PEM) to verify the members').env('ETCDC_CACERT'),
    )
    .addOption(new Option('--cert <file>', 'client certificate (PEM)').env('ETCDC_CERT'))
    .addOption(new Option('--key <file>', 'client key (PEM)').env('ETCDC_KEY'))
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

/**
 * `cmd.optsWithGlobals()` checked: `--user name:password` (etcdctl's form) is split into user and
 * password; a password given twice, or without a user, is a usage error (InvalidArgumentError).
 */
export function checkFlags<T extends GlobalFlags>(flags: T, cmd: Command): T {
  const named = (flag: 'user' | 'password'): string => {
    const source = cmd.getOptionValueSourceWithGlobals(flag);
    return source === 'env' ? `--${flag} (from ETCDC_${flag.toUpperCase()})` : `--${flag}`;
  };
  const { user: _user, password: _password, ...rest } = flags;
  return { ...rest, ...credentials(flags.user, flags.password, named) } as T;
}

/** `--user` / `--password` to a user name and password; throws the usage error. */
export function credentials(
  user: string | undefined,
  password: string | undefined,
  named: (flag: 'user' | 'password') => string = (flag) => `--${flag}`,
): { user?: string; password?: string } {
  if (user === undefined) {
    if (password !== undefined) {
      throw new InvalidArgumentError(named('password'), 'needs --user <name>');
    }
    return {};
  }
  const colon = user.indexOf(':');
  const name = colon < 0 ? user : user.slice(0, colon);
  if (name === '') throw new InvalidArgumentError(named('user'), 'the user name is missing');
  if (colon < 0) return password === undefined ? { user: name } : { user: name, password };
  if (password !== undefined) {
    throw new InvalidArgumentError(
      named('user'),
      `${name}:<password> already gives a password, and ${named('password')} gives another: ` +
        `use either --user ${name}:<password> or --user ${name} --password <password>`,
    );
  }
  return { user: name, password: user.slice(colon + 1) };
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

/**
 * An absolute path is taken as is (it must lie in the namespace); a name goes under `group`. An
 * empty name is refused (it would silently mean `group` itself, e.g. the namespace root):
 * `argument` names it in the usage error, `hint` says how to ask for that on purpose.
 */
export function resolvePath(
  conn: EtcdConnector,
  group: string,
  name: string,
  argument: string,
  hint = '',
): string {
  if (name === '') throw new InvalidArgumentError(argument, `must not be empty${hint}`);
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
