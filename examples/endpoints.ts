// Register in Go's naming/endpoints format, then find instances the way Curator's provider does.
import { EtcdConnector, NoInstanceError, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'endpoints_example');
const api = conn.constructPath('grpc', 'api');

// Key api/<addr>, value {"Op":0,"Addr":...,"Metadata":...}: Go's etcd resolver reads it too.
for (const [addr, zone] of Object.entries({ '10.0.0.1:50051': 'a', '10.0.0.2:50051': 'b' })) {
  await conn.newEndpointRegistration(api, addr, { metadata: { zone }, ttl: 10 }).register();
}
console.log('stored:', await conn.client.get(`${api}/10.0.0.1:50051`).string());

const provider = conn.newServiceProvider(api, { strategy: 'round-robin' });
const first = await provider.pick();
const second = await provider.pick();
console.log('picked:', first.addr, second.addr);

// A failing instance: two errors within 30 s take it out of rotation for 30 s.
provider.noteError(first);
provider.noteError(first);
console.log('after errors:', (await provider.pick()).addr === second.addr ? 'skipped' : 'not');

const inZoneC = conn.newServiceProvider(api, {
  filter: (e) => (e.metadata as { zone?: string } | null)?.zone === 'c',
});
await inZoneC.pick().catch((err: unknown) => {
  if (err instanceof NoInstanceError) console.log('zone c:', err.message);
});
