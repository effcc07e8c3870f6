/**
 * A gRPC endpoint registered as Go's `naming/endpoints` does it, so Go's etcd resolver, Go's
 * `endpoints.Manager.List` and our endpoint tracker all read it: key `servicePath + '/' + addr`,
 * value `{"Op":0,"Addr":"<addr>","Metadata":<metadata>}` byte for byte as Go's `json.Marshal`
 * writes it (engines/go-endpoint.ts), under a lease.
 *
 * It is an EphemeralKey with that value: it lives while this process keeps its session alive,
 * vanishes when the process dies or pauses past the TTL, is put back under a new lease after a
 * loss, and is put back when someone else deletes or overwrites it — never taken from another
 * live owner (the ephemeral key's ownership rule).
 */
import { InvalidArgumentError } from '../errors.js';
import type { ConnectorContext } from '../engines/context.js';
import { endpointValue, goJson, validateAddr } from '../engines/go-endpoint.js';
import { validateSignal } from '../engines/lifecycle.js';
import { validatePath, validateTtl, validateValue } from '../paths.js';
import { sessionOf, type SessionHandle } from '../session/session-handle.js';
import { EphemeralKey } from './ephemeral-key.js';

/** Options of `conn.newEndpointRegistration(servicePath, addr, options)`. */
export interface EndpointRegistrationOptions {
  /**
   * Anything JSON can say about the instance (zone, weight, version), stored as Go's `Metadata`.
   * Default: none (`null`).
   */
  metadata?: unknown;
  /** Lease TTL in whole seconds: the instance vanishes this long after its process died. Default 10. */
  ttl?: number;
  /**
   * Register under this session (from `conn.session()`) instead of the connector's shared
   * session for `ttl` (which is then ignored). The registration is bound to it: when its lease is
   * lost, the error stream reports it and ends, and the key is not put back.
   */
  session?: SessionHandle;
}

/** Options of {@link EndpointRegistration.register}. */
export interface EndpointRegisterOptions {
  /** Aborts the registration; nothing stays behind. */
  signal?: AbortSignal;
}

const DEFAULT_TTL = 10;

/**
 * One instance of a gRPC service, readable by Go. Create it with
 * `conn.newEndpointRegistration(servicePath, addr, options)`; the constructor validates
 * everything and does no I/O.
 *
 * ```ts
 * await using ep = conn.newEndpointRegistration(conn.constructPath('grpc', 'api'), '10.0.0.1:50051', {
 *   metadata: { zone: 'a' },
 * });
 * const errors = await ep.register();
 * ```
 */
export class EndpointRegistration implements AsyncDisposable {
  /** The key in etcd: `servicePath + '/' + addr`. */
  readonly key: string;
  /** The lease TTL in seconds (of the connector's session; see `options.session`). */
  readonly ttl: number;

  private readonly ephemeral: EphemeralKey;
  private readonly session: SessionHandle | undefined;
  private metadataJson: string;

  /** @internal Use `conn.newEndpointRegistration(...)`. */
  constructor(
    private readonly ctx: ConnectorContext,
    readonly servicePath: string,
    readonly addr: string,
    options: EndpointRegistrationOptions = {},
  ) {
    validatePath(servicePath, ctx.root, 'servicePath');
    validateAddr(addr);
    if (typeof options !== 'object' || (options as unknown) === null) {
      throw new InvalidArgumentError('options', 'must be an object');
    }
    this.ttl = validateTtl(options.ttl ?? DEFAULT_TTL, 'options.ttl');
    if (options.session !== undefined) {
      const s = sessionOf(options.session);
      if (s === undefined || !ctx.sessions.owns(s)) {
        throw new InvalidArgumentError(
          'options.session',
          'must be a session from conn.session() of this connector',
        );
      }
      this.session = options.session;
    }
    this.key = `${servicePath}/${addr}`;
    this.metadataJson = goJson(options.metadata, 'options.metadata');
    validateValue(this.key, this.value, ctx.maxRequestBytes, 'options.metadata');
    this.ephemeral = new EphemeralKey(ctx, this.key);
  }

  /** The bytes stored in etcd (as Go writes them). */
  get value(): string {
    return endpointValue(this.addr, this.metadataJson);
  }

  /** The metadata as stored (decoded from the stored JSON; `null` for none). */
  get metadata(): unknown {
    return JSON.parse(this.metadataJson) as unknown;
  }

  /** True while registered (also while being put back after a lease loss). */
  get registered(): boolean {
    return this.ephemeral.created;
  }

  /** The lease the key is (or is being) written under, in hex. */
  get leaseId(): string | undefined {
    return this.ephemeral.leaseId;
  }

  /**
   * Writes the endpoint under the lease and resolves with its error stream once it is in etcd.
   * The stream carries SessionLostError (lease lost; the key is put back under a new one),
   * KeyChangedError (someone else deleted or overwrote it; it is put back) and KeyExistsError
   * (another live owner holds the key; it is taken back when that owner's key goes).
   *
   * @throws KeyExistsError another live process (or registration of this connector) holds the key
   * @throws InvalidStateError registered already (call `stop()` first)
   * @throws UnavailableError / TimeoutError etcd is unreachable (nothing is retried)
   * @throws AbortError `signal` fired; nothing stays behind
   * @throws ClosedError the connector is closed
   */
  register(options: EndpointRegisterOptions = {}): Promise<AsyncIterable<Error>> {
    const signal = validateSignal(options.signal);
    return this.ephemeral.create(this.value, this.ttl, {
      ...(signal === undefined ? {} : { signal }),
      ...(this.session === undefined ? {} : { session: this.session }),
    });
  }

  /**
   * Replaces the metadata (Go's readers see an update of the same address). The new value is
   * also what a put-back writes, even when this call fails.
   *
   * @throws InvalidArgumentError not JSON, or too large (before any I/O; nothing changes)
   * @throws InvalidStateError not registered
   * @throws SessionLostError / KeyExistsError / ClosedError as {@link EphemeralKey.update}
   */
  async update(metadata: unknown): Promise<void> {
    const json = goJson(metadata);
    validateValue(this.key, endpointValue(this.addr, json), this.ctx.maxRequestBytes, 'metadata');
    const previous = this.metadataJson;
    this.metadataJson = json;
    try {
      await this.ephemeral.update(this.value);
    } catch (err) {
      // Not registered: nothing was written, so the old metadata is still the truth.
      if (!this.ephemeral.created) this.metadataJson = previous;
      throw err;
    }
  }

  /**
   * Deregisters at once (the key is deleted only while it is ours) and releases the lease.
   * Idempotent. Rejects with the typed error if etcd could not be reached (the key then goes when
   * its lease expires); local cleanup is done anyway.
   */
  stop(): Promise<void> {
    return this.ephemeral.delete();
  }

  /** Same as `stop()`, never rejects. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop().catch(() => undefined);
  }
}
