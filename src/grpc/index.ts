/**
 * `etcd-connector/grpc`: a name resolver for `@grpc/grpc-js`, so a Node gRPC client dialling
 * `etcd:///<servicePath>` follows the live instances registered there in Go's `naming/endpoints`
 * format (by `conn.newEndpointRegistration`, or by Go's `endpoints.Manager`). A subpath of its
 * own: `@grpc/grpc-js` is an optional peer dependency, loaded only by those who import this.
 *
 * ```ts
 * import { registerEtcdResolver } from 'etcd-connector/grpc';
 * registerEtcdResolver(conn);
 * const client = new Client('etcd:///my_namespace/grpc/api', grpc.credentials.createInsecure());
 * ```
 *
 * @packageDocumentation
 */
import { experimental, status, type ChannelOptions } from '@grpc/grpc-js';
import type { EtcdConnector } from '../connector.js';
import { splitAddr } from '../engines/go-endpoint.js';
import { InvalidArgumentError } from '../errors.js';
import type { EndpointData, EndpointTracker } from '../recipes/endpoint-tracker.js';

/** Options of {@link registerEtcdResolver}. */
export interface EtcdResolverOptions {
  /** The target scheme to answer for. Default `'etcd'` (targets `etcd:///<servicePath>`). */
  scheme?: string;
  /**
   * The load-balancing policy of channels that set no `grpc.service_config` of their own:
   * `'round_robin'` (default: spread calls over every live instance) or `'pick_first'` (gRPC's
   * own default: one instance at a time).
   */
  loadBalancingPolicy?: 'round_robin' | 'pick_first';
}

type Listener = experimental.ResolverListener;
type ServiceConfigResult = Parameters<Listener>[2];

/**
 * Registers the resolver for `scheme` (default `etcd`) in `@grpc/grpc-js`: every channel to
 * `etcd:///<servicePath>` then follows the endpoints under `servicePath` (an absolute path inside
 * the connector's namespace; `etcd:////ns/svc` works too, which is what a Go client must dial to
 * reach the same key, since Go strips one slash). Percent escapes in the path are decoded, as
 * Go's resolver reads them (`etcd:///ns/my%20svc` follows `/ns/my svc`). The authority part of
 * the target is ignored: the connector names the cluster.
 *
 * Each channel runs one endpoint tracker (a watch on the connector's shared stream): instances
 * that die vanish from its address list when their lease expires (TTL + up to one keepalive
 * interval), new ones appear as soon as the watch delivers them. While etcd cannot be reached a
 * channel keeps its last list; before its first list it fails calls with `UNAVAILABLE`.
 * `conn.close()` ends every tracker of it. Registering again for the same scheme replaces the
 * earlier registration for channels made afterwards.
 *
 * @throws InvalidArgumentError not a connector, or bad options
 */
export function registerEtcdResolver(conn: EtcdConnector, options: EtcdResolverOptions = {}): void {
  if (typeof (conn as Partial<EtcdConnector> | null)?.newEndpointTracker !== 'function') {
    throw new InvalidArgumentError('conn', 'must be an EtcdConnector');
  }
  // Checked as unknown: JavaScript callers can pass anything.
  const scheme: unknown = options.scheme ?? 'etcd';
  if (typeof scheme !== 'string' || !/^[a-z][a-z0-9+.-]*$/.test(scheme)) {
    throw new InvalidArgumentError('options.scheme', `must be a URI scheme, got ${String(scheme)}`);
  }
  const policy: unknown = options.loadBalancingPolicy ?? 'round_robin';
  if (policy !== 'round_robin' && policy !== 'pick_first') {
    throw new InvalidArgumentError(
      'options.loadBalancingPolicy',
      `must be 'round_robin' or 'pick_first', got ${String(policy)}`,
    );
  }
  const serviceConfig = experimental.statusOrFromValue({
    loadBalancingConfig: [{ [policy]: {} }],
    methodConfig: [],
  });

  class EtcdResolver implements experimental.Resolver {
    /** The service path (the raw target path when it does not decode; then every call fails). */
    private readonly path: string;
    private readonly malformed: boolean;
    private readonly config: ServiceConfigResult;
    private tracker: EndpointTracker | undefined;
    /** The addresses last delivered, as a comparable string. */
    private delivered: string | undefined;

    constructor(
      target: experimental.GrpcUri,
      private readonly listener: Listener,
      channelOptions: ChannelOptions,
    ) {
      const path = servicePathOf(target);
      this.malformed = path === undefined;
      this.path = path ?? target.path;
      // The channel's own service config wins over our default policy.
      this.config = channelOptions['grpc.service_config'] === undefined ? serviceConfig : null;
    }

    static getDefaultAuthority(target: experimental.GrpcUri): string {
      // The service's name, when it can stand in a URL's authority (grpc-js parses one).
      const name = (servicePathOf(target) ?? '').split('/').filter(Boolean).at(-1) ?? '';
      return /^[A-Za-z0-9._~-]+$/.test(name) ? name : 'localhost';
    }

    updateResolution(): void {
      // The watch pushes every change as it happens, so a request to resolve again (gRPC asks
      // when a connection fails) has nothing to add — as in Go's etcd resolver. Answering it
      // anyway would loop: each answer resets gRPC's re-resolution backoff.
      if (this.tracker === undefined) this.follow();
    }

    destroy(): void {
      const tracker = this.tracker;
      this.tracker = undefined;
      this.delivered = undefined;
      void tracker?.stop();
    }

    private follow(): void {
      let tracker: EndpointTracker;
      try {
        if (this.malformed) throw new Error('malformed percent-encoding in the target path');
        tracker = conn.newEndpointTracker(this.path);
      } catch (err) {
        // A bad path or a closed connector: every call on the channel says why.
        process.nextTick(() => {
          this.fail(err);
        });
        return;
      }
      this.tracker = tracker;
      const stream = tracker.start();
      void (async () => {
        try {
          for await (const data of stream) {
            if (this.tracker !== tracker) return;
            this.onData(data);
          }
        } catch (err) {
          if (this.tracker === tracker) this.fail(err);
          return;
        }
        // Ended without a final error: destroyed, or the connector closed.
        if (this.tracker === tracker) this.fail(new Error('the etcd connector was closed'));
      })();
    }

    private onData(data: EndpointData): void {
      if (data.revision === 0) {
        // Not listed yet: say why calls cannot go anywhere (etcd unreachable), once.
        if (data.error !== undefined && this.delivered === undefined) this.fail(data.error);
        return;
      }
      const seen = new Set<string>();
      const endpoints: experimental.Endpoint[] = [];
      const bad: string[] = [];
      for (const e of data.endpoints.values()) {
        const hp = splitAddr(e.addr);
        if (hp === undefined) {
          bad.push(e.addr);
          continue;
        }
        const id = `${hp.host}|${hp.port}`;
        if (seen.has(id)) continue;
        seen.add(id);
        endpoints.push({ addresses: [{ host: hp.host, port: hp.port }] });
      }
      const key = [...seen].join(',');
      if (this.delivered === key) return;
      this.delivered = key;
      const skipped = bad.length === 0 ? '' : ` (not host:port, skipped: ${bad.join(', ')})`;
      this.listener(experimental.statusOrFromValue(endpoints), {}, this.config, skipped);
      if (endpoints.length === 0) {
        // The empty list drops the old connections, but grpc-js's round_robin then queues calls
        // until their deadline; an error after it makes them fail at once, saying why.
        this.fail(new Error(`no instance registered under ${this.path}${skipped}`));
      }
    }

    private fail(err: unknown): void {
      const message = err instanceof Error ? err.message : String(err);
      this.listener(
        experimental.statusOrFromError({
          code: status.UNAVAILABLE,
          details: `etcd resolver for ${this.path}: ${message}`,
        }),
        {},
        this.config,
        message,
      );
    }
  }

  experimental.registerResolver(scheme, EtcdResolver);
}

/**
 * The service path of a target: its path, absolute (`etcd:///ns/svc` and `etcd:////ns/svc`), with
 * percent escapes decoded as Go's resolver sees them (`etcd:///ns/my%20svc` is `/ns/my svc`);
 * undefined when an escape is malformed.
 */
function servicePathOf(target: experimental.GrpcUri): string | undefined {
  const path = target.path.startsWith('/') ? target.path : `/${target.path}`;
  try {
    return decodeURIComponent(path);
  } catch {
    return undefined;
  }
}
