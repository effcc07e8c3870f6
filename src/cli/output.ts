/**
 * Human output by default (aligned tables; colour only on a TTY without NO_COLOR), or `--json`:
 * exactly one JSON object per line, so scripts can read the stream as it comes.
 */
export interface Output {
  readonly json: boolean;
  /** A JSON record in `--json` mode, else the human line. */
  emit(record: Record<string, unknown>, human: string): void;
  /** Human-only narration (dropped in `--json` mode). */
  info(line: string): void;
  /** A diagnostic on stderr (both modes; JSON on stderr in `--json` mode). */
  error(err: unknown): void;
  table(headers: readonly string[], rows: readonly (readonly string[])[]): string;
  color(name: keyof typeof CODES, text: string): string;
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
      stdout.write((json ? JSON.stringify(record, replacer) : human) + '\n');
    },
    info(line) {
      if (!json) stdout.write(line + '\n');
    },
    error(err) {
      const e = err instanceof Error ? err : new Error(String(err));
      const code = (e as { code?: unknown }).code;
      if (json) {
        stderr.write(JSON.stringify({ error: e.message, code, name: e.name }) + '\n');
      } else {
        stderr.write(`etcdc: ${typeof code === 'string' ? `[${code}] ` : ''}${e.message}\n`);
      }
    },
    table(headers, rows) {
      const widths = headers.map((h, i) =>
        Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)),
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

/** Maps, errors and bigints as JSON. */
function replacer(_key: string, value: unknown): unknown {
  if (value instanceof Map) return Object.fromEntries(value as Map<string, unknown>);
  if (value instanceof Error) {
    return { message: value.message, code: (value as { code?: unknown }).code, name: value.name };
  }
  if (typeof value === 'bigint') return value.toString();
  return value;
}

/** `12:03:04.567` for human lines. */
export function clock(date = new Date()): string {
  return date.toISOString().slice(11, 23);
}
