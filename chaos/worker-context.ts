/**
 * What every loop of a chaos worker shares: its arguments, its log (written synchronously, so a
 * kill -9 loses at most the line being written), its connector, the stop signal, and helpers.
 *
 * Args: --id w1 --inc 0 --endpoints a,b,c --ttl 3 --log file --root /chaos
 */
import { setMaxListeners } from 'node:events';
import { closeSync, openSync, writeSync } from 'node:fs';
import { setTimeout as wait } from 'node:timers/promises';
import { EtcdConnector, EtcdConnectorError, type SessionHandle } from '../src/index.js';
import { anySignal } from '../src/transport/timers.js';
import { now } from './clock.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) {
  args.set(process.argv[i] ?? '', process.argv[i + 1] ?? '');
}
export const id = args.get('--id') ?? 'w?';
export const inc = Number(args.get('--inc') ?? '0');
const endpoints = (args.get('--endpoints') ?? '').split(',');
export const ttl = Number(args.get('--ttl') ?? '3');
const root = args.get('--root') ?? '/chaos';
const logFd = openSync(args.get('--log') ?? `/tmp/${id}.${inc}.jsonl`, 'a');

export function log(record: Record<string, unknown>): void {
  writeSync(logFd, `${JSON.stringify({ t: now(), w: id, inc, ...record })}\n`);
}

export function errorFields(err: unknown): { message: string; code?: string } {
  const e = err instanceof Error ? err : new Error(String(err));
  return err instanceof EtcdConnectorError
    ? { message: e.message, code: err.code }
    : { message: e.message };
}

const stopping = new AbortController();
// Every loop's waits listen to it at once: more than Node's warning threshold of 10.
setMaxListeners(100, stopping.signal);
/** Tells every loop to stop. */
export function stop(): void {
  stopping.abort();
}
/** Aborted when the worker is told to stop. */
export const signal: AbortSignal = stopping.signal;
/** True once the worker was told to stop (a call: lint cannot see the signal change). */
export const stopped = (): boolean => signal.aborted;
export const conn = new EtcdConnector(endpoints, root.slice(1), {
  callTimeoutMs: 2000,
  dialTimeoutMs: 1000,
});
export const path = (...s: string[]): string => conn.constructPath(...s);

/**
 * The stop signal, or a give-up timer of 0.3-3 s, whichever fires first: a caller that gives up
 * on a call in flight. What the call did must then still be told right (an `AbortError` promises
 * nothing was written).
 */
export function impatient(): AbortSignal {
  return anySignal([signal, AbortSignal.timeout(Math.round(300 + Math.random() * 2700))]);
}

/** Waits `ms`, or less if the worker is told to stop. */
export function pause(ms: number): Promise<void> {
  return wait(ms, undefined, { signal }).catch(() => undefined);
}

/** A session of our TTL for the lock and the election, renewed after a loss. */
export async function session(where: string): Promise<SessionHandle | undefined> {
  while (!stopped()) {
    try {
      return await conn.session({ ttl, signal });
    } catch (err) {
      if (stopped()) return undefined;
      log({ kind: 'error', where, ...errorFields(err) });
      await pause(200);
    }
  }
  return undefined;
}

/** What an ended call did: `ok`; `unknown` (its answer was lost: it may have landed); `failed`. */
export function outcomeOf(err: unknown): 'unknown' | 'failed' {
  return err instanceof EtcdConnectorError && err.code === 'ETCDC_OUTCOME_UNKNOWN'
    ? 'unknown'
    : 'failed';
}

/** Closes the log (the last thing a worker does). */
export function closeLog(): void {
  closeSync(logFd);
}
