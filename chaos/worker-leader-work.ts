/**
 * A chaos worker's leader work through `elector.run(fn)` (Curator's LeaderSelector): fn writes its
 * token to the run-work key a few times with `elector.fencedTxn()` and returns, so the worker
 * resigns and queues again and the terms go round. Each term is written down from fn's start to
 * its signal's abort or its return, with the revision that granted it (the leadership.gained
 * diagnostic's): the checker allows one term at a time, and fenced writes only under live tokens.
 */
import { subscribe } from 'node:diagnostics_channel';
import type { DiagnosticMessages } from '../src/index.js';
import { clockOrigin } from './clock.js';
import {
  conn,
  errorFields,
  id,
  inc,
  log,
  path,
  pause,
  session,
  signal,
  stopped,
  ttl,
} from './worker-context.js';

/** Writes per term before fn returns. */
const WRITES_PER_TERM = 5;

/** The revision that granted each leader key its latest term. */
const grants = new Map<string, number>();
subscribe('etcd-connector:leadership.gained', (m) => {
  const msg = m as DiagnosticMessages['etcd-connector:leadership.gained'];
  grants.set(msg.key, msg.revision);
});

export async function leaderWorkLoop(): Promise<void> {
  const work = path('runwork');
  while (!stopped()) {
    const s = await session('leader work session');
    if (s === undefined) return;
    const elector = conn.newLeaderElector(path('run-election'), id, ttl, { session: s });
    try {
      await elector.run(
        async (termSignal, token) => {
          const term = token.revision;
          log({
            kind: 'run.started',
            token: term,
            key: token.key,
            deadlineAt: clockOrigin + s.deadline,
            revision: grants.get(token.key),
          });
          // The term ends for the checker the moment its signal aborts (synchronously), or
          // when fn returns: before the resignation lets the next one in.
          let ended = false;
          const end = (how: string): void => {
            if (ended) return;
            ended = true;
            log({ kind: 'run.ended', token: term, how });
          };
          termSignal.addEventListener(
            'abort',
            () => {
              end('aborted');
            },
            { once: true },
          );
          try {
            for (let n = 0; n < WRITES_PER_TERM && !termSignal.aborted && !stopped(); n++) {
              const value = JSON.stringify({ token: term, w: id, inc, n });
              await elector.fencedTxn([conn.client.put(work).value(value)]);
              await pause(20 + Math.random() * 60);
            }
          } finally {
            end('returned');
          }
        },
        // A write that failed (the term is over, etcd out of reach) ends the term's work; the
        // elector goes on.
        { signal, onError: () => undefined },
      );
    } catch (err) {
      if (!stopped()) log({ kind: 'error', where: 'leader work', ...errorFields(err) });
    }
    await s.close();
  }
}
