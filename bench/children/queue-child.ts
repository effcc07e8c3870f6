/**
 * One producer or consumer of the queue case, with our Queue, in its own process.
 *
 * Args: <endpoints,comma-separated> <queue path>
 * Commands:
 * - {"op":"consume"}: dequeue until stdin ends; one {"event":"got","latencyMs":n} per item
 *   (latency = now - the enqueue time carried in the value; one machine, one wall clock)
 * - {"op":"produce","count":n}: enqueue n items one after the other -> {"event":"produced"}
 */
import { fail, send, serve } from './protocol.js';

const [endpointList = '', path = ''] = process.argv.slice(2);

async function main(): Promise<void> {
  const { EtcdConnector } = await import('../../src/index.js');
  const conn = new EtcdConnector(endpointList.split(','), 'bench');
  const queue = conn.newQueue(path);
  const stop = new AbortController();
  let consuming: Promise<void> | undefined;
  serve(
    async (cmd) => {
      if (cmd.op === 'consume') {
        consuming ??= (async () => {
          for (;;) {
            const value = await queue.dequeue({ signal: stop.signal }).catch(() => undefined);
            if (value === undefined) return;
            send('got', { latencyMs: Date.now() - Number(value.split(' ')[0]) });
          }
        })();
        send('consuming');
      } else if (cmd.op === 'produce') {
        const count = Number(cmd.count);
        for (let i = 0; i < count; i++) await queue.enqueue(`${Date.now()} item ${i}`);
        send('produced');
      }
    },
    async () => {
      stop.abort();
      await consuming;
      await conn.close();
    },
  );
  // A first read: the connection is up before the parent starts the clock.
  await conn.client.get(path).exec();
  send('ready');
}

main().catch(fail);
