/**
 * Holds many ephemeral keys in its own process (for a clean RSS figure): with our EphemeralKey on
 * one TTL, or with one etcd3 Lease per key. Prints `baseline`, then `steady` once every key exists
 * and a keepalive round has passed, and cleans up (`closed`) when stdin ends.
 *
 * Args: <ours|etcd3> <endpoints,comma-separated> <key prefix> <count> <ttl seconds>
 * Run with --expose-gc.
 */
import { Etcd3 } from 'etcd3';
import { fail, send } from './protocol.js';

const [mode, endpointList = '', prefix = '', countText = '1000', ttlText = '5'] =
  process.argv.slice(2);
const endpoints = endpointList.split(',');
const count = Number(countText);
const ttl = Number(ttlText);
const CONCURRENCY = 64;

function memory(): { rss: number; heap: number } {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed };
}

/** Runs `fn(i)` for i in [0, count) with at most CONCURRENCY at a time. */
async function forEachLimited(fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await fn(next++);
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

interface Holder {
  warmUp(): Promise<void>;
  create(i: number): Promise<void>;
  close(): Promise<void>;
}

function etcd3Holder(): Holder {
  const client = new Etcd3({ hosts: endpoints });
  const leases: ReturnType<Etcd3['lease']>[] = [];
  return {
    warmUp: async () => {
      await client.get(`${prefix}/warm-up`).string();
    },
    create: async (i) => {
      const lease = client.lease(ttl);
      lease.on('lost', (err) => {
        send('error', { message: err.message });
      });
      leases.push(lease);
      await lease.put(`${prefix}/k${i}`).value(`instance-${i}`);
    },
    close: async () => {
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < leases.length) await leases[next++]?.revoke().catch(() => undefined);
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      client.close();
    },
  };
}

async function oursHolder(): Promise<Holder> {
  const { EtcdConnector } = await import('../../src/index.js');
  const conn = new EtcdConnector(endpoints, 'bench');
  const held: unknown[] = [];
  return {
    warmUp: async () => {
      await conn.client.get(`${prefix}/warm-up`).string();
    },
    create: async (i) => {
      const key = conn.newEphemeralKey(`${prefix}/k${i}`);
      held.push(key, await key.create(`instance-${i}`, ttl));
    },
    close: () => conn.close(),
  };
}

async function main(): Promise<void> {
  const holder = mode === 'ours' ? await oursHolder() : etcd3Holder();
  await holder.warmUp();
  send('baseline', memory());
  const t0 = performance.now();
  await forEachLimited((i) => holder.create(i));
  const createMs = performance.now() - t0;
  // One keepalive round (every TTL/3) at least, so the figure includes steady-state keepalives.
  await new Promise((resolve) => setTimeout(resolve, (ttl * 1000) / 3 + 500));
  send('steady', { ...memory(), createMs });
  process.stdin.resume();
  process.stdin.on('end', () => {
    const t1 = performance.now();
    void holder.close().then(() => {
      send('closed', { ms: performance.now() - t1 });
    });
  });
}

main().catch(fail);
