/**
 * A chaos worker: one process that runs, at once, the lock loops (chaos/worker-locks.ts), the
 * loops of writes whose answer can be lost (chaos/worker-toolbox.ts), ephemeral keys
 * (chaos/worker-ephemeral.ts), an elector doing fenced leader work, another one's work through
 * `run()` (chaos/worker-leader-work.ts), a service registration, a tracker, and an observer of
 * the prefix the writer fills — and writes down everything it does (chaos/worker-context.ts).
 *
 * Args: --id w1 --inc 0 --endpoints a,b,c --ttl 3 --log file --root /chaos
 * Stops cleanly on a `stop` line on stdin (or stdin's end, or SIGTERM).
 */
import { subscribe } from 'node:diagnostics_channel';
import { createInterface } from 'node:readline';
import { LEStatus, EtcdConnectorError, type DiagnosticMessages } from '../src/index.js';
import {
  closeLog,
  conn,
  errorFields,
  id,
  inc,
  log,
  path,
  pause,
  session,
  signal,
  stop,
  stopped,
  ttl,
} from './worker-context.js';
import { clockOrigin, fromLibrary } from './clock.js';
import { ephemeralCycleLoop, ephemeralLoop, ephemeralSharedLoop } from './worker-ephemeral.js';
import { leaderWorkLoop } from './worker-leader-work.js';
import { counterLoop, multiLockLoop, rwLoop, semaphoreLoop } from './worker-locks.js';
import {
  adderLoop,
  barrierLoop,
  consumerLoop,
  producerLoop,
  transferLoop,
} from './worker-toolbox.js';

process.on('unhandledRejection', (err) => {
  log({ kind: 'unhandled', ...errorFields(err) });
});
process.on('uncaughtException', (err) => {
  log({ kind: 'unhandled', ...errorFields(err) });
  process.exit(1);
});

// Every keepalive ack moves a lease's deadline: written down so the checker can end a hold at
// the deadline a paused or killed holder last knew.
subscribe('etcd-connector:session.keepalive', (m) => {
  const msg = m as DiagnosticMessages['etcd-connector:session.keepalive'];
  log({ kind: 'deadline', lease: msg.leaseId, deadlineAt: fromLibrary(msg.deadlineAt) });
});

// A session closed here is one this process revoked itself: the checker blames etcd for a lease
// revoked early only if no close was logged before the revocation. Losses are written down too.
subscribe('etcd-connector:session.state', (m) => {
  const msg = m as DiagnosticMessages['etcd-connector:session.state'];
  if (msg.state === 'closed' || msg.state === 'lost') {
    log({ kind: 'session', lease: msg.leaseId, state: msg.state });
  }
});

/** The elector: while leader, fenced writes of its token to the work key. */
async function electorLoop(): Promise<void> {
  const work = path('work');
  while (!stopped()) {
    const s = await session('election session');
    if (s === undefined) return;
    const elector = conn.newLeaderElector(path('election'), id, ttl, { session: s });
    let leading: string | undefined;
    let n = 0;
    const stream = elector.start({ signal });
    const writer = (async () => {
      while (!stopped() && !s.signal.aborted) {
        const token = elector.fencingToken;
        if (token !== undefined && elector.isLeader) {
          try {
            const res = await elector.fencedTxn([
              conn.client
                .put(work)
                .value(JSON.stringify({ token: token.revision, w: id, inc, n: n++ })),
            ]);
            log({
              kind: 'work',
              token: token.revision,
              outcome: 'ok',
              revision: Number(res.header.revision),
            });
          } catch (err) {
            const code = err instanceof EtcdConnectorError ? err.code : '';
            const outcome =
              code === 'ETCDC_TIMEOUT' || code === 'ETCDC_UNAVAILABLE' ? 'unknown' : 'failed';
            log({ kind: 'work', token: token.revision, outcome, ...errorFields(err) });
          }
        }
        await pause(100);
      }
    })();
    try {
      for await (const ev of stream) {
        if (ev.status === LEStatus.Leader && ev.token !== undefined) {
          if (leading !== ev.token.revision) {
            if (leading !== undefined) log({ kind: 'lead.ended', token: leading, how: 'new term' });
            leading = ev.token.revision;
            log({
              kind: 'lead.gained',
              token: leading,
              key: ev.token.key,
              revision: ev.revision,
              deadlineAt: clockOrigin + s.deadline,
            });
          }
        } else if (leading !== undefined) {
          log({
            kind: 'lead.ended',
            token: leading,
            how: ev.suspended ? 'suspended' : (ev.error?.name ?? 'follower'),
          });
          leading = undefined;
        }
      }
    } catch (err) {
      if (!stopped()) log({ kind: 'error', where: 'elector', ...errorFields(err) });
    }
    if (leading !== undefined) log({ kind: 'lead.ended', token: leading, how: 'stopped' });
    await elector.stop();
    await writer;
    await s.close();
  }
}

async function registration(): Promise<void> {
  const reg = conn.newRegistration(path('services'), id);
  for (;;) {
    try {
      const errors = await reg.register(`${id}#${inc}`, ttl, { signal });
      void (async () => {
        for await (const err of errors)
          log({ kind: 'error', where: 'registration', ...errorFields(err) });
      })();
      return;
    } catch (err) {
      if (stopped()) return;
      log({ kind: 'error', where: 'register', ...errorFields(err) });
      await pause(300);
    }
  }
}

async function trackerLoop(): Promise<void> {
  const tracker = conn.newServiceTracker(path('services'));
  try {
    for await (const data of tracker.start({ signal })) {
      log({
        kind: 'tracker',
        revision: data.revision,
        names: [...data.services.keys()],
        ...(data.error === undefined ? {} : { error: data.error.message }),
      });
    }
  } catch (err) {
    if (!stopped()) log({ kind: 'error', where: 'tracker', ...errorFields(err) });
  }
}

async function observerLoop(): Promise<void> {
  const prefix = path('obs');
  let from = 0;
  while (from === 0 && !stopped()) {
    try {
      from = Number((await conn.client.get(prefix).exec()).header.revision) + 1;
    } catch (err) {
      log({ kind: 'error', where: 'observer start', ...errorFields(err) });
      await pause(200);
    }
  }
  if (stopped()) return;
  log({ kind: 'obs.start', from });
  try {
    for await (const ev of conn
      .newObserver(prefix)
      .start({ fromRevision: from, recursive: true, signal })) {
      if (ev.type === 'resync') {
        log({
          kind: 'obs.resync',
          revision: ev.revision,
          snapshot: Object.fromEntries(ev.snapshot),
        });
      } else if (ev.type === 'put' || ev.type === 'delete') {
        log({
          kind: 'obs.event',
          type: ev.type,
          key: ev.key,
          value: ev.value,
          revision: ev.revision,
        });
      }
    }
  } catch (err) {
    if (!stopped()) log({ kind: 'error', where: 'observer', ...errorFields(err) });
  }
}

async function main(): Promise<void> {
  log({ kind: 'start', pid: process.pid });
  process.on('SIGTERM', stop);
  createInterface({ input: process.stdin })
    .on('line', (line) => {
      if (line.trim() === 'stop') stop();
    })
    .on('close', stop);
  const running = Promise.all([
    counterLoop(),
    // Two callers on the connector's session: hand-overs between them.
    counterLoop(true),
    counterLoop(true),
    semaphoreLoop(),
    rwLoop(),
    multiLockLoop(),
    adderLoop(),
    producerLoop(),
    consumerLoop(),
    transferLoop(),
    barrierLoop(),
    ephemeralLoop(),
    ephemeralCycleLoop(),
    ephemeralSharedLoop(),
    electorLoop(),
    leaderWorkLoop(),
    registration(),
    trackerLoop(),
    observerLoop(),
  ]);
  await new Promise<void>((resolve) => {
    signal.addEventListener(
      'abort',
      () => {
        resolve();
      },
      { once: true },
    );
  });
  // A worker whose controller died (no one to kill it, its cluster and proxies gone) must not
  // linger: the controller kills a slow one after 20 s; past 30 s, it goes by itself.
  setTimeout(() => {
    log({ kind: 'error', where: 'stop', message: 'still stopping 30 s after the stop' });
    process.exit(1);
  }, 30_000).unref();
  await running;
  await conn.close();
  log({ kind: 'exit', code: 0 });
  closeLog();
  // Nothing of ours may keep the process alive now: it exits by itself.
}

main().catch((err: unknown) => {
  log({ kind: 'unhandled', ...errorFields(err) });
  process.exitCode = 1;
});
