// Move money between accounts atomically: concurrent transfers retry until they commit, and the
// total never changes.
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'stm_example');
const alice = conn.constructPath('accounts', 'alice');
const bob = conn.constructPath('accounts', 'bob');
await conn.client.put(alice).value('100');
await conn.client.put(bob).value('100');

const transfer = (from: string, to: string, amount: number) =>
  conn.stm(async (tx) => {
    const balance = Number((await tx.get(from)) ?? '0');
    if (balance < amount) throw new Error(`insufficient funds in ${from}`);
    tx.put(from, String(balance - amount));
    tx.put(to, String(Number((await tx.get(to)) ?? '0') + amount));
  });

const results = await Promise.all([
  ...Array.from({ length: 10 }, () => transfer(alice, bob, 5)),
  ...Array.from({ length: 10 }, () => transfer(bob, alice, 3)),
]);
const retries = results.reduce((n, r) => n + r.attempts - 1, 0);
console.log(`${results.length} transfers committed (${retries} retries after conflicts)`);
const [a, b] = await Promise.all([conn.client.get(alice).number(), conn.client.get(bob).number()]);
console.log(`alice ${a}, bob ${b}, total: ${(a ?? 0) + (b ?? 0)}`);
