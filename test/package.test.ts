/**
 * The npm package as a new user gets it: `npm pack` of this repository (its built dist/src), the
 * tarball installed into a fresh temporary project, a strict TypeScript program importing
 * `etcd-connector` and `etcd-connector/testing` compiled with `--module nodenext` and run against a
 * real etcd, a CommonJS `require`, the `etcdc` bin, and the command EtcdNotFoundError prints.
 *
 * The install is offline: the project gets a lock file made from this repository's (same
 * versions, with tarball URLs), so `npm ci --offline` takes every tarball from the npm cache that
 * `npm ci` of the repository filled; no registry metadata is needed. (A plain `npm install
 * --offline <tarball>` fails: it needs the registry's package documents, which `npm ci` does not
 * cache.) Only if a tarball is missing from the cache does the test fall back to the registry,
 * and says so.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createInterface } from 'node:readline';
import {
  findEtcdBinary,
  startEtcd,
  testTimeout,
  withTimeout,
  type EtcdCluster,
} from '../src/testing/index.js';
import { ROOT } from './fixtures/cli-harness.js';

const FIXTURES = join(ROOT, 'test', 'fixtures', 'package');
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to its end (killed after `ms`, scaled); never rejects on a non-zero exit. */
function run(
  file: string,
  args: readonly string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; ms?: number },
): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      {
        cwd: options.cwd,
        env: options.env ?? childEnv(),
        timeout: testTimeout(options.ms ?? 30_000),
        killSignal: 'SIGKILL',
        maxBuffer: 16 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const show = (r: Run): string => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

/**
 * Our environment without npm's lifecycle variables (`npm test` sets npm_package_*,
 * npm_config_local_prefix ...: they describe this repository, not the fresh project) and without
 * ETCDC_* settings; the npm cache location and registry are kept.
 */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const keep = new Set(['npm_config_cache', 'npm_config_registry', 'npm_config_userconfig']);
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.toLowerCase().startsWith('npm_') && !keep.has(k.toLowerCase())) continue;
    if (k.startsWith('ETCDC_') && k !== 'ETCDC_KIT_RUN_ID' && k !== 'ETCDC_TEST_TIMEOUT_SCALE') {
      continue;
    }
    env[k] = v;
  }
  return { ...env, NO_COLOR: '1', ...extra };
}

/** Every file below `dir`, as paths relative to it. */
function walk(dir: string, base = dir): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    return e.isDirectory() ? walk(path, base) : [relative(base, path)];
  });
}

/** The README's ```ts blocks whose first line of code is an import: complete programs. */
function readmeSamples(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  return [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)]
    .map((m) => m[1] ?? '')
    .filter((code) => code.replace(/^(\/\/.*\n|\s*\n)*/, '').startsWith('import '));
}

/** Packages the README's samples import besides etcd-connector and its own dependencies. */
const COMPANIONS = [
  '@opentelemetry/api',
  '@opentelemetry/exporter-prometheus',
  '@opentelemetry/sdk-metrics',
];

/** The lock file paths of COMPANIONS and everything they depend on. */
function companionPaths(packages: Record<string, LockEntry>): string[] {
  const found = new Set<string>();
  const visit = (path: string): void => {
    const entry = packages[path];
    if (entry === undefined || found.has(path)) return;
    found.add(path);
    for (const dep of Object.keys(entry.dependencies ?? {})) {
      // npm's lookup: a copy nested under this package first, then the top level.
      const nested = `${path}/node_modules/${dep}`;
      visit(packages[nested] === undefined ? `node_modules/${dep}` : nested);
    }
  };
  for (const name of COMPANIONS) visit(`node_modules/${name}`);
  return [...found];
}

interface LockEntry {
  version?: string;
  resolved?: string;
  dev?: boolean;
  [field: string]: unknown;
}

interface PackResult {
  filename: string;
  integrity: string;
  files: { path: string }[];
}

interface PackageJson {
  name: string;
  version: string;
  license: string;
  dependencies: Record<string, string>;
  bin: Record<string, string>;
  engines: Record<string, string>;
}

void describe('the npm package, installed from its tarball', () => {
  let tmp: string;
  let etcd: EtcdCluster | undefined;
  let project: string;
  let installed: string;
  let packed: PackResult;
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as PackageJson;
  let installNote = '';

  /** `npm pack` (scripts off: dist/src is this run's build, checked below), then install it. */
  async function packAndInstall(): Promise<void> {
    const pack = await run(
      'npm',
      ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp],
      { cwd: ROOT },
    );
    assert.equal(pack.code, 0, show(pack));
    const [result] = JSON.parse(pack.stdout) as PackResult[];
    assert.ok(result !== undefined, show(pack));
    packed = result;

    // A fresh project ("type": "module", as the README says) with a lock file: the tarball, and
    // this repository's runtime dependencies at the versions its tests ran with.
    mkdirSync(project);
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, LockEntry>;
    };
    const typesNode = lock.packages['node_modules/@types/node']?.version ?? '20';
    const spec = `file:../${packed.filename}`;
    const manifest = {
      name: 'consumer',
      version: '1.0.0',
      private: true,
      type: 'module',
      dependencies: {
        'etcd-connector': spec,
        ...Object.fromEntries(
          COMPANIONS.map((name) => [name, lock.packages[`node_modules/${name}`]?.version ?? '*']),
        ),
      },
      devDependencies: { '@types/node': typesNode },
    };
    const packages: Record<string, LockEntry> = { '': { ...manifest } };
    // What a user of the README's metrics samples installs besides the package, with what they
    // depend on (dev dependencies here, so the lock file marks them dev).
    const peers = companionPaths(lock.packages);
    for (const [path, entry] of Object.entries(lock.packages)) {
      if (path === '' || entry.version === undefined) continue;
      if (entry.dev === true && !peers.includes(path)) continue;
      const name = path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length);
      const file = `${name.split('/').at(-1) ?? name}-${entry.version}.tgz`;
      const { dev: _dev, ...kept } = entry;
      packages[path] = { ...kept, resolved: `https://registry.npmjs.org/${name}/-/${file}` };
    }
    packages['node_modules/etcd-connector'] = {
      version: pkg.version,
      resolved: spec,
      integrity: packed.integrity,
      license: pkg.license,
      dependencies: pkg.dependencies,
      bin: pkg.bin,
      engines: pkg.engines,
    };
    writeFileSync(join(project, 'package.json'), JSON.stringify(manifest, null, 2));
    writeFileSync(
      join(project, 'package-lock.json'),
      JSON.stringify({ name: 'consumer', version: '1.0.0', lockfileVersion: 3, packages }, null, 2),
    );
    const quiet = ['--no-audit', '--no-fund', '--loglevel', 'error'];
    let install = await run('npm', ['ci', '--offline', ...quiet], { cwd: project, ms: 60_000 });
    if (install.code !== 0 && install.stderr.includes('ENOTCACHED')) {
      installNote = `npm ci --offline: a tarball is not in the npm cache, used the registry:\n${install.stderr}`;
      install = await run('npm', ['ci', '--prefer-offline', ...quiet], {
        cwd: project,
        ms: 60_000,
      });
    }
    assert.equal(install.code, 0, show(install));
    installed = join(project, 'node_modules', 'etcd-connector');
  }

  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'etcdc-package-'));
    project = join(tmp, 'project');
    const started = startEtcd();
    await Promise.all([
      started.then((c) => {
        etcd = c;
      }),
      packAndInstall(),
    ]);
  });

  after(async () => {
    await etcd?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  void test('the tarball: a current build of dist/src, its sources, LICENSE, no tests', (t) => {
    if (installNote !== '') t.diagnostic(installNote);
    const files = new Set(packed.files.map((f) => f.path));
    for (const required of [
      'package.json',
      'README.md',
      'LICENSE',
      'scripts/ensure-etcd.sh',
      'dist/src/index.js',
      'dist/src/index.d.ts',
      'dist/src/testing/index.js',
      'dist/src/testing/index.d.ts',
      'dist/src/grpc/index.js',
      'dist/src/grpc/index.d.ts',
      'dist/src/cli/main.js',
      // The dashboard's page is read from src/ at run time (no copy step).
      'src/cli/dashboard/page/index.html',
      'src/cli/dashboard/page/app.js',
      'src/cli/dashboard/page/style.css',
    ]) {
      assert.ok(files.has(required), `the tarball has ${required}`);
    }
    const stray = [...files].filter((f) => /^(dist\/)?(test|bench|examples)\//.test(f));
    assert.deepEqual(stray, [], 'no tests, benchmarks or examples');
    assert.match(readFileSync(join(installed, 'LICENSE'), 'utf8'), /^MIT License/);

    // dist/src is the build of src/ as it is now: one .js per .ts, none older than its source.
    const sources = [...files].filter((f) => f.startsWith('src/') && f.endsWith('.ts'));
    const built = [...files].filter((f) => f.startsWith('dist/src/') && f.endsWith('.js'));
    assert.deepEqual(
      built.map((f) => f.replace(/^dist\//, '').replace(/\.js$/, '.ts')).sort(),
      [...sources].sort(),
      'every shipped .js has its source, and every source was built',
    );
    const stale = sources.filter(
      (src) =>
        statSync(join(ROOT, 'dist', src.replace(/\.ts$/, '.js'))).mtimeMs <
        statSync(join(ROOT, src)).mtimeMs,
    );
    assert.deepEqual(stale, [], 'dist/src is older than these sources: run `npm run build`');

    // Every source map points at files that are in the package; every map comment at its map.
    const maps = walk(installed).filter((f) => f.endsWith('.js.map'));
    assert.ok(maps.length > 0);
    for (const map of maps) {
      const parsed = JSON.parse(readFileSync(join(installed, map), 'utf8')) as {
        sources: string[];
        sourceRoot?: string;
      };
      for (const source of parsed.sources) {
        const target = join(installed, dirname(map), parsed.sourceRoot ?? '', source);
        assert.ok(existsSync(target), `${map} points at ${source}, which is not shipped`);
      }
    }
    for (const js of walk(installed).filter((f) => f.endsWith('.js'))) {
      const ref = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(
        readFileSync(join(installed, js), 'utf8'),
      );
      if (ref?.[1] !== undefined) {
        assert.ok(existsSync(join(installed, dirname(js), ref[1])), `${js}: ${ref[1]}`);
      }
    }
  });

  void test('strict TypeScript (nodenext) compiles against it and runs on a real etcd', async (t) => {
    copyFileSync(join(FIXTURES, 'consumer.ts.txt'), join(project, 'consumer.ts'));
    // The README's complete samples (those that start with their imports) are compiled too, as a
    // user would paste them: they must type-check against the shipped types.
    const samples = readmeSamples().map((code, i) => {
      const file = `readme-${i + 1}.ts`;
      writeFileSync(join(project, file), code);
      return file;
    });
    assert.ok(samples.length >= 6, `the README's samples: ${samples.length}`);
    const args = ['--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext'];
    const files = ['consumer.ts', ...samples];
    const tsc = await run(process.execPath, [TSC, ...args, '--outDir', 'out', ...files], {
      cwd: project,
      ms: 60_000,
    });
    assert.equal(tsc.code, 0, `tsc ${args.join(' ')} ${files.join(' ')}\n${show(tsc)}`);

    const endpoints = etcd?.endpoints.join(',') ?? '';
    const consumer = await run(process.execPath, ['out/consumer.js'], {
      cwd: project,
      env: childEnv({ ETCD_ENDPOINTS: endpoints }),
    });
    assert.equal(consumer.code, 0, show(consumer));
    const seen = JSON.parse(consumer.stdout.trim().split('\n').at(-1) ?? '') as {
      token?: string;
      services?: Record<string, string>;
      health?: string;
      notFound?: string;
    };
    assert.match(seen.token ?? '', /^[1-9]\d*$/, 'led with a fencing token');
    assert.deepEqual(seen.services, { 'node-a': '10.0.0.1:8080' });
    assert.equal(seen.health, 'healthy');

    // EtcdNotFoundError names a script that exists in the installed package, and running the
    // command as printed works (with etcd present it just prints the versions).
    const notFound = seen.notFound ?? '';
    const command = /`bash ([^`]+)`/.exec(notFound)?.[1];
    assert.ok(command !== undefined, `a bash command in: ${notFound}`);
    assert.equal(
      realpathSync(command),
      realpathSync(join(installed, 'scripts', 'ensure-etcd.sh')),
      notFound,
    );
    const script = await run('bash', [command], {
      cwd: project,
      env: childEnv({ ETCD_BIN: findEtcdBinary() }),
    });
    // It found etcd and printed its version: the path works. Known flaw of the script (not of
    // the path): under `set -o pipefail`, `etcdctl version | head -n 1` can die of SIGPIPE when
    // head exits first, and the script then ends with 141 after printing everything.
    assert.match(script.stdout, /etcd Version: 3\./, show(script));
    if (script.code === 141) {
      t.diagnostic(`ensure-etcd.sh exited 141 (SIGPIPE in a "| head -n 1" pipeline)`);
    } else {
      assert.equal(script.code, 0, show(script));
    }
  });

  void test('CommonJS require works exactly where Node has require(esm)', async (t) => {
    copyFileSync(join(FIXTURES, 'require.cjs.txt'), join(project, 'require.cjs'));
    const r = await run(process.execPath, ['require.cjs'], { cwd: project });
    assert.equal(r.code, 0, show(r));
    const result = JSON.parse(r.stdout.trim()) as {
      requireModule: boolean;
      ok: boolean;
      main?: string;
      testing?: string;
      code?: string;
    };
    t.diagnostic(
      `node ${process.version}: require(esm) ${result.requireModule ? 'on' : 'off'}, ` +
        `require('etcd-connector') ${result.ok ? 'works' : `fails (${result.code ?? '?'})`}` +
        (r.stderr.trim() === '' ? '' : `; stderr: ${r.stderr.trim()}`),
    );
    if (result.requireModule) {
      // Node 20.19+ / 22.12+: the ESM-only package loads from CommonJS (no top-level await in
      // the graph of either entry point).
      assert.deepEqual(
        { ok: result.ok, main: result.main, testing: result.testing },
        { ok: true, main: 'function', testing: 'function' },
        show(r),
      );
    } else {
      assert.equal(result.ok, false, show(r));
      assert.equal(result.code, 'ERR_REQUIRE_ESM', show(r));
    }
    const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
    if (major === 20 && minor >= 19) {
      assert.ok(result.requireModule, 'Node 20.19+ has require(esm) on by default');
    }
  });

  void test('the installed etcdc bin runs', async () => {
    const bin = join(project, 'node_modules', '.bin', 'etcdc');
    const version = await run(bin, ['--version'], { cwd: project });
    assert.equal(version.code, 0, show(version));
    assert.equal(version.stdout.trim(), pkg.version);
    const endpoints = etcd?.endpoints.join(',') ?? '';
    const health = await run(bin, ['health', '--json', '--endpoints', endpoints], {
      cwd: project,
    });
    assert.equal(health.code, 0, show(health));
    const report = JSON.parse(health.stdout.trim()) as { event: string; status: string };
    assert.deepEqual([report.event, report.status], ['health', 'healthy']);

    // The dashboard finds its page inside the installed package.
    const dashboard = spawn(bin, ['dashboard', '--json', '--endpoints', endpoints], {
      cwd: project,
      env: childEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const lines = createInterface({ input: dashboard.stdout });
      const first = await withTimeout(
        new Promise<string>((resolve) => lines.once('line', resolve)),
        testTimeout(15_000),
        'the dashboard address',
      );
      const { url } = JSON.parse(first) as { url: string };
      const page = await fetch(url, { signal: AbortSignal.timeout(5000) });
      assert.equal(page.status, 200);
      assert.match(await page.text(), /<title>etcd-connector dashboard<\/title>/);
      const exited = new Promise((resolve) => dashboard.once('exit', resolve));
      dashboard.kill('SIGINT');
      assert.equal(await withTimeout(exited, testTimeout(10_000), 'dashboard exit'), 0);
    } finally {
      dashboard.kill('SIGKILL');
    }
  });
});
