/**
 * The value Go's `naming/endpoints` (3.5, Debian's 3.4.23) and 3.4's `naming.GRPCResolver` store
 * for a gRPC endpoint, byte for byte: `json.Marshal` of `Update{Op, Addr, Metadata}` —
 * `{"Op":0,"Addr":"10.0.0.1:50051","Metadata":null}` — and the reading rules of Go's decoder.
 * Pure: the registration writes with it, the endpoint tracker reads with it (docs/go-layouts.md).
 *
 * Metadata is encoded as Go encodes the same JSON value decoded into `interface{}`: object keys
 * sorted by their UTF-8 bytes, no spaces, `<` `>` `&` U+2028 U+2029 escaped as `\u003c`...,
 * control characters as `\n` `\r` `\t` or `\u00XX` (Go before 1.22; 1.22 writes `\b` and `\f`
 * for two of them), numbers as ECMAScript prints them (Go's encoder follows ES6).
 */
import { InvalidArgumentError } from '../errors.js';

/** What a reader takes from a stored endpoint. */
export interface ParsedEndpoint {
  readonly addr: string;
  /** Any JSON value; `null` when the writer had none (Go's nil). */
  readonly metadata: unknown;
}

const HEX = '0123456789abcdef';

/** A JSON string as Go's `encoding/json` writes it (HTML-safe escaping). */
export function goString(s: string): string {
  let out = '"';
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let esc: string | undefined;
    if (c < 0x20) {
      esc =
        c === 0x0a
          ? '\\n'
          : c === 0x0d
            ? '\\r'
            : c === 0x09
              ? '\\t'
              : `\\u00${HEX[c >> 4] ?? ''}${HEX[c & 15] ?? ''}`;
    } else if (c === 0x22 || c === 0x5c) {
      esc = '\\' + String.fromCharCode(c);
    } else if (c === 0x3c || c === 0x3e || c === 0x26) {
      esc = `\\u00${HEX[c >> 4] ?? ''}${HEX[c & 15] ?? ''}`;
    } else if (c === 0x2028 || c === 0x2029) {
      esc = c === 0x2028 ? '\\u2028' : '\\u2029';
    } else if (c >= 0xd800 && c <= 0xdfff) {
      // A lone surrogate is invalid UTF-8 once encoded; Go writes U+FFFD for it.
      const pair =
        c <= 0xdbff &&
        i + 1 < s.length &&
        s.charCodeAt(i + 1) >= 0xdc00 &&
        s.charCodeAt(i + 1) <= 0xdfff;
      if (pair) {
        i++;
        continue;
      }
      esc = '\\ufffd';
    }
    if (esc === undefined) continue;
    out += s.slice(start, i) + esc;
    start = i + 1;
  }
  return out + s.slice(start) + '"';
}

/** Go's byte order of strings (UTF-8), which JavaScript's UTF-16 order is not for astral chars. */
function byUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** A JSON value (as `JSON.parse` returns it) encoded as Go encodes it after decoding it. */
function goValue(v: unknown): string {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'string':
      return goString(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'number':
      return String(v);
    case 'object': {
      if (Array.isArray(v)) return `[${v.map(goValue).join(',')}]`;
      const o = v as Record<string, unknown>;
      const keys = Object.keys(o).sort(byUtf8);
      return `{${keys.map((k) => `${goString(k)}:${goValue(o[k])}`).join(',')}}`;
    }
    default:
      // Unreachable for what JSON.parse returns.
      return 'null';
  }
}

/**
 * Go's encoding of `metadata`: the value `JSON.stringify` describes (its `toJSON`, properties
 * that are `undefined` left out), with Go's key order and escaping. `undefined` and `null` are
 * Go's nil: `null`.
 *
 * @throws InvalidArgumentError not JSON: a cycle, a BigInt, NaN or an infinity (JSON would turn
 *   them into `null` silently), a function or symbol as the value itself
 */
export function goJson(metadata: unknown, argument = 'metadata'): string {
  if (metadata === undefined || metadata === null) return 'null';
  let text: string | undefined;
  try {
    text = stringify(metadata, (key, value: unknown) => {
      if (typeof value === 'number' && !Number.isFinite(value)) {
        throw new InvalidArgumentError(
          argument,
          `${String(value)}${key === '' ? '' : ` at ${JSON.stringify(key)}`} is not JSON`,
        );
      }
      return value;
    });
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    throw new InvalidArgumentError(
      argument,
      `must be JSON-serialisable: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  if (text === undefined) {
    throw new InvalidArgumentError(argument, `must be JSON-serialisable, got a ${typeof metadata}`);
  }
  return goValue(JSON.parse(text));
}

/** JSON.stringify, typed as it behaves: undefined for a function or a symbol. */
function stringify(
  value: unknown,
  replacer: (key: string, value: unknown) => unknown,
): string | undefined {
  return JSON.stringify(value, replacer);
}

/**
 * The stored value of an endpoint: `{"Op":0,"Addr":...,"Metadata":...}`, fields in Go's struct
 * order. `metadataJson` is from {@link goJson}.
 */
export function endpointValue(addr: string, metadataJson: string): string {
  return `{"Op":0,"Addr":${goString(addr)},"Metadata":${metadataJson}}`;
}

/**
 * Checks a gRPC address: `host:port` with a DNS name or IPv4 address, or `[IPv6]:port`; port 1 to
 * 65535. It is also the last segment of the key, so no `/`, spaces or control characters.
 */
export function validateAddr(addr: unknown, argument = 'addr'): string {
  if (typeof addr !== 'string' || addr === '') {
    throw new InvalidArgumentError(argument, 'must be a non-empty host:port string');
  }
  if (splitAddr(addr) === undefined) {
    throw new InvalidArgumentError(
      argument,
      `must be host:port (a name, an IPv4 address or [IPv6]; port 1-65535), got ${JSON.stringify(addr)}`,
    );
  }
  return addr;
}

/** `host:port` -> `{ host, port }` (IPv6 without its brackets); undefined when not one. */
export function splitAddr(addr: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|([A-Za-z0-9_.-]+)):(\d{1,5})$/.exec(addr);
  if (m === null) return undefined;
  const host = m[1] ?? m[2];
  const port = Number(m[3]);
  if (host === undefined || port < 1 || port > 65535) return undefined;
  if (m[1] !== undefined && !host.includes(':')) return undefined; // brackets hold IPv6 only
  return { host, port };
}

/**
 * Reads a stored value as Go's readers do (`json.Unmarshal` into `Update`): any PUT is an
 * addition whatever `Op` says; field names match case-insensitively, the last one in the text
 * wins; unknown fields are ignored; missing ones are zero. Returns why it is not an endpoint
 * when Go's decoder would fail (not JSON, not an object, a field of the wrong type) or when there
 * is no address to dial (an empty `Addr`, which Go would pass on).
 */
export function parseEndpoint(value: string): ParsedEndpoint | { readonly reason: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return { reason: 'not JSON' };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return {
      reason: `not a JSON object (${parsed === null ? 'null' : Array.isArray(parsed) ? 'array' : typeof parsed})`,
    };
  }
  const fields = parsed as Record<string, unknown>;
  let op: unknown = null;
  let addr: unknown = null;
  let metadata: unknown = null;
  for (const [name, v] of Object.entries(fields)) {
    const folded = name.toLowerCase();
    // Go assigns JSON null to a string or integer field as "no change".
    if (folded === 'op' && v !== null) op = v;
    else if (folded === 'addr' && v !== null) addr = v;
    else if (folded === 'metadata') metadata = v;
  }
  if (op !== null && !(typeof op === 'number' && Number.isInteger(op) && op >= 0 && op <= 255)) {
    return { reason: 'Op is not an integer from 0 to 255' };
  }
  if (addr !== null && typeof addr !== 'string') return { reason: 'Addr is not a string' };
  if (addr === null || addr === '') return { reason: 'no Addr' };
  return { addr, metadata };
}
