// What lives under the namespace, in recipe terms: who leads, who holds, who waits.
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'inspect_example');
await conn
  .newRegistration(conn.constructPath('services', 'api'), 'node-a')
  .register('10.0.0.1', 10);
await conn.client.put(conn.constructPath('config', 'limit')).value('100');

// `once`: list, ask each distinct lease's TTL, yield one state, end. Without it: live.
for await (const { recipes, leases } of conn.newInspector(conn.root).start({ once: true })) {
  for (const r of recipes) {
    console.log(`${r.kind} ${r.path}: ${r.summary}`);
    for (const e of r.entries) {
      const ttl =
        e.lease === undefined ? '' : ` (lease ${e.lease}, ${leases.get(e.lease)?.ttl}s left)`;
      console.log(`  ${e.role} ${e.name}${ttl}`);
    }
  }
}
