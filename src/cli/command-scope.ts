/**
 * What a command that talks to etcd holds while it runs: its output, its connector and, for a
 * command that waits or holds something, its Ctrl-C handling. However the command ends, the
 * connector is closed (what it held is deleted and its leases revoked) before the signal handlers
 * go, so a Ctrl-C during that cleanup cannot cut it short.
 */
import type { EtcdConnector } from '../connector.js';
import { connect, type GlobalFlags } from './connect.js';
import { onInterrupt } from './interrupt.js';
import { createOutput, type Output } from './output.js';

export interface Connected {
  readonly out: Output;
  readonly conn: EtcdConnector;
}

export interface Interruptible extends Connected {
  /** Aborts on the first Ctrl-C (SIGINT/SIGTERM); a second one exits at once. */
  readonly signal: AbortSignal;
}

/** A one-shot command: Ctrl-C keeps Node's default (exit at once), it holds nothing to let go. */
export function connected(flags: GlobalFlags, run: (c: Connected) => Promise<void>): Promise<void> {
  return withConnector(flags, false, run);
}

/** A command that waits or holds: the first Ctrl-C aborts `signal`, so it can let go cleanly. */
export function interruptible(
  flags: GlobalFlags,
  run: (c: Interruptible) => Promise<void>,
): Promise<void> {
  return withConnector(flags, true, run);
}

async function withConnector(
  flags: GlobalFlags,
  ctrlC: boolean,
  run: (c: Interruptible) => Promise<void>,
): Promise<void> {
  const out = createOutput(flags.json);
  const conn = connect(flags);
  const interrupt = ctrlC ? onInterrupt() : undefined;
  try {
    // Without handlers nothing aborts it: a Ctrl-C ends the process.
    await run({ out, conn, signal: interrupt?.signal ?? new AbortController().signal });
  } finally {
    await conn.close();
    interrupt?.dispose();
  }
}
