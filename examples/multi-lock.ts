// Move money between two accounts holding both locks: all or nothing, never a deadlock.
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'multilock_example');
const account = (name: string): string => conn.constructPath('accounts', name);
const lockOf = (name: string): string => conn.constructPath('locks', 'accounts', name);
await conn.client.put(account('alice')).value('100');
await conn.client.put(account('bob')).value('0');

// Taken in one global order (sorted paths) whatever order they are given in.
const both = conn.newMultiLock([lockOf('bob'), lockOf('alice')], { ttl: 10 });
await both.withLock(async (_signal, held) => {
  const alice = Number(await conn.client.get(account('alice')).string());
  const bob = Number(await conn.client.get(account('bob')).string());
  // One transaction, fenced by every lock's token.
  await held.fencedTxn([
    conn.client.put(account('alice')).value(String(alice - 30)),
    conn.client.put(account('bob')).value(String(bob + 30)),
  ]);
});
const balances = await conn.client
  .getAll()
  .prefix(conn.constructPath('accounts') + '/')
  .strings();
console.log('balances:', balances);
