// A work queue Go services can share: producers enqueue, each item goes to exactly one consumer.
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'queue_example');
const jobs = conn.newQueue(conn.constructPath('queues', 'jobs'));

// Two consumers wait on the empty queue; each enqueue wakes one of them, not both.
const consumers = [1, 2].map(async (n) => `consumer ${n} got: ${await jobs.dequeue()}`);
await jobs.enqueue('resize image 17');
await jobs.enqueue('send mail 4');
for (const line of await Promise.all(consumers)) console.log(line);

// Priorities: 0 comes first.
const alerts = conn.newPriorityQueue(conn.constructPath('queues', 'alerts'));
await alerts.enqueue('disk 80% full', 10);
await alerts.enqueue('disk full', 0);
console.log('first alert:', await alerts.dequeue());
console.log('next alert:', await alerts.dequeue());
