import { InvalidArgumentError } from './errors.js';

/** etcd's default `--max-request-bytes` (1.5 MiB). */
export const DEFAULT_MAX_REQUEST_BYTES = 1.5 * 1024 * 1024;
/** Room left in a request for everything that is not key or value (protobuf framing, lease, ...). */
const REQUEST_OVERHEAD_BYTES = 512;

/**
 * `['10.0.0.1', 'https://h2:2380', 'h3:1234']`, 2379 ->
 * `['http://10.0.0.1:2379', 'https://h2:2380', 'http://h3:1234']`. A host keeps its own scheme and
 * port when it has them; blank entries are an error, not silently dropped.
 */
export function prepareEndpointList(hosts: readonly string[], port: number): string[] {
  if (!Array.isArray(hosts) || hosts.length === 0) {
    throw new InvalidArgumentError('hosts', 'at least one host is required');
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InvalidArgumentError(
      'port',
      `must be an integer from 1 to 65535, got ${String(port)}`,
    );
  }
  return hosts.map((raw, i) => {
    if (typeof raw !== 'string' || raw.trim() === '') {
      throw new InvalidArgumentError(`hosts[${i}]`, 'must be a non-empty string');
    }
    let host = raw.trim();
    let scheme = 'http';
    const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(host);
    if (m?.[1] !== undefined) {
      scheme = m[1].toLowerCase();
      if (scheme !== 'http' && scheme !== 'https') {
        throw new InvalidArgumentError(`hosts[${i}]`, `unsupported scheme ${scheme}://`);
      }
      host = host.slice(m[0].length);
    }
    host = host.replace(/\/+$/, '');
    if (host === '' || host.includes('/')) {
      throw new InvalidArgumentError(`hosts[${i}]`, `not a host[:port]: ${raw}`);
    }
    // [v6]:port, v4:port or name:port keep their port; a bare IPv6 address gets brackets.
    const hasPort = /^\[[^\]]+\]:\d+$/.test(host) || /^[^:]+:\d+$/.test(host);
    if (!hasPort) {
      host = host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
    }
    return `${scheme}://${host}`;
  });
}

/** Validates a namespace and returns its root path (`'my_ns'` -> `'/my_ns'`). */
export function namespaceRoot(namespace: string): string {
  if (typeof namespace !== 'string') {
    throw new InvalidArgumentError('namespace', 'must be a string');
  }
  const root = '/' + splitSegments(namespace, 'namespace').join('/');
  if (root === '/') {
    throw new InvalidArgumentError('namespace', 'must not be empty');
  }
  return root;
}

/**
 * Joins segments under the namespace root, folding repeated and trailing slashes:
 * `joinPath('/ns', 'services/', '/svc')` -> `'/ns/services/svc'`.
 */
export function joinPath(root: string, segments: readonly string[]): string {
  const parts: string[] = [];
  segments.forEach((s, i) => {
    if (typeof s !== 'string') {
      throw new InvalidArgumentError(`segments[${i}]`, 'must be a string');
    }
    parts.push(...splitSegments(s, `segments[${i}]`));
  });
  return parts.length === 0 ? root : `${root}/${parts.join('/')}`;
}

/**
 * Checks a key path given to a recipe: absolute, normalised, no NUL, no `.`/`..`, and inside the
 * connector's namespace (`root` itself or below it). Returns it unchanged.
 */
export function validatePath(path: unknown, root: string, argument = 'path'): string {
  if (typeof path !== 'string' || path === '') {
    throw new InvalidArgumentError(argument, 'must be a non-empty string');
  }
  if (!path.startsWith('/')) {
    throw new InvalidArgumentError(argument, `must be absolute (start with '/'): ${path}`);
  }
  const normal = '/' + splitSegments(path, argument).join('/');
  if (normal !== path) {
    throw new InvalidArgumentError(argument, `must be normalised (${normal}), got ${path}`);
  }
  if (path !== root && !path.startsWith(root + '/')) {
    throw new InvalidArgumentError(argument, `${path} is outside the namespace ${root}`);
  }
  return path;
}

/** Checks that a key and value fit into one etcd request. */
export function validateValue(
  key: string,
  value: unknown,
  maxRequestBytes: number,
  argument = 'value',
): string {
  if (typeof value !== 'string') {
    throw new InvalidArgumentError(argument, 'must be a string');
  }
  const size = Buffer.byteLength(key) + Buffer.byteLength(value) + REQUEST_OVERHEAD_BYTES;
  if (size > maxRequestBytes) {
    throw new InvalidArgumentError(
      argument,
      `key and value take ${size - REQUEST_OVERHEAD_BYTES} bytes; etcd accepts at most ` +
        `${maxRequestBytes - REQUEST_OVERHEAD_BYTES} in one request`,
    );
  }
  return value;
}

/** TTLs are whole seconds, at least 1 (etcd raises very short ones; the granted TTL is used). */
export function validateTtl(ttl: unknown, argument = 'ttl'): number {
  if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1 || ttl > 9_000_000_000) {
    throw new InvalidArgumentError(
      argument,
      `must be a whole number of seconds >= 1, got ${String(ttl)}`,
    );
  }
  return ttl;
}

/** Durations in milliseconds: finite and > 0. */
export function validateMs(ms: unknown, argument: string): number {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0) {
    throw new InvalidArgumentError(argument, `must be a positive number of ms, got ${String(ms)}`);
  }
  return ms;
}

function splitSegments(s: string, argument: string): string[] {
  if (s.includes('\0')) {
    throw new InvalidArgumentError(argument, 'must not contain NUL bytes');
  }
  const parts = s.split('/').filter((p) => p !== '');
  for (const p of parts) {
    if (p === '.' || p === '..') {
      throw new InvalidArgumentError(argument, `'.' and '..' are not allowed: ${s}`);
    }
  }
  return parts;
}
