// Leader work that a deposed leader cannot do: every write carries the fencing token.
import { EtcdConnector, LEStatus, NotLeaderError, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'fencing_example');
const elector = conn.newLeaderElector(conn.constructPath('elections', 'jobs'), 'worker-1', 5);
const state = conn.constructPath('jobs', 'last-run');

for await (const ev of elector.start()) {
  if (ev.status !== LEStatus.Leader) continue; // follower or suspended: no leader work
  try {
    // Runs only while our leader key still has our token's create revision.
    await elector.fencedTxn([conn.client.put(state).value(new Date().toISOString())]);
    console.log(`wrote under token ${ev.token?.revision}`);
  } catch (err) {
    if (!(err instanceof NotLeaderError)) throw err;
    console.log('deposed: the write did not land');
  }
  break;
}
