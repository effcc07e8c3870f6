/**
 * A recipe's stream printed by a command: `follow` prints every item until Ctrl-C stops the
 * recipe, `printStates` prints a state stream once or, with --watch, follows it.
 */
import type { StartOptions } from '../engines/lifecycle.js';
import type { Interruptible } from './command-scope.js';
import { preflight } from './connect.js';

/**
 * Starts the stream once one call reached etcd (the recipes would retry a wrong address silently
 * forever) and prints each item until the stream ends; Ctrl-C stops the recipe, which ends it.
 * Resolves false when Ctrl-C came before the stream started.
 */
export async function follow<T>(
  { conn, signal }: Interruptible,
  start: (options: StartOptions) => AsyncIterable<T>,
  print: (item: T) => void,
): Promise<boolean> {
  await preflight(conn, signal);
  if (signal.aborted) return false;
  for await (const item of start({ signal })) print(item);
  return true;
}

/**
 * Without `watch`, the first state; one that failed is the command's error (stderr, exit 1). With
 * `watch`, every state until Ctrl-C, each error reported in `errorColor` as it comes (the recipe
 * keeps trying).
 */
export async function printStates<T extends { readonly error?: Error }>(
  scope: Interruptible,
  watch: boolean,
  start: (options: StartOptions) => AsyncIterable<T>,
  print: (state: T) => void,
  errorColor: 'yellow' | 'red' = 'yellow',
): Promise<void> {
  const { out, signal } = scope;
  if (watch) {
    await follow(scope, start, (state) => {
      if (state.error !== undefined) {
        out.emit(
          { event: 'error', error: state.error },
          out.color(errorColor, state.error.message),
        );
      }
      print(state);
    });
    return;
  }
  for await (const state of start({ signal })) {
    if (state.error !== undefined) throw state.error;
    print(state);
    break;
  }
}
