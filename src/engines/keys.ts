/**
 * Key and operation helpers of Go's `contrib/recipes` (key.go), shared by the barrier, the queues
 * and the counter: Go's unique keys (`prefix/<UnixNano>`), "create only if absent" (`putNewKV`),
 * and where our own bookkeeping keys go so that no Go reader mistakes them for data.
 */
import { CompareResult, CompareTarget, type ICompare, type IRequestOp } from 'etcd3';

/** The wall clock at start, in ns, minus the monotonic clock then: now = anchor + hrtime. */
const anchorNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
let lastNs = 0n;

/**
 * Go's `time.Now().UnixNano()` for key names (`fmt.Sprintf("%s/%v", prefix, nanos)`): the wall
 * clock in ns, here derived from the monotonic clock so that it strictly increases within the
 * process (two calls in one ns still get two keys). Across processes a collision is possible, as
 * in Go; creating keys with {@link absent} turns it into a retry.
 */
export function unixNano(): bigint {
  let now = anchorNs + process.hrtime.bigint();
  if (now <= lastNs) now = lastNs + 1n;
  lastNs = now;
  return now;
}

/** `prefix + '/' + UnixNano` — Go's `newUniqueKV` / `newUniqueEphemeralKey` key. */
export function uniqueKey(prefix: string): string {
  return `${prefix}/${unixNano().toString()}`;
}

/**
 * Where a recipe keeps keys of its own beside Go's layout: `<parent>/__<name>.<kind>` for a path
 * `<parent>/<name>`. Not under `path` itself: Go's Queue reads the prefix `path` without a slash,
 * so anything starting with `path` would be taken for an item. Inside the namespace, so a user
 * confined to a subtree can still write it.
 */
export function bookkeepingDir(path: string, kind: string): string {
  const slash = path.lastIndexOf('/');
  return `${path.slice(0, slash)}/__${path.slice(slash + 1)}.${kind}`;
}

/** "The key does not exist" (version 0): Go's `putNewKV` compare. */
export function absent(key: string | Buffer): ICompare {
  return {
    key: Buffer.from(key),
    target: CompareTarget.Version,
    result: CompareResult.Equal,
    version: 0,
  };
}

/** "The key was last written at `revision`" (`'0'`: it does not exist). */
export function modifiedAt(key: string | Buffer, revision: string | number): ICompare {
  return {
    key: Buffer.from(key),
    target: CompareTarget.Mod,
    result: CompareResult.Equal,
    mod_revision: revision,
  };
}

/** "The key was created at `revision`": this one creation of it, not a later one. */
export function createdAt(key: string | Buffer, revision: string | number): ICompare {
  return {
    key: Buffer.from(key),
    target: CompareTarget.Create,
    result: CompareResult.Equal,
    create_revision: revision,
  };
}

/** A put for a transaction; `lease` is etcd's decimal lease id (omitted: no lease). */
export function putOp(key: string | Buffer, value: string | Buffer, lease?: string): IRequestOp {
  return {
    request_put: {
      key: Buffer.from(key),
      value: Buffer.from(value),
      ...(lease === undefined ? {} : { lease }),
    },
  };
}

/** A delete of one key for a transaction; with `prevKv` the response carries what was deleted. */
export function deleteOp(key: string | Buffer, prevKv = false): IRequestOp {
  return { request_delete_range: { key: Buffer.from(key), ...(prevKv ? { prev_kv: true } : {}) } };
}
