// No import runs upward (docs/architecture.md): transport < session < engines < recipes <
// connector < cli. Leaf modules (errors, paths, fencing) import nothing of ours but each other.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../../../src/', import.meta.url));

/** Rank of a module by its place in src/: lower ranks never import higher ones. */
function rank(file: string): number {
  const rel = relative(SRC, file);
  if (['errors.ts', 'paths.ts', 'fencing.ts', 'diagnostics.ts'].includes(rel)) return 0;
  if (rel.startsWith('transport/')) return 1;
  if (rel.startsWith('session/')) return 2;
  if (rel.startsWith('engines/')) return 3;
  if (rel.startsWith('recipes/')) return 4;
  if (rel === 'connector.ts' || rel === 'index.ts') return 5;
  if (rel.startsWith('testing/')) return 1; // stands on the leaf modules only
  return 6; // cli and anything else on top
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : path.endsWith('.ts') ? [path] : [];
  });
}

void test('no import runs upward', () => {
  const wrong: string[] = [];
  for (const file of files(SRC)) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^(?:import|export)[^'"]*from '(\.[^']+)\.js';/gm)) {
      const target = join(file, '..', `${m[1] ?? ''}.ts`);
      if (rank(target) > rank(file)) {
        wrong.push(`${relative(SRC, file)} imports ${relative(SRC, target)}`);
      }
    }
  }
  assert.deepEqual(wrong, []);
});

// @grpc/grpc-js is an optional peer dependency: only etcd-connector/grpc imports it (the rest
// reaches etcd3's own copy through etcd3), so `import 'etcd-connector'` never needs it.
void test('only src/grpc/ imports @grpc/grpc-js', () => {
  const wrong = files(SRC)
    .filter((file) => !relative(SRC, file).startsWith('grpc/'))
    .filter((file) =>
      /from '@grpc\/grpc-js'|import\('@grpc\/grpc-js'\)/.test(readFileSync(file, 'utf8')),
    )
    .map((file) => relative(SRC, file));
  assert.deepEqual(wrong, []);
});
