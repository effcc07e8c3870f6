// Readers together, a writer alone, in the layout Go's RWMutex recipe uses.
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'rwmutex_example');
const rw = conn.newRWMutex(conn.constructPath('locks', 'config'), { ttl: 10 });

const [r1, r2] = [await rw.rlock(), await rw.rlock()]; // two readers at once
console.log(`readers: ${r1.key} ${r2.key}`);
const writer = rw.lock().then((w) => (console.log('writer holds, alone'), w));
await r1.unlock();
await r2.unlock(); // the writer goes once every earlier reader has left
const w = await writer;
await w.fencedTxn([conn.client.put(conn.constructPath('config', 'limit')).value('200')]);
await w.unlock();
