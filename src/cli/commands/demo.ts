import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import type { EtcdConnector } from '../../connector.js';
import type { HealthReport } from '../../recipes/health-monitor.js';
import { startEtcdCluster, withTimeout, type EtcdCluster } from '../../testing/index.js';
import { connect, parseEndpoints, positiveInt, checkFlags, type GlobalFlags } from '../connect.js';
import { startDashboard } from '../dashboard/server.js';
import { lockFreezeScene } from '../demo/lock-freeze.js';
import { Participant, type ParticipantStatus } from '../demo/participant.js';
import { aborted, interruptedExitCode, onInterrupt } from '../interrupt.js';
import { createOutput, type Output } from '../output.js';
import { printReport } from './health.js';

interface DemoFlags extends GlobalFlags {
  ttl: number;
  dashboard: boolean;
}

/** Everything the demo waits for has a deadline; the whole run must end within a minute. */
const STEP_TIMEOUT_MS = 15_000;
/** With --dashboard: the scenario starts when a page is open, or after this long. */
const OPEN_PAGE_MS = 30_000;
/** With --dashboard: a pause before each step, so what it changes can be seen on the page. */
const STEP_PAUSE_MS = 3000;

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(
      'A narrated live scenario: election, registrations, an observer, a clean leader stop, a ' +
        'crash, a lock whose holder freezes, a member failure. Without --endpoints it starts an ' +
        'embedded 3-member etcd; with --endpoints it works in a namespace of its own there and ' +
        'removes its keys at the end.',
    )
    .option('--ttl <seconds>', 'lease TTL of the participants', positiveInt, 2)
    .option(
      '--dashboard',
      'serve the live dashboard (its address is printed), pace the steps, and keep running ' +
        'after the scenario until Ctrl-C',
      false,
    )
    .action(async (_o: unknown, cmd: Command) => {
      const flags = checkFlags(cmd.optsWithGlobals<DemoFlags>(), cmd);
      const out = createOutput(flags.json);
      const interrupt = onInterrupt();
      try {
        await runDemo(flags, out, interrupt.signal);
      } catch (err) {
        // Ctrl-C is not a failure of the demo: everything was cleaned up; exit as interrupted.
        if (!interrupt.signal.aborted) throw err;
        out.emit({ event: 'interrupted' }, 'interrupted');
        process.exitCode = interruptedExitCode(interrupt.signal);
      } finally {
        interrupt.dispose();
      }
    });
}

async function runDemo(flags: DemoFlags, out: Output, signal: AbortSignal): Promise<void> {
  const t0 = performance.now();
  interrupted = new Promise<never>((_, reject) => {
    signal.addEventListener('abort', () => {
      reject(new Error('demo interrupted'));
    });
  });
  interrupted.catch(() => undefined);
  const say = (text: string, record: Record<string, unknown> = {}): void => {
    const t = ((performance.now() - t0) / 1000).toFixed(2).padStart(6);
    out.emit(
      { event: 'demo', t: Number(t), text, ...record },
      `${out.color('dim', t + 's')} ${text}`,
    );
  };
  const step = (title: string): void => {
    out.info('');
    say(out.color('bold', `== ${title}`));
  };
  const cleanups: (() => Promise<unknown>)[] = [];
  const embedded = flags.endpoints === undefined;
  const namespace = embedded
    ? flags.namespace
    : `${flags.namespace}-demo-${randomBytes(3).toString('hex')}`;
  let cluster: EtcdCluster | undefined;
  try {
    step('etcd');
    let endpoints: string[];
    if (embedded) {
      say('starting an embedded 3-member etcd cluster on 127.0.0.1 ...');
      cluster = await deadline(startEtcdCluster(3), 'etcd cluster');
      const c = cluster;
      cleanups.push(() => c.stop());
      endpoints = c.endpoints;
      say(`cluster up: ${endpoints.join(', ')}`);
    } else {
      endpoints = parseEndpoints(flags.endpoints ?? '');
      say(`using ${endpoints.join(', ')}, namespace ${namespace}`);
    }
    signal.throwIfAborted();

    const conn = connect({ ...flags, endpoints: endpoints.join(','), namespace });
    cleanups.push(async () => {
      if (!embedded) await conn.client.delete().prefix(conn.root + '/');
      await conn.close();
    });

    // The pause before each step (with --dashboard, so a person can follow it on the page).
    let pause = (): Promise<void> => Promise.resolve();
    if (flags.dashboard) {
      step('dashboard');
      const dashboard = await deadline(
        startDashboard(conn, { healthIntervalMs: 1000 }),
        'dashboard',
      );
      cleanups.push(() => dashboard.stop());
      out.emit(
        { event: 'dashboard', url: dashboard.url },
        `${out.color('dim', ' '.repeat(7))}${out.color('bold', `open ${dashboard.url} to watch`)}`,
      );
      say(`the scenario starts when the page is open (or in ${OPEN_PAGE_MS / 1000} s)`);
      await Promise.race([dashboard.opened, sleep(OPEN_PAGE_MS), interrupted]);
      pause = () => Promise.race([sleep(STEP_PAUSE_MS), interrupted]);
    }

    step('health monitor (every member, every 500 ms; prints on change)');
    const health = watchHealth(conn, out);
    cleanups.push(() => health.stop());
    await deadline(health.first, 'first health report');

    step('observer on config/ and tracker on services/api');
    const observed = watchConfig(conn, say);
    cleanups.push(() => observed.stop());
    const tracked = trackServices(conn, say);
    cleanups.push(() => tracked.stop());
    await deadline(tracked.first, 'first tracker map');

    await pause();
    step(`three participants campaign (separate processes, TTL ${flags.ttl}s)`);
    const cliArgs = ['--endpoints', endpoints.join(','), '--namespace', namespace];
    const electionArgs = (id: string): string[] => [
      'elect',
      'demo',
      id,
      '--ttl',
      String(flags.ttl),
      ...cliArgs,
    ];
    const onStatus = (s: ParticipantStatus): void => {
      if (s.status === 'leader')
        say(out.color('green', `${s.identity} leads (fencing token ${s.token ?? '?'})`));
      else if (s.suspended) say(out.color('yellow', `${s.identity} suspended`));
      else say(`${s.identity} follows ${s.leader ?? 'unknown'}`);
    };
    const participants: Participant[] = [];
    for (const id of ['node-a', 'node-b', 'node-c']) {
      const p = new Participant(id, electionArgs(id), onStatus);
      participants.push(p);
      cleanups.push(() => p.kill());
      // One at a time, so the queue order is the arrival order.
      await deadline(
        p.nextStatus(() => true, STEP_TIMEOUT_MS),
        `first status of ${id}`,
      );
    }
    const leaderOf = (): Participant | undefined =>
      participants.find((p) => p.alive && p.last?.status === 'leader');
    let leader = leaderOf();
    if (leader === undefined) throw new Error('no participant leads');

    await pause();
    step('instances register; the tracker shows them');
    const keys = ['api-1', 'api-2', 'api-3'].map((name, i) => {
      const reg = conn.newRegistration(conn.constructPath('services', 'api'), name);
      cleanups.push(() => reg.stop());
      return reg.register(`10.0.0.${i + 1}:8080`, flags.ttl);
    });
    await deadline(Promise.all(keys), 'registrations');
    await tracked.until((m) => m.size === 3);

    step('configuration changes; the observer prints each one');
    await conn.client.put(conn.constructPath('config', 'feature-x')).value('on');
    await conn.client.put(conn.constructPath('config', 'limit')).value('100');
    await conn.client.delete().key(conn.constructPath('config', 'feature-x'));
    await observed.until(3);

    const results: [string, string][] = [];
    await pause();
    step(`clean stop of the leader (${leader.identity} resigns on SIGINT)`);
    const others = participants.filter((p) => p !== leader);
    let takeover = Promise.any(
      others.map((p) => p.nextStatus((s) => s.status === 'leader', STEP_TIMEOUT_MS)),
    );
    let t = performance.now();
    await deadline(leader.stop(), 'leader exit');
    let next = await deadline(takeover, 'takeover');
    results.push(['handover after a clean stop', `${(next.at - t).toFixed(1)} ms`]);
    say(`takeover after a clean stop: ${(next.at - t).toFixed(1)} ms`);

    leader = leaderOf();
    if (leader === undefined) throw new Error('no participant leads');
    await pause();
    step(`crash of the leader (${leader.identity} gets SIGKILL; its lease must expire first)`);
    const survivors = participants.filter((p) => p !== leader && p.alive);
    takeover = Promise.any(
      survivors.map((p) => p.nextStatus((s) => s.status === 'leader', STEP_TIMEOUT_MS)),
    );
    t = performance.now();
    await leader.kill();
    next = await deadline(takeover, 'takeover');
    results.push([
      `takeover after a crash (TTL ${flags.ttl}s)`,
      `${((next.at - t) / 1000).toFixed(2)} s`,
    ]);
    say(`takeover after a crash: ${((next.at - t) / 1000).toFixed(2)} s`);

    await pause();
    step(`a lock: its holder freezes (SIGSTOP) past the TTL (${flags.ttl}s)`);
    results.push(
      ...(await lockFreezeScene(conn, flags.ttl, cliArgs, {
        say,
        color: (name, text) => out.color(name, text),
        deadline,
        cleanup: (f) => cleanups.push(f),
        stepTimeoutMs: STEP_TIMEOUT_MS,
      })),
    );

    await pause();
    step('an etcd member fails');
    if (cluster !== undefined) {
      const raftLeader = await deadline(cluster.leader(), 'raft leader');
      const victim = cluster.members.find((m) => m !== raftLeader) ?? raftLeader;
      say(`kill -9 of member ${victim.name} (${victim.endpoint})`);
      const degraded = health.until((r) =>
        r.members.some((m) => m.endpoint === victim.endpoint && !m.healthy),
      );
      await victim.kill();
      await degraded;
      // A leader whose connection went through the dead member is suspended for a moment; it
      // leads again once it has re-checked through another member.
      const leading =
        leaderOf() ??
        (await deadline(
          Promise.any(
            participants
              .filter((p) => p.alive)
              .map((p) => p.nextStatus((s) => s.status === 'leader', STEP_TIMEOUT_MS)),
          ),
          'the leader after the member failure',
        ));
      say(`the leader keeps leading: ${leading.identity}`);
    } else {
      say('skipped: the demo does not kill members of a cluster it did not start');
    }

    step('summary');
    out.emit(
      { event: 'summary', results: Object.fromEntries(results) },
      out.table(['WHAT', 'TIME'], results),
    );
    if (flags.dashboard) {
      step('the demo keeps running: the page stays live; Ctrl-C stops everything');
      await aborted(signal);
      say('Ctrl-C: stopping');
    }
    step('everything stops');
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    say(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
}

function watchHealth(conn: EtcdConnector, out: Output) {
  const mon = conn.newHealthMonitor({ timeoutMs: 400 });
  const waiters = new Set<{ ok: (r: HealthReport) => boolean; resolve: () => void }>();
  let resolveFirst!: () => void;
  const first = new Promise<void>((r) => (resolveFirst = r));
  const loop = (async () => {
    for await (const report of mon.start(false, 500)) {
      printReport(out, report);
      resolveFirst();
      for (const w of [...waiters]) {
        if (w.ok(report)) {
          waiters.delete(w);
          w.resolve();
        }
      }
    }
  })();
  return {
    first,
    until: (ok: (r: HealthReport) => boolean) =>
      deadline(new Promise<void>((resolve) => waiters.add({ ok, resolve })), 'health report'),
    stop: async () => {
      await mon.stop();
      await loop;
    },
  };
}

function watchConfig(conn: EtcdConnector, say: (s: string) => void) {
  const obs = conn.newObserver(conn.constructPath('config'));
  let seen = 0;
  let wake: (() => void) | undefined;
  const loop = (async () => {
    for await (const ev of obs.start(0, true)) {
      if (ev.type === 'resync' || ev.type === 'status') continue;
      seen += 1;
      say(
        `observer: ${ev.type.toUpperCase()} ${ev.key}${ev.type === 'put' ? ` = ${ev.value}` : ''} (revision ${ev.revision})`,
      );
      wake?.();
    }
  })();
  return {
    until: (n: number) =>
      deadline(
        new Promise<void>((resolve) => {
          const check = (): void => {
            if (seen >= n) resolve();
          };
          wake = check;
          check();
        }),
        'observer events',
      ),
    stop: async () => {
      await obs.stop();
      await loop;
    },
  };
}

function trackServices(conn: EtcdConnector, say: (s: string) => void) {
  const tracker = conn.newServiceTracker(conn.constructPath('services', 'api'));
  let current: ReadonlyMap<string, string> = new Map();
  let wake: (() => void) | undefined;
  let resolveFirst!: () => void;
  const first = new Promise<void>((r) => (resolveFirst = r));
  const loop = (async () => {
    for await (const data of tracker.start()) {
      current = data.services;
      const list = [...data.services]
        .map(([k, v]) => `${k}=${v}`)
        .sort()
        .join(', ');
      say(`tracker: ${data.services.size} instance(s)${list === '' ? '' : `: ${list}`}`);
      resolveFirst();
      wake?.();
    }
  })();
  return {
    first,
    until: (ok: (m: ReadonlyMap<string, string>) => boolean) =>
      deadline(
        new Promise<void>((resolve) => {
          const check = (): void => {
            if (ok(current)) resolve();
          };
          wake = check;
          check();
        }),
        'tracker map',
      ),
    stop: async () => {
      await tracker.stop();
      await loop;
    },
  };
}

/** A pause that never keeps the process alive by itself (Ctrl-C ends it through `interrupted`). */
function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** Ctrl-C during the demo: every pending wait rejects at once, so the cleanups run. */
let interrupted: Promise<never> = new Promise<never>(() => undefined);

/** `p`, or a rejection at the step deadline or on Ctrl-C. */
function deadline<T>(p: Promise<T>, what: string): Promise<T> {
  return withTimeout(Promise.race([p, interrupted]), STEP_TIMEOUT_MS, `demo: ${what}`);
}
