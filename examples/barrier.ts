// Start together: workers wait at a barrier until it is released; a double barrier lets a
// group of three enter together and leave together.
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'barrier_example');

const gate = conn.newBarrier(conn.constructPath('barriers', 'deploy'));
await gate.hold();
const workers = [1, 2, 3].map(async (n) => {
  await gate.wait(); // resolves when the gate is released
  return n;
});
console.log('workers are waiting at the gate');
await gate.release();
console.log('released workers:', (await Promise.all(workers)).join(' '));

// One object per participant (in real life: one per process).
const round = conn.constructPath('barriers', 'round');
const group = [1, 2, 3].map(() => conn.newDoubleBarrier(round, 3));
await Promise.all(group.map((p) => p.enter())); // each waits until all 3 are in
console.log('all 3 entered');
await Promise.all(group.map((p) => p.leave())); // each waits until all 3 are out
console.log('all 3 left');
