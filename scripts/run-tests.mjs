#!/usr/bin/env node
// Runs the compiled tests (dist/test/**/*.test.js) on node's test runner, then checks that no etcd
// process started by this run is left behind. Usage: node scripts/run-tests.mjs [name-filter...]
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import console from 'node:console';
import process from 'node:process';
import { URL, fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const testDir = join(root, 'dist', 'test');
// Must match ETCD_DATA_DIR_MARKER in src/testing/cleanup.ts; the run id tells this run's etcd
// processes apart from those of other runs on the same machine.
const MARKER = 'etcdc-kit-';
const runId = randomBytes(4).toString('hex');
const runMarker = `${MARKER}r${runId}-`;

const scale = Number(process.env.ETCDC_TEST_TIMEOUT_SCALE ?? 1);
const timeoutMs = Math.round(300000 * (Number.isFinite(scale) && scale > 0 ? scale : 1));

/** @param {string} dir @returns {string[]} */
function findTests(dir) {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((entry) => {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) return findTests(path);
      return entry.isFile() && entry.name.endsWith('.test.js') ? [path] : [];
    })
    .sort();
}

if (!existsSync(testDir)) {
  console.error(`${relative(root, testDir)} does not exist: build first (npm run build)`);
  process.exit(1);
}
const filters = process.argv.slice(2);
const files = findTests(testDir).filter(
  (file) => filters.length === 0 || filters.some((f) => relative(root, file).includes(f)),
);
if (files.length === 0) {
  console.error(`no test files match ${filters.join(' ')}`);
  process.exit(1);
}

/** Lines of `ps -eo pid,args` for etcd processes of this run. @returns {{pid: number, line: string}[]} */
function leftoverEtcd() {
  return execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' })
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.includes(runMarker))
    .map((line) => {
      const [pid = '', command = ''] = line.split(/\s+/);
      return { pid: Number(pid), command, line };
    })
    .filter(({ command }) => command === 'etcd' || command.endsWith('/etcd'));
}

const child = spawn(
  process.execPath,
  ['--test', '--test-concurrency=2', `--test-timeout=${timeoutMs}`, ...files],
  { stdio: 'inherit', env: { ...process.env, ETCDC_KIT_RUN_ID: runId } },
);
// The runner gets terminal signals itself (same process group); just don't die before it does.
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal));

child.on('exit', (code, signal) => {
  // The watchdog of a SIGKILLed test process polls once a second: allow it a moment.
  const deadline = Date.now() + 3000;
  let left = leftoverEtcd();
  while (left.length > 0 && Date.now() < deadline) {
    execFileSync('sleep', ['0.2']);
    left = leftoverEtcd();
  }
  if (left.length > 0) {
    console.error(`\nrun-tests: ${left.length} etcd process(es) left behind by the tests:`);
    for (const { pid, line } of left) {
      console.error(`  ${line}`);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // exited meanwhile
      }
    }
    process.exit(1);
  }
  if (signal !== null) {
    console.error(`run-tests: test runner ended by ${signal}`);
    process.exit(1);
  }
  process.exit(code ?? 1);
});
