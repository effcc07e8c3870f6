// Mirror a config subtree: every change once, in order; a resync replaces the state.
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'observer_example');
const root = conn.constructPath('config');
const state = new Map<string, string>();

// Replay from a known revision: nothing written after it can be missed.
const from = Number((await conn.client.get(root).exec()).header.revision) + 1;
await conn.client.put(`${root}/limit`).value('100');
await conn.client.put(`${root}/mode`).value('fast');
await conn.client.delete().key(`${root}/mode`);

const obs = conn.newObserver(root);
for await (const ev of obs.start(from, true)) {
  if (ev.type === 'resync') {
    state.clear();
    for (const [k, v] of ev.snapshot) state.set(k, v);
  } else if (ev.type === 'put') {
    state.set(ev.key, ev.value);
  } else if (ev.type === 'delete') {
    state.delete(ev.key);
  } else {
    continue; // status: etcd unreachable / back; nothing is lost meanwhile
  }
  console.log(`${ev.revision} ${ev.type} ${ev.type === 'resync' ? '' : ev.key}`);
  if (ev.type === 'delete') break; // leaving the loop stops the observer
}
console.log('state:', Object.fromEntries(state));
