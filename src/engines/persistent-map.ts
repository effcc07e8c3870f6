/**
 * An immutable sorted map with string keys (a persistent treap): `set`/`delete` return a new map in
 * O(log n) time and memory, sharing every untouched node with the old one. The service tracker
 * emits one after every change: each emitted map is a true snapshot that stays valid however long
 * the consumer keeps it, and no change costs O(n) copying however many instances there are.
 * Iteration is in key order (JavaScript string order).
 */

interface Node<V> {
  readonly key: string;
  readonly value: V;
  /** Heap priority: random, so the tree is balanced in expectation. */
  readonly prio: number;
  readonly left: Node<V> | undefined;
  readonly right: Node<V> | undefined;
  readonly size: number;
}

function node<V>(
  key: string,
  value: V,
  prio: number,
  left: Node<V> | undefined,
  right: Node<V> | undefined,
): Node<V> {
  return { key, value, prio, left, right, size: 1 + (left?.size ?? 0) + (right?.size ?? 0) };
}

function insert<V>(n: Node<V> | undefined, key: string, value: V, prio: number): Node<V> {
  if (n === undefined) return node(key, value, prio, undefined, undefined);
  if (key === n.key) return n.value === value ? n : node(key, value, n.prio, n.left, n.right);
  if (key < n.key) {
    const l = insert(n.left, key, value, prio);
    if (l === n.left) return n;
    // Rotate right when the new node outranks this one (it can only be the child's root).
    return l.prio > n.prio
      ? node(l.key, l.value, l.prio, l.left, node(n.key, n.value, n.prio, l.right, n.right))
      : node(n.key, n.value, n.prio, l, n.right);
  }
  const r = insert(n.right, key, value, prio);
  if (r === n.right) return n;
  return r.prio > n.prio
    ? node(r.key, r.value, r.prio, node(n.key, n.value, n.prio, n.left, r.left), r.right)
    : node(n.key, n.value, n.prio, n.left, r);
}

/** Joins two treaps whose keys are all in `a` < all in `b`. */
function merge<V>(a: Node<V> | undefined, b: Node<V> | undefined): Node<V> | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return a.prio > b.prio
    ? node(a.key, a.value, a.prio, a.left, merge(a.right, b))
    : node(b.key, b.value, b.prio, merge(a, b.left), b.right);
}

function remove<V>(n: Node<V> | undefined, key: string): Node<V> | undefined {
  if (n === undefined) return undefined;
  if (key === n.key) return merge(n.left, n.right);
  if (key < n.key) {
    const l = remove(n.left, key);
    return l === n.left ? n : node(n.key, n.value, n.prio, l, n.right);
  }
  const r = remove(n.right, key);
  return r === n.right ? n : node(n.key, n.value, n.prio, n.left, r);
}

/** A treap from entries sorted by key, in O(n) (Cartesian tree built on a stack). */
function build<V>(sorted: readonly (readonly [string, V])[]): Node<V> | undefined {
  interface Draft {
    key: string;
    value: V;
    prio: number;
    left: Draft | undefined;
    right: Draft | undefined;
    size: number;
  }
  const stack: Draft[] = [];
  for (const [key, value] of sorted) {
    const d: Draft = {
      key,
      value,
      prio: Math.random(),
      left: undefined,
      right: undefined,
      size: 1,
    };
    let last: Draft | undefined;
    let top = stack.at(-1);
    while (top !== undefined && top.prio < d.prio) {
      last = stack.pop();
      top = stack.at(-1);
    }
    d.left = last;
    if (top !== undefined) top.right = d;
    stack.push(d);
  }
  const root = stack[0];
  // Sizes bottom-up, without recursion (a pathological priority order could be deep).
  const order: Draft[] = [];
  const todo: Draft[] = root === undefined ? [] : [root];
  for (let d = todo.pop(); d !== undefined; d = todo.pop()) {
    order.push(d);
    if (d.left !== undefined) todo.push(d.left);
    if (d.right !== undefined) todo.push(d.right);
  }
  for (const d of order.reverse()) {
    d.size = 1 + (d.left?.size ?? 0) + (d.right?.size ?? 0);
  }
  return root;
}

/** An immutable, sorted `ReadonlyMap<string, V>` with O(log n) persistent updates. */
export class PersistentMap<V = string> implements ReadonlyMap<string, V> {
  /** The empty map (of any value type: it holds none). */
  static readonly empty: PersistentMap<never> = new PersistentMap<never>(undefined);

  private constructor(private readonly root: Node<V> | undefined) {}

  /** A map of `entries` (later duplicates win), built in O(n log n). */
  static from<V = string>(entries: Iterable<readonly [string, V]>): PersistentMap<V> {
    const byKey = new Map<string, V>();
    for (const [k, v] of entries) byKey.set(k, v);
    const sorted = [...byKey].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return new PersistentMap(build(sorted));
  }

  get size(): number {
    return this.root?.size ?? 0;
  }

  get(key: string): V | undefined {
    let n = this.root;
    while (n !== undefined) {
      if (key === n.key) return n.value;
      n = key < n.key ? n.left : n.right;
    }
    return undefined;
  }

  has(key: string): boolean {
    let n = this.root;
    while (n !== undefined) {
      if (key === n.key) return true;
      n = key < n.key ? n.left : n.right;
    }
    return false;
  }

  /** A map with `key` set to `value`; this one is unchanged. */
  set(key: string, value: V): PersistentMap<V> {
    const root = insert(this.root, key, value, Math.random());
    return root === this.root ? this : new PersistentMap(root);
  }

  /** A map without `key`; this one is unchanged. */
  delete(key: string): PersistentMap<V> {
    const root = remove(this.root, key);
    return root === this.root ? this : new PersistentMap(root);
  }

  *entries(): MapIterator<[string, V]> {
    const stack: Node<V>[] = [];
    let n = this.root;
    for (;;) {
      while (n !== undefined) {
        stack.push(n);
        n = n.left;
      }
      const top = stack.pop();
      if (top === undefined) return;
      yield [top.key, top.value];
      n = top.right;
    }
  }

  *keys(): MapIterator<string> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): MapIterator<V> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries();
  }

  forEach(
    callbackfn: (value: V, key: string, map: ReadonlyMap<string, V>) => void,
    thisArg?: unknown,
  ): void {
    for (const [k, v] of this.entries()) callbackfn.call(thisArg, v, k, this);
  }

  /** A plain object of the entries, so `JSON.stringify` shows the instances. */
  toJSON(): Record<string, V> {
    return Object.fromEntries(this.entries());
  }

  readonly [Symbol.toStringTag] = 'PersistentMap';
}
