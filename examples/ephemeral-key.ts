// A liveness key: there while this process lives, gone at once on delete, back after a lease loss.
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'ephemeral_example');
const eph = conn.newEphemeralKey(conn.constructPath('workers', 'worker-1'));

const errors = await eph.create('10.0.0.1:8080', 10);
void (async () => {
  // Lease losses and changes by others are reported here; the key puts itself back by itself.
  for await (const err of errors) console.error('ephemeral key:', err.message);
})();

await eph.update('10.0.0.1:9090');
console.log('value:', (await conn.client.get(eph.key).string()) ?? '(none)');
await eph.delete();
console.log('after delete:', (await conn.client.get(eph.key).string()) ?? '(none)');
