/**
 * One side of the STM case in its own process: `loops` concurrent transfer loops between
 * `accounts` accounts for `ms`, with our `conn.stm` (retried until it commits) or etcd3's STM
 * (its default: 3 retries, then it throws — counted as a give-up, and the loop goes on).
 *
 * Args: <ours|etcd3> <endpoints,comma-separated>
 * Commands: {"op":"run","prefix":p,"accounts":n,"loops":n,"ms":n,"isolation":level}
 *   -> {"event":"rate","commits":n,"perSecond":n,"attempts":n,"gaveUp":n,"cpuUs":n}
 *   (attempts: runs of the transaction function, given-up transactions included)
 */
import { Etcd3, Isolation } from 'etcd3';
import { fail, send, serve } from './protocol.js';

const [side, endpointList = ''] = process.argv.slice(2);
const endpoints = endpointList.split(',');

/** Runs of a transaction function so far, both sides, committed or not. */
let attemptsTotal = 0;

/** One transfer of 1 from `a` to `b` at `isolation`. */
type Transfer = (a: string, b: string, isolation: string) => Promise<number>;

/** Our isolation names to etcd3's (a const enum: inlined at compile time). */
const ETCD3_ISOLATION: Record<string, Isolation> = {
  'serializable-snapshot': Isolation.SerializableSnapshot,
  serializable: Isolation.Serializable,
  'repeatable-reads': Isolation.RepeatableReads,
  'read-committed': Isolation.ReadCommitted,
};

async function transferer(): Promise<{ transfer: Transfer; close: () => Promise<void> }> {
  if (side === 'ours') {
    const { EtcdConnector } = await import('../../src/index.js');
    const conn = new EtcdConnector(endpoints, 'bench');
    return {
      transfer: async (a, b, isolation) => {
        const res = await conn.stm(
          async (tx) => {
            attemptsTotal += 1;
            const [va, vb] = await tx.getMany([a, b]);
            tx.put(a, String(Number(va ?? '0') - 1));
            tx.put(b, String(Number(vb ?? '0') + 1));
          },
          { isolation: isolation as 'serializable' },
        );
        return res.attempts;
      },
      close: () => conn.close(),
    };
  }
  const client = new Etcd3({ hosts: endpoints });
  return {
    transfer: async (a, b, isolation) => {
      let attempts = 0;
      const level = ETCD3_ISOLATION[isolation] ?? Isolation.SerializableSnapshot;
      await client.stm({ isolation: level }).transact(async (tx) => {
        attempts += 1;
        attemptsTotal += 1;
        const [va, vb] = await Promise.all([tx.get(a).string(), tx.get(b).string()]);
        await Promise.all([
          tx.put(a).value(String(Number(va ?? '0') - 1)),
          tx.put(b).value(String(Number(vb ?? '0') + 1)),
        ]);
      });
      return attempts;
    },
    close: () => {
      client.close();
      return Promise.resolve();
    },
  };
}

async function main(): Promise<void> {
  const { transfer, close } = await transferer();
  serve(async (cmd) => {
    const prefix = String(cmd.prefix);
    const accounts = Number(cmd.accounts);
    const loops = Number(cmd.loops);
    const ms = Number(cmd.ms);
    const isolation = String(cmd.isolation);
    let commits = 0;
    const attempts0 = attemptsTotal;
    let gaveUp = 0;
    let lastError: string | undefined;
    const cpu0 = process.cpuUsage();
    const start = performance.now();
    const end = start + ms;
    await Promise.all(
      Array.from({ length: loops }, async (_, l) => {
        let i = l;
        while (performance.now() < end) {
          const a = `${prefix}/${i % accounts}`;
          const b = `${prefix}/${(i + 1 + (l % (accounts - 1))) % accounts}`;
          i += loops;
          try {
            await transfer(a, b, isolation);
            commits += 1;
          } catch (err) {
            gaveUp += 1;
            lastError = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
          }
        }
      }),
    );
    const seconds = (performance.now() - start) / 1000;
    const cpu = process.cpuUsage(cpu0);
    send('rate', {
      commits,
      perSecond: commits / seconds,
      attempts: attemptsTotal - attempts0,
      gaveUp,
      cpuUs: (cpu.user + cpu.system) / Math.max(1, commits),
      lastError,
    });
  }, close);
  send('ready');
}

main().catch(fail);
