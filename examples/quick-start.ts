// The ten-line tour: connect, elect a leader, register, track, close.
import { EtcdConnector, LEStatus, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
const conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'quick_start');

const elector = conn.newLeaderElector(conn.constructPath('elections', 'billing'), 'node-a', 10);
for await (const ev of elector.start()) {
  if (ev.status === LEStatus.Leader) {
    console.log(`leading with fencing token ${ev.token?.revision}, at ${ev.revision}`);
    break; // leaving the loop resigns
  }
}

const reg = conn.newRegistration(conn.constructPath('services', 'billing'), 'node-a');
await reg.register('10.0.0.1:8080', 10);
const tracker = conn.newServiceTracker(conn.constructPath('services', 'billing'));
for await (const { services } of tracker.start()) {
  console.log('instances:', Object.fromEntries(services));
  break;
}

await conn.close(); // resigns, deregisters, revokes the lease; the process exits by itself
