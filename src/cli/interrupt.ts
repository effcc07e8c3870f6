/**
 * Ctrl-C handling shared by every command: the first SIGINT/SIGTERM aborts `signal` so the command
 * resigns, deletes and revokes what it holds and returns; a second one exits at once.
 */
export interface Interrupt {
  readonly signal: AbortSignal;
  /** Removes the handlers (so an idle process can exit). */
  dispose(): void;
}

export function onInterrupt(): Interrupt {
  const controller = new AbortController();
  let count = 0;
  const handler = (sig: NodeJS.Signals): void => {
    count += 1;
    if (count > 1) process.exit(sig === 'SIGINT' ? 130 : 143);
    controller.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signal: controller.signal,
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}

/** Resolves when `signal` aborts. */
export function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else
      signal.addEventListener(
        'abort',
        () => {
          resolve();
        },
        { once: true },
      );
  });
}
