/** What etcd itself counts, for the cases that compare what each side keeps open there. */
import type { Etcd3 } from 'etcd3';

/** Leases etcd keeps now (LeaseLeases). */
export async function leaseCount(client: Etcd3): Promise<number> {
  return (await client.leaseClient.leaseLeases({})).leases.length;
}

/**
 * Open gRPC streams of `method` (e.g. `Watch`, `LeaseKeepAlive`) on the member at `endpoint`, from
 * its Prometheus metrics: started minus handled.
 */
export async function openStreams(endpoint: string, method: string): Promise<number> {
  const res = await fetch(`${endpoint}/metrics`, { signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  const sum = (metric: string): number =>
    text
      .split('\n')
      .filter((l) => l.startsWith(`${metric}{`) && l.includes(`grpc_method="${method}"`))
      .reduce((acc, l) => acc + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  return sum('grpc_server_started_total') - sum('grpc_server_handled_total');
}
