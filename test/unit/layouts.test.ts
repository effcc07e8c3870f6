// The layout decoders on the samples of docs/go-layouts.md and on our own layouts: each key lands
// in exactly one recipe, in the recipe's order, with the right roles.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DECODERS,
  decodeLayouts,
  diffRecipes,
  type KeyEntry,
  type LayoutDecoder,
  type RecipeView,
} from '../../src/engines/layouts/index.js';

const A = '390da2296cc52a5f';
const B = '390da2296cc52a61';
const C = '390da2296cc52a63';

let revision = 100;
/** A key-value; revisions grow in the order entries are made. */
function kv(key: string, value = '', lease?: string, extra: Partial<KeyEntry> = {}): KeyEntry {
  revision += 1;
  return {
    key,
    value,
    createRevision: revision,
    modRevision: revision,
    version: 1,
    ...(lease === undefined ? {} : { lease }),
    ...extra,
  };
}

/** `role name` of each entry, in order. */
const roles = (r: RecipeView | undefined): string[] =>
  (r?.entries ?? []).map((e) => `${e.role} ${e.name}`);

function only(recipes: RecipeView[], kind: string): RecipeView {
  const found = recipes.filter((r) => r.kind === kind);
  const [first] = found;
  assert.ok(first !== undefined && found.length === 1, `one ${kind} in ${JSON.stringify(recipes)}`);
  return first;
}

void test('election: keys named after their lease, leader = lowest create revision', () => {
  const b = kv(`/ns/leader/${B}`, 'node-b:8080', B);
  const a = kv(`/ns/leader/${A}`, 'node-a:8080', A, { createRevision: 50 });
  const recipes = decodeLayouts([b, a]);
  const election = only(recipes, 'election');
  assert.equal(election.path, '/ns/leader');
  assert.deepEqual(roles(election), ['leader node-a:8080', 'candidate node-b:8080']);
  assert.equal(election.summary, 'leader node-a:8080, 1 other candidate');
  assert.equal(recipes.length, 1);
});

void test("lock: Go's Mutex layout (value ''), holder first, waiters in create order", () => {
  const recipes = decodeLayouts([kv(`/ns/lock/${A}`, '', A), kv(`/ns/lock/${B}`, '', B)]);
  const lock = only(recipes, 'lock');
  assert.deepEqual(roles(lock), [`holder ${A}`, `waiter ${B}`]);
  assert.equal(lock.summary, `held by lease ${A}, 1 waiter`);
});

void test('semaphore: `<leaseHex>-<n>` keys under that lease, in line by create revision', () => {
  const recipes = decodeLayouts([
    kv(`/ns/sem/${B}-0`, '', B),
    kv(`/ns/sem/${A}-3`, '', A, { createRevision: 40 }),
    kv(`/ns/sem/${A}-4`, '', A),
  ]);
  const sem = only(recipes, 'semaphore');
  assert.equal(sem.path, '/ns/sem');
  assert.deepEqual(roles(sem), [`in line #1 ${A}-3`, `in line #2 ${B}-0`, `in line #3 ${A}-4`]);
  assert.equal(recipes.length, 1, 'not read as services');
});

void test('a key named after another lease is not a candidate', () => {
  const recipes = decodeLayouts([kv(`/ns/x/${A}`, 'v', B)]);
  assert.equal(only(recipes, 'services').entries[0]?.name, A);
});

void test('rwmutex: mod revision order; readers share, a writer waits for all before it', () => {
  const recipes = decodeLayouts([
    kv('/ns/rw/read/1795991798380812586', '', A),
    kv('/ns/rw/read/1795991798380812999', '', C),
    kv('/ns/rw/write/1795991798390963272', '', B),
    kv('/ns/rw/read/1795991798400000000', '', C),
  ]);
  const rw = only(recipes, 'rwmutex');
  assert.equal(rw.path, '/ns/rw');
  assert.deepEqual(roles(rw), [
    `reader ${A}`,
    `reader ${C}`,
    `waiting-writer ${B}`,
    `waiting-reader ${C}`,
  ]);
  assert.equal(rw.summary, '2 readers, 2 waiters');
  // The key holds the writer's clock: an exact age.
  assert.deepEqual(rw.entries[0]?.since, { time: 1795991798380, source: 'key' });
});

void test('rwmutex: a writer first holds alone', () => {
  const recipes = decodeLayouts([
    kv('/ns/rw/write/1795991798390963272', '', B),
    kv('/ns/rw/read/1795991798400000000', '', A),
  ]);
  assert.deepEqual(roles(only(recipes, 'rwmutex')), [`writer ${B}`, `waiting-reader ${A}`]);
});

void test('double barrier: waiters by mod revision and the ready flag', () => {
  const recipes = decodeLayouts([
    kv('/ns/dbar/ready'),
    kv('/ns/dbar/waiters/1795991798401047039', '', B),
    kv('/ns/dbar/waiters/1795991798401395212', '', A),
  ]);
  const dbar = only(recipes, 'double-barrier');
  assert.deepEqual(roles(dbar), [
    'waiter 1795991798401047039',
    'waiter 1795991798401395212',
    'ready ready',
  ]);
  assert.equal(dbar.summary, '2 participants, ready');
  assert.equal(recipes.length, 1, 'the ready flag is not a barrier of its own');
});

void test('barrier: the path itself, empty, no lease', () => {
  const recipes = decodeLayouts([kv('/ns/barrier')]);
  assert.deepEqual(roles(only(recipes, 'barrier')), ['held barrier']);
});

void test('queue: items in mod revision order, not key order', () => {
  const second = kv('/ns/queue/1795991798401589492', 'job-1', undefined, { modRevision: 900 });
  const first = kv('/ns/queue/1795991798411428364', 'job-2', undefined, { modRevision: 800 });
  const queue = only(decodeLayouts([second, first]), 'queue');
  assert.deepEqual(roles(queue), ['item job-2', 'item job-1']);
  assert.equal(queue.summary, '2 items');
});

void test('priority queue: key order (lowest priority number first), markers beside', () => {
  const recipes = decodeLayouts([
    kv('/ns/pq/00100/0000000000000000', 'normal'),
    kv('/ns/pq/00001/0000000000000001', 'urgent-2'),
    kv('/ns/pq/00001/0000000000000000', 'urgent'),
    kv('__/ns/pq/00001'),
  ]);
  const pq = only(recipes, 'priority-queue');
  assert.deepEqual(roles(pq), [
    'item 1/0: urgent',
    'item 1/1: urgent-2',
    'item 100/0: normal',
    'marker 00001',
  ]);
  assert.equal(pq.summary, '3 items in 2 priorities');
  assert.equal(recipes.length, 1);
});

void test('services (leased, any value) and Go endpoints (JSON with Addr) apart', () => {
  const recipes = decodeLayouts([
    kv('/ns/services/api/api-1', '10.0.0.1:8080', A),
    kv('/ns/services/api/api-2', '10.0.0.2:8080', B),
    kv('/ns/svc/10.0.0.5:9000', '{"Op":0,"Addr":"10.0.0.5:9000","Metadata":{"weight":3}}'),
    kv('/ns/svc/10.0.0.6:9000', '{"Op":0,"Addr":"10.0.0.6:9000","Metadata":null}', A),
  ]);
  const services = only(recipes, 'services');
  assert.equal(services.path, '/ns/services/api');
  assert.deepEqual(roles(services), ['instance api-1', 'instance api-2']);
  const endpoints = only(recipes, 'endpoints');
  assert.deepEqual(roles(endpoints), ['endpoint 10.0.0.5:9000', 'endpoint 10.0.0.6:9000']);
});

void test('our bookkeeping keys are shown apart, not as a lock or services', () => {
  const recipes = decodeLayouts([
    kv(`/ns/q/__jobs.queue/line/${A}`, '', A),
    kv(`/ns/q/__jobs.queue/receipts/${A}.1`, 'w:x#1', A),
  ]);
  const book = only(recipes, 'bookkeeping');
  assert.equal(book.path, '/ns/q/__jobs.queue');
  assert.deepEqual(roles(book), [`key line/${A}`, `key receipts/${A}.1`]);
});

void test('anything else is unknown, by parent; every key lands in exactly one recipe', () => {
  const entries = [
    kv('/ns/config/limit', '100'),
    kv('/ns/config/mode', 'fast'),
    kv(`/ns/e/${A}`, 'me', A),
    kv('/ns/barrier'),
    kv('/ns/queue/1795991798401589492', 'job'),
  ];
  const recipes = decodeLayouts(entries);
  assert.deepEqual(roles(only(recipes, 'unknown')), ['key limit', 'key mode']);
  const keys = recipes.flatMap((r) => r.entries.map((e) => e.key)).sort();
  assert.deepEqual(keys, entries.map((e) => e.key).sort());
  assert.deepEqual(
    recipes.map((r) => r.path),
    ['/ns/barrier', '/ns/config', '/ns/e', '/ns/queue'],
    'sorted by path',
  );
});

void test('a decoder is added in one place: before the catch-alls it takes its keys', () => {
  // A made-up layout `path/ticket-<n>` under leases, which the services catch-all would take.
  const tickets: LayoutDecoder = {
    name: 'tickets',
    decode: (entries) => {
      const mine = entries.filter((e) => e.lease !== undefined && /\/ticket-\d+$/.test(e.key));
      if (mine.length === 0) return [];
      return [
        {
          kind: 'tickets',
          path: '/ns/tickets',
          summary: `${mine.length} tickets`,
          entries: mine.map((e) => ({ ...e, role: 'ticket', name: e.key })),
        },
      ];
    },
  };
  const entries = [kv('/ns/tickets/ticket-1', 'a', A), kv('/ns/tickets/ticket-2', 'b', B)];
  assert.equal(only(decodeLayouts(entries), 'services').entries.length, 2);
  const at = DECODERS.findIndex((d) => d.name === 'services');
  const decoders = [...DECODERS.slice(0, at), tickets, ...DECODERS.slice(at)];
  const recipes = decodeLayouts(entries, decoders);
  assert.deepEqual(
    recipes.map((r) => r.kind),
    ['tickets'],
  );
});

void test('diff: a new leader, joins and departures, appeared and gone', () => {
  const a = kv(`/ns/e/${A}`, 'node-a', A);
  const b = kv(`/ns/e/${B}`, 'node-b', B);
  const c = kv(`/ns/e/${C}`, 'node-c', C);
  const before = decodeLayouts([a, b, kv('/ns/config/x', '1')]);
  const after = decodeLayouts([b, c, kv('/ns/barrier')]);
  assert.deepEqual(
    diffRecipes(before, after).map((ch) => `${ch.kind} ${ch.path}: ${ch.text}`),
    [
      'barrier /ns/barrier: appeared: held',
      'election /ns/e: node-a (leader) left; node-b: candidate → leader; node-c joined as candidate',
      'unknown /ns/config: gone',
    ],
  );
  assert.deepEqual(diffRecipes(after, after), []);
  const many = decodeLayouts(
    Array.from({ length: 6 }, (_, i) => kv(`/ns/queue/179599179840158949${i}`, `job-${i}`)),
  );
  assert.deepEqual(
    diffRecipes([], many).map((ch) => ch.text),
    ['appeared: 6 items'],
  );
  assert.deepEqual(
    diffRecipes(many, decodeLayouts([])).map((ch) => ch.text),
    ['gone'],
  );
  const more = decodeLayouts([
    ...many.flatMap((r) => r.entries),
    ...Array.from({ length: 5 }, (_, i) => kv(`/ns/queue/179599179850158949${i}`, `new-${i}`)),
  ]);
  assert.deepEqual(
    diffRecipes(many, more).map((ch) => ch.text),
    ['5 joined, 0 left, 0 changed'],
  );
});
