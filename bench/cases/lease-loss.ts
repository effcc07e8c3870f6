/**
 * Own lease-loss detection under a network blackhole (socket open, nothing flows): time from the
 * blackhole until the holder knows its lease is gone. Ours (the session, the elector's status with
 * an error, the ephemeral key's error stream) against etcd3's Lease `lost` event, same TTL, each
 * side behind its own fault proxy, both blackholed at the same instant.
 */
import type { Etcd3 } from 'etcd3';
import { startProxy, uniqueName, withTimeout, type FaultProxy } from '../../src/testing/index.js';
import type { BenchCase } from '../case.js';
import { deferred, pause, type BenchEnv, type Ours } from '../env.js';
import { median, now } from '../stats.js';
import { StreamReader } from '../streams.js';
import { ratioRow } from '../table.js';

const TTL = 2;
const BOUND = 0.55;
/** Let a few keepalives flow before the blackhole, so both sides start from steady state. */
const STEADY_MS = 1000;

interface OursProbe {
  session: Promise<number>;
  elector: Promise<number>;
  ephemeral: Promise<number>;
  close: () => Promise<void>;
}

async function startOurs(ours: Ours, proxy: FaultProxy): Promise<OursProbe> {
  const conn = new ours.EtcdConnector([proxy.endpoint], 'bench');
  const session = await conn.session({ ttl: TTL });
  const sessionLost = deferred<number>();
  session.signal.addEventListener('abort', () => {
    if (session.state === 'lost') sessionLost.resolve(now());
  });
  const elector = conn.newLeaderElector(conn.constructPath(uniqueName('loss-el')), 'x', TTL);
  const reader = new StreamReader(elector.start());
  await reader.until((e) => e.status === ours.LEStatus.Leader, 10000, 'ours leader');
  const eph = conn.newEphemeralKey(conn.constructPath(uniqueName('loss-eph')));
  const errors = new StreamReader(await eph.create('v', TTL));
  return {
    session: sessionLost.promise,
    elector: reader
      .until((e) => e.error instanceof ours.SessionLostError, 30000, 'elector loss report')
      .then((e) => e.at),
    ephemeral: errors
      .until((e) => e instanceof ours.SessionLostError, 30000, 'ephemeral key loss report')
      .then((e) => e.at),
    close: async () => {
      await Promise.allSettled([elector.stop(), eph.delete(), session.close()]);
      await conn.close();
      await Promise.allSettled([reader.close(), errors.close()]);
    },
  };
}

async function startEtcd3(
  raw: Etcd3,
): Promise<{ lost: Promise<number>; close: () => Promise<void> }> {
  const lease = raw.lease(TTL);
  const lost = deferred<number>();
  lease.on('lost', () => {
    lost.resolve(now());
  });
  await lease.grant();
  return {
    lost: lost.promise,
    close: async () => {
      await lease.revoke().catch(() => undefined);
    },
  };
}

async function once(
  env: BenchEnv,
  ours: Ours | undefined,
): Promise<{ etcd3: number; session?: number; elector?: number; ephemeral?: number }> {
  const pOurs = await startProxy(env.endpoints[0] ?? '');
  const pRaw = await startProxy(env.endpoints[0] ?? '');
  let probe: OursProbe | undefined;
  let peer: Awaited<ReturnType<typeof startEtcd3>> | undefined;
  try {
    if (ours !== undefined)
      probe = await env.guard('lease-loss setup', () => startOurs(ours, pOurs));
    peer = await startEtcd3(env.rawClient([pRaw.endpoint]));
    await pause(STEADY_MS);
    const t0 = now();
    pOurs.blackhole();
    pRaw.blackhole();
    const limit = 4 * TTL * 1000 + 5000;
    const since = (p: Promise<number>): Promise<number> =>
      withTimeout(p, limit, 'loss detection').then((t) => t - t0);
    const [etcd3, session, elector, ephemeral] = await Promise.all([
      since(peer.lost),
      ...(probe === undefined
        ? []
        : [probe.session, probe.elector, probe.ephemeral].map((p) =>
            env.guard('lease-loss', () => since(p)),
          )),
    ]);
    return {
      etcd3,
      ...(session === undefined ? {} : { session }),
      ...(elector === undefined ? {} : { elector }),
      ...(ephemeral === undefined ? {} : { ephemeral }),
    };
  } finally {
    pOurs.pass();
    pRaw.pass();
    await Promise.allSettled([probe?.close(), peer?.close()]);
    env.closeClients();
    await Promise.all([pOurs.close(), pRaw.close()]);
  }
}

export const leaseLossCase: BenchCase = {
  name: 'lease-loss',
  title: `own lease-loss detection under a proxy blackhole (TTL ${TTL} s)`,
  async run(env) {
    const reps = env.reps(1, 3);
    const ours = await env.ours();
    const samples: Awaited<ReturnType<typeof once>>[] = [];
    for (let i = 0; i < reps; i++) samples.push(await once(env, ours));
    const pick = (k: 'session' | 'elector' | 'ephemeral'): number | undefined => {
      const values = samples.flatMap((s) => (s[k] === undefined ? [] : [s[k]]));
      return values.length === 0 ? undefined : median(values);
    };
    const peer = median(samples.map((s) => s.etcd3));
    env.note(
      `lease-loss: ${reps} repetitions, median; etcd3 declares loss at 2 x TTL after its last ` +
        `keepalive, ours at (send time of the last acknowledged keepalive) + TTL`,
    );
    return [
      ratioRow(
        'lease-loss: session lost (ms)',
        pick('session'),
        'etcd3 Lease lost',
        peer,
        'lower',
        BOUND,
      ),
      ratioRow(
        'lease-loss: elector error (ms)',
        pick('elector'),
        'etcd3 Lease lost',
        peer,
        'lower',
        BOUND,
      ),
      ratioRow(
        'lease-loss: eph. key error (ms)',
        pick('ephemeral'),
        'etcd3 Lease lost',
        peer,
        'lower',
        BOUND,
      ),
    ];
  },
};
