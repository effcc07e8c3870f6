/**
 * One side of the observer case in its own process (see kv-child.ts for why): a writer client puts
 * a burst under a fresh prefix while our Observer or a raw etcd3 watcher receives it; put
 * acknowledgements and deliveries are stamped on this process's monotonic clock.
 *
 * Args: <ours|raw> <endpoints,comma-separated>
 * Commands: {"prefix":p,"count":n,"inFlight":n} -> {"event":"burst", rate, lags, missing, dups,
 * disorder, cpuPerEventUs}
 */
import { Etcd3 } from 'etcd3';
import { fail, send, serve } from './protocol.js';

const [side, endpointList = ''] = process.argv.slice(2);
const endpoints = endpointList.split(',');
const VALUE = 'v'.repeat(32);

interface Delivery {
  readonly rev: number;
  readonly at: number;
}

interface Subscriber {
  readonly deliveries: Delivery[];
  close(): Promise<void>;
}

type Subscribe = (prefix: string) => Promise<Subscriber>;

function rawSubscribe(raw: Etcd3): Subscribe {
  return async (prefix) => {
    const deliveries: Delivery[] = [];
    const watcher = await raw.watch().prefix(`${prefix}/`).create();
    watcher.on('put', (kv) => {
      deliveries.push({ rev: Number(kv.mod_revision), at: performance.now() });
    });
    return { deliveries, close: () => watcher.cancel() };
  };
}

async function oursSubscribe(): Promise<{ subscribe: Subscribe; close: () => Promise<void> }> {
  const { EtcdConnector } = await import('../../src/index.js');
  const conn = new EtcdConnector(endpoints, 'bench');
  const subscribe: Subscribe = (prefix) => {
    const deliveries: Delivery[] = [];
    const observer = conn.newObserver(prefix);
    const pump = (async () => {
      for await (const ev of observer.start(0, true)) {
        if (ev.type === 'put') deliveries.push({ rev: ev.revision, at: performance.now() });
      }
    })();
    return Promise.resolve({
      deliveries,
      close: async () => {
        await observer.stop();
        await pump.catch(() => undefined);
      },
    });
  };
  return { subscribe, close: () => conn.close() };
}

async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return true;
}

/** Puts a marker until the subscriber delivers one: its watch is then surely established. */
async function ready(writer: Etcd3, prefix: string, sub: Subscriber): Promise<void> {
  for (let attempt = 0; attempt < 75; attempt++) {
    const res = await writer.put(`${prefix}/ready`).value('1');
    const rev = Number(res.header.revision);
    if (await until(() => sub.deliveries.some((d) => d.rev === rev), 200)) return;
  }
  throw new Error('the subscriber never delivered the marker');
}

async function burst(
  writer: Etcd3,
  subscribe: Subscribe,
  prefix: string,
  n: number,
  inFlight: number,
): Promise<Record<string, unknown>> {
  const sub = await subscribe(prefix);
  try {
    await ready(writer, prefix, sub);
    const base = sub.deliveries.length;
    const acks = new Map<number, number>();
    let next = 0;
    const cpu0 = process.cpuUsage();
    const start = performance.now();
    const worker = async (): Promise<void> => {
      while (next < n) {
        const i = next++;
        const res = await writer.put(`${prefix}/k${i}`).value(VALUE);
        acks.set(Number(res.header.revision), performance.now());
      }
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
    // Whatever has not arrived by then counts as missing.
    await until(() => sub.deliveries.length - base >= n, 30000);
    const cpu = process.cpuUsage(cpu0);
    const got = sub.deliveries.slice(base);
    const unique = new Set(got.map((d) => d.rev));
    let disorder = 0;
    got.forEach((d, i) => {
      if (i > 0 && d.rev <= (got[i - 1]?.rev ?? 0)) disorder++;
    });
    const lags = got.flatMap((d) => {
      const ack = acks.get(d.rev);
      return ack === undefined ? [] : [Math.round((d.at - ack) * 1000) / 1000];
    });
    const last = got.reduce((m, d) => Math.max(m, d.at), start);
    return {
      rate: got.length === 0 ? 0 : got.length / ((last - start) / 1000),
      lags,
      missing: [...acks.keys()].filter((r) => !unique.has(r)).length,
      dups: got.length - unique.size,
      disorder,
      /** CPU of this process (writer and receiver) per event, in microseconds. */
      cpuPerEventUs: (cpu.user + cpu.system) / Math.max(1, got.length),
    };
  } finally {
    await sub.close();
  }
}

async function main(): Promise<void> {
  const writer = new Etcd3({ hosts: endpoints });
  let subscribe: Subscribe;
  let close: () => Promise<void>;
  if (side === 'ours') {
    ({ subscribe, close } = await oursSubscribe());
  } else {
    const raw = new Etcd3({ hosts: endpoints });
    subscribe = rawSubscribe(raw);
    close = () => {
      raw.close();
      return Promise.resolve();
    };
  }
  serve(
    async (cmd) => {
      const result = await burst(
        writer,
        subscribe,
        String(cmd.prefix),
        Number(cmd.count),
        Number(cmd.inFlight),
      );
      send('burst', result);
    },
    async () => {
      await close();
      writer.close();
    },
  );
  send('ready');
}

main().catch(fail);
