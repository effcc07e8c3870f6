// Your own leased keys on the connector's shared session, and recipes tied to that one lease.
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'session_example');
{
  await using s = await conn.session({ ttl: 10 }); // the shared session for TTL 10
  console.log(`lease ${s.leaseId} is ${s.state}`); // hex id, as in Go's key layouts
  await conn.client.put(conn.constructPath('mine')).value('x').lease(s.leaseIdDecimal).exec();
  // Recipes given { session } are bound to this lease: when it is lost they report it and end.
  const elector = conn.newLeaderElector(conn.constructPath('e'), 'node-a', 10, { session: s });
  for await (const ev of elector.start()) {
    console.log(`elector: ${ev.status}`);
    break;
  }
} // the handle is released here; the lease is revoked only when nobody else holds it
console.log('done');
