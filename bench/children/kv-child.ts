/**
 * One side of the KV case in its own process, so that nothing process-wide one side's client
 * turns on (timers, hooks, GC pressure) touches the other's figures.
 *
 * Args: <ours|raw> <endpoints,comma-separated> <key prefix>
 * Commands: {"op":"put"|"get","inFlight":n,"ms":n} -> {"event":"rate","value":ops/s,"cpuUs":n}
 */
import { Etcd3 } from 'etcd3';
import { fail, send, serve } from './protocol.js';

const [side, endpointList = '', prefix = ''] = process.argv.slice(2);
const endpoints = endpointList.split(',');
const KEYS = 1000;
const VALUE = 'v'.repeat(64);

async function client(): Promise<{ client: Etcd3; close: () => Promise<void> }> {
  if (side === 'ours') {
    const { EtcdConnector } = await import('../../src/index.js');
    const conn = new EtcdConnector(endpoints, 'bench');
    return { client: conn.client, close: () => conn.close() };
  }
  const raw = new Etcd3({ hosts: endpoints });
  return {
    client: raw,
    close: () => {
      raw.close();
      return Promise.resolve();
    },
  };
}

/** Operations per second of `inFlight` loops running `op` for `ms`, and CPU us per operation. */
async function rate(
  c: Etcd3,
  op: string,
  inFlight: number,
  ms: number,
): Promise<{ value: number; cpuUs: number }> {
  let done = 0;
  let i = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = start + ms;
  const loop = async (): Promise<void> => {
    while (performance.now() < end) {
      const key = `${prefix}/k${i++ % KEYS}`;
      if (op === 'put') await c.put(key).value(VALUE);
      else await c.get(key).string();
      done++;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, loop));
  const cpu = process.cpuUsage(cpu0);
  return {
    value: done / ((performance.now() - start) / 1000),
    cpuUs: (cpu.user + cpu.system) / Math.max(1, done),
  };
}

client().then(({ client: c, close }) => {
  serve(async (cmd) => {
    send('rate', await rate(c, String(cmd.op), Number(cmd.inFlight), Number(cmd.ms)));
  }, close);
  send('ready');
}, fail);
