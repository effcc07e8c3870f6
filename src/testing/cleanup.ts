/**
 * Makes sure no etcd process outlives the process that started it, however that process ends:
 * - normal exit or uncaught exception: a synchronous 'exit' handler SIGKILLs every live member;
 * - SIGINT / SIGTERM: the same, then the signal is re-raised so the exit status stays right;
 * - SIGKILL (nothing runs in-process): a detached `sh` watchdog notices the parent is gone and
 *   SIGKILLs the pids listed in a pid file, then removes the data directories.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Every data directory and cluster token of the kit contains this string, so leftover etcd
 * processes can be recognised in `ps` output (scripts/run-tests.mjs does).
 */
export const ETCD_DATA_DIR_MARKER = 'etcdc-kit-';

// ETCDC_KIT_RUN_ID (set by scripts/run-tests.mjs) lets a runner tell its own processes apart from
// those of another run on the same machine.
const runId = (process.env.ETCDC_KIT_RUN_ID ?? 'local').replace(/[^A-Za-z0-9_]/g, '_');

/** Unique to this process; prefix of every cluster token and data directory it creates. */
export const processTag = `${ETCD_DATA_DIR_MARKER}r${runId}-p${process.pid}-${randomBytes(3).toString('hex')}`;

let processDir: string | undefined;
/** Set when a failed start's log is kept for the user to read: the directory then stays. */
let keepProcessDir = false;
const livePids = new Set<number>();
/** Cluster directories outside the per-process directory (custom `dataDirParent`). */
const outsideDirs = new Set<string>();
let watchdogPid: number | undefined;
let exitHandlerInstalled = false;
let signalHandlersInstalled = false;

/** The per-process temporary directory (created on first use). */
export function getProcessDir(): string {
  if (processDir === undefined) {
    processDir = join(tmpdir(), processTag);
    mkdirSync(processDir, { recursive: true });
  }
  return processDir;
}

/** Keep the per-process directory at exit (it holds the log of a failed start). */
export function keepProcessDirAtExit(): void {
  keepProcessDir = true;
}

function writeStateFiles(): void {
  const dir = getProcessDir();
  try {
    writeFileSync(join(dir, 'pids'), [...livePids].map((p) => `${p}\n`).join(''));
    writeFileSync(join(dir, 'dirs'), [...outsideDirs].map((d) => `${d}\n`).join(''));
  } catch {
    // The directory is gone (process exiting): nothing left to protect.
  }
}

// $1 parent pid, $2 pid file, $3 file listing extra dirs, $4 per-process dir. `kill -0` polls the
// parent; one-second polls keep the cost negligible while cleaning up "within a few seconds".
const WATCHDOG_SCRIPT = [
  'while kill -0 "$1" 2>/dev/null; do sleep 1; done',
  'if [ -f "$2" ]; then while read -r p; do kill -9 "$p" 2>/dev/null; done < "$2"; fi',
  'if [ -f "$3" ]; then while IFS= read -r d; do rm -rf -- "$d"; done < "$3"; fi',
  'rm -rf -- "$4"',
].join('\n');

function ensureWatchdog(): void {
  if (watchdogPid !== undefined) return;
  const dir = getProcessDir();
  const child = spawn(
    '/bin/sh',
    [
      '-c',
      WATCHDOG_SCRIPT,
      'etcdc-watchdog',
      String(process.pid),
      join(dir, 'pids'),
      join(dir, 'dirs'),
      dir,
    ],
    // Detached: its own process group, so a Ctrl-C aimed at the test run does not kill it first,
    // and we can kill it together with its `sleep` child.
    { detached: true, stdio: 'ignore' },
  );
  child.on('error', () => {
    // No /bin/sh: the in-process handlers still cover every exit except SIGKILL.
  });
  child.unref();
  watchdogPid = child.pid;
}

function killWatchdogSync(): void {
  if (watchdogPid === undefined) return;
  try {
    process.kill(-watchdogPid, 'SIGKILL');
  } catch {
    try {
      process.kill(watchdogPid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  watchdogPid = undefined;
}

/** Synchronous last-resort cleanup: kills every live member and the watchdog, removes data dirs. */
export function cleanupSync(): void {
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  livePids.clear();
  killWatchdogSync();
  for (const dir of outsideDirs) rmSync(dir, { recursive: true, force: true });
  outsideDirs.clear();
  if (processDir !== undefined && !keepProcessDir) {
    rmSync(processDir, { recursive: true, force: true });
    processDir = undefined;
  }
}

function onSignal(signal: NodeJS.Signals): void {
  cleanupSync();
  removeSignalHandlers();
  // If the application (or the test runner) listens for this signal too, it decides what happens
  // next; otherwise re-raise it so the process ends with the status the signal implies.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function installHandlers(): void {
  if (!exitHandlerInstalled) {
    exitHandlerInstalled = true;
    process.on('exit', cleanupSync);
  }
  // Signal handlers only while members live: a handler changes how the process reacts to Ctrl-C.
  if (!signalHandlersInstalled) {
    signalHandlersInstalled = true;
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
}

function removeSignalHandlers(): void {
  if (!signalHandlersInstalled) return;
  signalHandlersInstalled = false;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
}

/**
 * The per-process directory, for files that no process holds (TLS material): removed at exit, or
 * by the watchdog if this process is SIGKILLed (or dies of a signal nobody handles).
 */
export function processDirRemovedAtExit(): string {
  if (!exitHandlerInstalled) {
    exitHandlerInstalled = true;
    process.on('exit', cleanupSync);
  }
  ensureWatchdog();
  return getProcessDir();
}

/** Records a freshly spawned etcd process. Call right after spawn. */
export function registerPid(pid: number): void {
  installHandlers();
  ensureWatchdog();
  livePids.add(pid);
  writeStateFiles();
}

/** Forgets an etcd process that has exited. */
export function unregisterPid(pid: number): void {
  if (!livePids.delete(pid)) return;
  writeStateFiles();
  if (livePids.size === 0) removeSignalHandlers();
}

/** Records a cluster directory that is not inside the per-process directory. */
export function registerOutsideDir(dir: string): void {
  outsideDirs.add(dir);
  writeStateFiles();
}

/** Forgets a cluster directory (removed, or kept on purpose). */
export function unregisterOutsideDir(dir: string): void {
  if (outsideDirs.delete(dir)) writeStateFiles();
}
