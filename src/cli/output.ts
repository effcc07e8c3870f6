/**
 * Human output by default (aligned tables; colour only on a TTY without NO_COLOR), or `--json`:
 * exactly one JSON object per line, so scripts can read the stream as it comes.
 *
 * Every `--json` line, on stdout and on stderr, has the same envelope: `event` (what the line is)
 * and `time` (ISO 8601, when etcdc wrote it unless the record brings its own), then the event's
 * fields. An `error` field is always `{ message, code?, name, problem? }` (see {@link jsonError}).
 */
import { credentialProblem, problemHint, type CredentialProblem } from './problems.js';

export interface Output {
  readonly json: boolean;
  /** A JSON record in `--json` mode (`time` added when missing), else the human line. */
  emit(record: JsonRecord, human: string): void;
  /** Human-only narration (dropped in `--json` mode). */
  info(line: string): void;
  /** A diagnostic on stderr (both modes; a JSON `error` event on stderr in `--json` mode). */
  error(err: unknown): void;
  table(headers: readonly string[], rows: readonly (readonly string[])[]): string;
  color(name: keyof typeof CODES, text: string): string;
}

/** What `emit` takes: `event` names the line; `time` is added when missing. */
export interface JsonRecord {
  event: string;
  time?: string;
  [field: string]: unknown;
}

/** How every `error` field looks in `--json` output. */
export interface JsonError {
  message: string;
  /** The stable `ETCDC_*` code for errors of this library. */
  code?: string;
  name: string;
  /** Set when the cause is the credentials, not the cluster. */
  problem?: CredentialProblem;
}

const CODES = { red: 31, green: 32, yellow: 33, blue: 34, magenta: 35, cyan: 36, dim: 2, bold: 1 };

export function createOutput(
  json: boolean,
  stdout: NodeJS.WriteStream = process.stdout,
  stderr: NodeJS.WriteStream = process.stderr,
): Output {
  const useColor = stdout.isTTY && process.env.NO_COLOR === undefined && !json;
  const color = (name: keyof typeof CODES, text: string): string =>
    useColor ? `\x1b[${CODES[name]}m${text}\x1b[0m` : text;
  return {
    json,
    color,
    emit(record, human) {
      stdout.write((json ? jsonLine(record) : human) + '\n');
    },
    info(line) {
      if (!json) stdout.write(line + '\n');
    },
    error(err) {
      if (json) {
        stderr.write(jsonLine({ event: 'error', error: jsonError(err) }) + '\n');
        return;
      }
      const e = jsonError(err);
      let text = `etcdc: ${e.code === undefined ? '' : `[${e.code}] `}${e.message}\n`;
      if (e.problem !== undefined) text += `etcdc: ${problemHint(e.problem)}\n`;
      stderr.write(text);
    },
    table(headers, rows) {
      // reduce, not Math.max(...): a listing may have more rows than a call takes arguments.
      const widths = headers.map((h, i) =>
        rows.reduce((w, r) => Math.max(w, (r[i] ?? '').length), h.length),
      );
      const line = (cells: readonly string[]): string =>
        cells
          .map((c, i) => c.padEnd(widths[i] ?? 0))
          .join('  ')
          .trimEnd();
      return [color('bold', line(headers)), ...rows.map(line)].join('\n');
    },
  };
}

/** One `--json` line: `event` and `time` first, then the record's other fields. */
export function jsonLine(record: JsonRecord): string {
  const { event, time, ...rest } = record;
  return JSON.stringify({ event, time: time ?? new Date().toISOString(), ...rest }, replacer);
}

/** An error as `--json` prints it. */
export function jsonError(err: unknown): JsonError {
  const e = err instanceof Error ? err : new Error(String(err));
  const code = (e as { code?: unknown }).code;
  const problem = credentialProblem(e);
  return {
    message: e.message,
    ...(typeof code === 'string' ? { code } : {}),
    name: e.name,
    ...(problem === undefined ? {} : { problem }),
  };
}

/** Maps, errors and bigints as JSON. */
function replacer(_key: string, value: unknown): unknown {
  if (value instanceof Map) return Object.fromEntries(value as Map<string, unknown>);
  if (value instanceof Error) return jsonError(value);
  if (typeof value === 'bigint') return value.toString();
  return value;
}

/** `12:03:04.567` for human lines. */
export function clock(date = new Date()): string {
  return date.toISOString().slice(11, 23);
}
