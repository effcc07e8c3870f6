// The README's examples are these files; running them here keeps the docs from drifting.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { testTimeout } from '../src/testing/index.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

const examples = {
  'quick-start': [
    /leading with fencing token \d+, at \d+/,
    /instances: \{ 'node-a': '10\.0\.0\.1:8080' \}/,
  ],
  'fenced-write': [/wrote under token \d+/],
  observer: [
    /\d+ put \/observer_example\/config\/limit/,
    /state: \{ '\/observer_example\/config\/limit': '100' \}/,
  ],
  'ephemeral-key': [/value: 10\.0\.0\.1:9090/, /after delete: \(none\)/],
  health: [/cluster: healthy OK/],
  session: [/lease [0-9a-f]+ is alive/, /elector: leader/, /done/],
  queue: [
    /consumer 1 got: (resize image 17|send mail 4)/,
    /consumer 2 got: (resize image 17|send mail 4)/,
    /first alert: disk full\n/,
    /next alert: disk 80% full/,
  ],
  barrier: [/released workers: 1 2 3/, /all 3 entered\nall 3 left/],
  counter: [/50 concurrent adds: 0 -> 50/, /reset: true -> 0/],
  stm: [/20 transfers committed/, /alice 80, bob 120, total: 200/],
  mutex: [
    /holding \/mutex_example\/locks\/nightly-report\/[0-9a-f]+ \(fencing token \d+, at \d+\)/,
    /someone else's tryLock: held elsewhere/,
    /after: done/,
  ],
  'rw-mutex': [/readers: \S+\/read\/\d{19} \S+\/read\/\d{19}/, /writer holds, alone/],
  semaphore: [/worker 5 done/, /at most 2 at once/],
  'multi-lock': [/'\/multilock_example\/accounts\/alice': '70'/, /bob': '30'/],
  inspect: [
    /unknown \/inspect_example\/config: 1 key\n {2}key limit/,
    /services \/inspect_example\/services\/api: 1 instance: node-a\n {2}instance node-a \(lease [0-9a-f]+, \d+s left\)/,
  ],
  endpoints: [
    /stored: \{"Op":0,"Addr":"10\.0\.0\.1:50051","Metadata":\{"zone":"a"\}\}/,
    /picked: 10\.0\.0\.(1|2):50051 10\.0\.0\.(1|2):50051/,
    /after errors: skipped/,
    /zone c: no instance of \/endpoints_example\/grpc\/api to pick: 2 registered, 2 filtered out, 0 down/,
  ],
  metrics: [
    /mutex \/metrics_example\/locks\/jobs acquired in \d+\.\d ms \(token \d+\)/,
    /etcd_connector_leader_status\{[^}]*path="\/metrics_example\/elections\/jobs"[^}]*\} 1/,
    /etcd_connector_lock_wait_count\{[^}]*kind="mutex"[^}]*\} 1/,
    /etcd_connector_lock_held_count\{[^}]*outcome="released"[^}]*\} 1/,
  ],
  'grpc-resolver': [/answer: hello, etcd/],
  'leader-run': [/term \d+: report written \(aborted: false\)/, /stopped/],
} as const;

function run(name: string, hosts: string): Promise<{ code: number | null; out: string }> {
  const file = fileURLToPath(new URL(`../examples/${name}.js`, import.meta.url));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file], {
      env: { ...process.env, ETCD_HOSTS: hosts },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`example ${name} did not exit by itself within the deadline:\n${out}`));
    }, testTimeout(20_000));
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

const ROOT = new URL('../../', import.meta.url);

describe('README examples', () => {
  test('every example file is in the README word for word, and every one is run here', () => {
    const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
    const files = readdirSync(new URL('examples/', ROOT)).filter((f) => f.endsWith('.ts'));
    for (const file of files) {
      const body = readFileSync(new URL(`examples/${file}`, ROOT), 'utf8').trim();
      assert.ok(readme.includes(body), `examples/${file} differs from the README`);
    }
    assert.deepEqual(
      files.map((f) => f.replace(/\.ts$/, '')).sort(),
      Object.keys(examples).sort(),
      'an example without a run below',
    );
  });

  const suite = etcdSuite();

  for (const [name, patterns] of Object.entries(examples)) {
    test(`examples/${name}.ts runs and exits by itself`, async () => {
      const hosts = suite.etcd.endpoints.map((e) => e.replace('http://', '')).join(',');
      const { code, out } = await run(name, hosts);
      assert.equal(code, 0, out);
      for (const p of patterns) assert.match(out, p);
    });
  }
});
