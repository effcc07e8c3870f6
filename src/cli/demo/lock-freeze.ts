/**
 * The demo's lock scene. worker-1 holds a lock and worker-2 queues behind it (`etcdc lock`, each
 * in its own process). worker-1 freezes (SIGSTOP) past its TTL: its lease runs out in etcd and
 * worker-2 takes the lock with a higher fencing token. A write fenced with worker-1's token is
 * refused. worker-1 runs again (SIGCONT) and is told at once that it lost the lock: it exits 4.
 */
import type { EtcdConnector } from '../../connector.js';
import { CliChild, type CliRecord } from './cli-child.js';

/** What the scene borrows from the demo. */
export interface SceneTools {
  readonly say: (text: string) => void;
  readonly color: (name: 'green' | 'yellow' | 'red', text: string) => string;
  /** `p`, or a rejection at the step deadline (or when the demo is interrupted). */
  readonly deadline: <T>(p: Promise<T>, what: string) => Promise<T>;
  /** Runs `f` at the end of the demo, whatever happened. */
  readonly cleanup: (f: () => Promise<unknown>) => void;
  readonly stepTimeoutMs: number;
}

interface Acquired {
  key: string;
  token: string;
  at: number;
}

/** Runs the scene; resolves with the rows it adds to the demo's summary. */
export async function lockFreezeScene(
  conn: EtcdConnector,
  ttl: number,
  cliArgs: readonly string[],
  tools: SceneTools,
): Promise<[string, string][]> {
  const { say, color, deadline } = tools;
  const path = conn.constructPath('locks', 'demo');
  const worker = (id: string): CliChild => {
    const w = new CliChild(id, ['lock', path, '--ttl', String(ttl), ...cliArgs]);
    tools.cleanup(() => w.kill());
    return w;
  };
  const acquired = (w: CliChild): Promise<Acquired> =>
    deadline(w.next(acquiredOf, tools.stepTimeoutMs), `${w.identity} acquired`);

  const first = worker('worker-1');
  const held = await acquired(first);
  say(color('green', `worker-1 holds ${held.key} (fencing token ${held.token})`));

  // worker-2's key is in the queue once etcd shows a second key under the lock's path.
  const queued = await conn.client.watch().prefix(`${path}/`).create();
  let second: CliChild;
  try {
    const joined = new Promise<void>((resolve) =>
      queued.once('put', () => {
        resolve();
      }),
    );
    second = worker('worker-2');
    await deadline(joined, 'worker-2 queued');
  } finally {
    await queued.cancel();
  }
  const nextHolder = acquired(second);
  nextHolder.catch(() => undefined);
  say('worker-2 queues behind it (an `etcdctl lock` on this path would queue in the same line)');

  first.freeze();
  const frozenAt = performance.now();
  say(color('yellow', 'worker-1 freezes (SIGSTOP): no keepalive goes out, its lease runs out'));
  const next = await nextHolder;
  const moved = (next.at - frozenAt) / 1000;
  say(
    color('green', `worker-2 holds ${next.key} (fencing token ${next.token})`) +
      `, ${moved.toFixed(2)} s after the freeze`,
  );

  // What storage that checks the token does: the compare fails, nothing is written.
  const fenced = await conn.client
    .if(held.key, 'Create', '==', held.token)
    .then(conn.client.put(conn.constructPath('locks-demo', 'balance')).value('worker-1'))
    .commit();
  say(
    `a write fenced with worker-1's token ${held.token} is ` +
      (fenced.succeeded ? color('red', 'APPLIED (wrong!)') : 'refused: its key is gone'),
  );
  if (fenced.succeeded) throw new Error('a write fenced with a lost lock was applied');

  const lost = deadline(
    first.next((r, at) => (r.event === 'lost' ? at : undefined), tools.stepTimeoutMs),
    'worker-1 told of its loss',
  );
  first.resume();
  const resumedAt = performance.now();
  const toldAfter = (await lost) - resumedAt;
  const code = await deadline(first.exited, 'worker-1 exit');
  say(
    color('yellow', `worker-1 runs again (SIGCONT): told it lost the lock`) +
      ` ${toldAfter.toFixed(1)} ms later; exit code ${String(code)}`,
  );
  await deadline(second.stop(), 'worker-2 release');
  return [
    [`lock moved after a freeze (TTL ${ttl}s)`, `${moved.toFixed(2)} s`],
    ['frozen holder told of its loss on resuming', `${toldAfter.toFixed(1)} ms`],
  ];
}

function acquiredOf(r: CliRecord, at: number): Acquired | undefined {
  if (r.event !== 'acquired' || typeof r.key !== 'string' || typeof r.token !== 'string') {
    return undefined;
  }
  return { key: r.key, token: r.token, at };
}
