/**
 * The bench children's side of the line protocol: JSON objects on stdout (`{"event": ...}`),
 * commands as JSON lines on stdin, handled one at a time; a closed stdin means "clean up and exit".
 */
import { createInterface } from 'node:readline';

/** Writes one event line for the parent. */
export function send(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

/**
 * Runs `handle` for each command line, in order; a failing command is reported as an `error`
 * event. When stdin ends, runs `close` and exits.
 */
export function serve(
  handle: (command: Record<string, unknown>) => Promise<void>,
  close: () => Promise<void>,
): void {
  let chain = Promise.resolve();
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    chain = chain.then(async () => {
      try {
        await handle(JSON.parse(line) as Record<string, unknown>);
      } catch (err) {
        send('error', { message: err instanceof Error ? err.message : String(err) });
      }
    });
  });
  lines.on('close', () => {
    void chain
      .then(close)
      .catch(() => undefined)
      .finally(() => process.exit(0));
  });
}

/** Reports a fatal start-up error and exits non-zero. */
export function fail(err: unknown): never {
  send('error', { message: err instanceof Error ? err.message : String(err) });
  process.exit(1);
}
