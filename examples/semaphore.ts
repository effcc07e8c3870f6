// At most 2 of 5 workers at once, wherever they run.
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'semaphore_example');
const sem = conn.newSemaphore(conn.constructPath('semaphores', 'exports'), 2, { ttl: 10 });

let running = 0;
let most = 0;
await Promise.all(
  [1, 2, 3, 4, 5].map((n) =>
    sem.withPermit(async (signal) => {
      most = Math.max(most, ++running);
      await new Promise((resolve) => setTimeout(resolve, 20));
      if (!signal.aborted) console.log(`worker ${n} done`);
      running--;
    }),
  ),
);
console.log(`at most ${most} at once`);
