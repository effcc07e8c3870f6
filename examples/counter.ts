// A shared counter: concurrent adds never lose an update.
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'counter_example');
const hits = conn.newCounter(conn.constructPath('counters', 'hits'));

const before = await hits.get();
await Promise.all(Array.from({ length: 50 }, () => hits.add(1)));
const after = await hits.get();
console.log(`50 concurrent adds: ${before} -> ${after}`);
// Only if nobody changed it meanwhile:
console.log('reset:', await hits.compareAndSet(after, 0), '->', await hits.get());
