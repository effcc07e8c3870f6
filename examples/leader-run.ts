// Leader work as a function: it runs while this participant leads and stops when it no longer does.
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'run_example');
const elector = conn.newLeaderElector(conn.constructPath('elections', 'reports'), 'node-a', 10);
const shutdown = new AbortController();

await elector.run(
  async (signal, token) => {
    // signal aborts on suspension, loss or stop; work already sent cannot be recalled, so every
    // write carries the token: a deposed leader's late write fails inside etcd.
    const key = conn.constructPath('reports', 'last');
    await elector.fencedTxn([conn.client.put(key).value(`term ${token.revision}`)]);
    console.log(`term ${token.revision}: report written (aborted: ${signal.aborted})`);
    shutdown.abort(); // one term is enough here; returning would resign and queue again
  },
  {
    signal: shutdown.signal,
    onError: (err) => {
      console.error('leader work failed:', err);
    },
  },
);
console.log('stopped');
