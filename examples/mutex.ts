// One job at a time across every process: a mutex, and a write that cannot land after a loss.
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'mutex_example');
const mutex = conn.newMutex(conn.constructPath('locks', 'nightly-report'), { ttl: 10 });

await mutex.withLock(async (signal, lock) => {
  console.log(`holding ${lock.key} (fencing token ${lock.token.revision}, at ${lock.revision})`);
  if (signal.aborted) return; // lost: stop side effects
  // Lands only while our lock key still has our token's create revision.
  await lock.fencedTxn([conn.client.put(conn.constructPath('report')).value('done')]);
  // Another holder (here: another connector) is refused at once; tryLock never waits.
  await using other = new EtcdConnector(prepareEndpointList(hosts, 2379), 'mutex_example');
  const attempt = await other.newMutex(mutex.path).tryLock();
  console.log(`someone else's tryLock: ${attempt === undefined ? 'held elsewhere' : 'got it'}`);
}); // released here: the next waiter holds in about one round trip
console.log(`after: ${(await conn.client.get(conn.constructPath('report')).string()) ?? '-'}`);
