/**
 * Service registration: one instance of a service as an ephemeral key
 * `servicePath + '/' + instance`, which a {@link ServiceTracker} on `servicePath` lists as
 * `instance`. It lives while this process keeps its lease: a crash or a pause past the TTL removes
 * it; `stop()` removes it at once. Lease loss, re-creation, and putting the key back when someone
 * else deletes or overwrites it (never fighting another live owner) are the EphemeralKey's.
 */
import { InvalidArgumentError } from '../errors.js';
import type { ConnectorContext } from '../engines/context.js';
import { validatePath } from '../paths.js';
import { EphemeralKey, type EphemeralKeyCreateOptions } from './ephemeral-key.js';

/** Checks an instance name: one path segment (no `/`, NUL, `.` or `..`), not empty. */
export function validateInstance(instance: unknown): string {
  if (typeof instance !== 'string' || instance === '') {
    throw new InvalidArgumentError('instance', 'must be a non-empty string');
  }
  if (instance.includes('/') || instance.includes('\0') || instance === '.' || instance === '..') {
    throw new InvalidArgumentError(
      'instance',
      `must be one path segment (no '/', NUL, '.' or '..'): ${instance}`,
    );
  }
  return instance;
}

/**
 * One registered instance of a service. Create it with `conn.newRegistration(servicePath,
 * instance)`; the constructor does no I/O.
 *
 * ```ts
 * await using reg = conn.newRegistration(conn.constructPath('services', 'api'), 'node-a');
 * const errors = await reg.register('10.0.0.1:8080', 10);
 * ```
 */
export class ServiceRegistration implements AsyncDisposable {
  /** The key in etcd: `servicePath + '/' + instance`. */
  readonly key: string;
  private readonly ephemeral: EphemeralKey;

  /** Use `conn.newRegistration(...)`; validates the path and the instance name, no I/O. */
  constructor(
    ctx: ConnectorContext,
    readonly servicePath: string,
    readonly instance: string,
  ) {
    validatePath(servicePath, ctx.root, 'servicePath');
    validateInstance(instance);
    this.key = `${servicePath}/${instance}`;
    this.ephemeral = new EphemeralKey(ctx, this.key);
  }

  /** True while registered (also while being put back after a lease loss). */
  get registered(): boolean {
    return this.ephemeral.created;
  }

  /**
   * Registers the instance with `value` under the connector's shared lease of `ttl` seconds.
   * Resolves with the error stream once the key is in etcd: SessionLostError (lease lost),
   * KeyChangedError (someone else deleted or overwrote the registration; it is put back) and
   * KeyExistsError (another live owner holds it; it is taken back when that owner's key goes).
   * Errors as {@link EphemeralKey.create}: KeyExistsError when another live process registered the
   * same instance.
   */
  register(
    value: string,
    ttl: number,
    options: EphemeralKeyCreateOptions = {},
  ): Promise<AsyncIterable<Error>> {
    return this.ephemeral.create(value, ttl, options);
  }

  /** Replaces the registered value (see {@link EphemeralKey.update}). */
  update(value: string): Promise<void> {
    return this.ephemeral.update(value);
  }

  /**
   * Deregisters at once and releases the lease. Idempotent. Rejects with the typed error if etcd
   * could not be reached (the key then goes when its lease expires); local cleanup is done anyway.
   */
  stop(): Promise<void> {
    return this.ephemeral.delete();
  }

  /** Same as `stop()`, never rejects. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop().catch(() => undefined);
  }
}
