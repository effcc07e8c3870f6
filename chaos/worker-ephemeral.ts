/**
 * A chaos worker's ephemeral keys, each value saying whose it is (`ephemeralValue`):
 * - its own key, `eph/<w>`: created once, updated now and then, kept until the worker stops. The
 *   nemesis's vandal deletes it or overwrites it without a lease; it must come back;
 * - a key it creates and deletes in cycles, `eph-cycle/<w>`: a deleted cycle must not come back;
 * - one key every worker wants, `eph-shared`: held a moment by one, then deleted; the others ask
 *   again and again, and none may take it from a live owner.
 * The README's promises are the checker's rules (chaos/check-ephemeral.ts).
 */
import { KeyExistsError, type EphemeralKey } from '../src/index.js';
import { ephemeralValue } from './records.js';
import { conn, errorFields, id, inc, log, path, pause, stopped, ttl } from './worker-context.js';

/**
 * Creates `eph` with `value()`, asking again until it is ours or the worker stops (another live
 * owner holds it: a while later; etcd out of reach: the same). Its error stream is written down.
 */
async function createAgain(eph: EphemeralKey, value: () => string): Promise<boolean> {
  while (!stopped()) {
    try {
      const errors = await eph.create(value(), ttl);
      void (async () => {
        for await (const err of errors)
          log({ kind: 'eph.error', key: eph.key, ...errorFields(err) });
      })();
      return true;
    } catch (err) {
      if (!(err instanceof KeyExistsError)) {
        log({ kind: 'error', where: `ephemeral create ${eph.key}`, ...errorFields(err) });
      }
      await pause(100 + Math.random() * 200);
    }
  }
  return false;
}

/** Updates now and then for `ms` (or until the worker stops): `n` counts the values. */
async function updates(eph: EphemeralKey, ms: number, value: (n: number) => string): Promise<void> {
  const until = performance.now() + ms;
  for (let n = 1; !stopped() && performance.now() < until; n++) {
    await pause(150 + Math.random() * 250);
    // A failed update (lease lost, etcd out of reach) is fine: its value is what a put-back writes.
    await eph.update(value(n)).catch(() => undefined);
  }
}

/**
 * Deletes cycle `c`, written down as deleted (with the revision of a read made after it) only once
 * `delete()` resolved: from that revision on, a put of the cycle is a late copy.
 */
async function deleteNoted(eph: EphemeralKey, c: number): Promise<void> {
  try {
    await eph.delete();
    const after = await conn.client.get(eph.key).exec();
    log({
      kind: 'eph',
      key: eph.key,
      phase: 'deleted',
      c,
      revision: Number(after.header.revision),
    });
  } catch (err) {
    // Not deleted for sure (or no revision to judge by): nothing to say about the cycle.
    if (!stopped())
      log({ kind: 'error', where: `ephemeral delete ${eph.key}`, ...errorFields(err) });
  }
}

/** The worker's own key: there for the worker's whole life (`conn.close()` deletes it). */
export async function ephemeralLoop(): Promise<void> {
  const eph = conn.newEphemeralKey(path('eph', id));
  if (!(await createAgain(eph, () => ephemeralValue(id, inc, 0, 0)))) return;
  log({ kind: 'eph', key: eph.key, phase: 'created', c: 0 });
  await updates(eph, Infinity, (n) => ephemeralValue(id, inc, 0, n));
}

/**
 * Creates `eph`, keeps it `holdMs` (updating it), deletes it, waits `gapMs`, again and again:
 * cycle `c` writes down its creation and its deletion.
 */
async function cycles(eph: EphemeralKey, holdMs: () => number, gapMs: () => number): Promise<void> {
  for (let c = 1; !stopped(); c++) {
    if (!(await createAgain(eph, () => ephemeralValue(id, inc, c, 0)))) return;
    log({ kind: 'eph', key: eph.key, phase: 'created', c });
    await updates(eph, holdMs(), (n) => ephemeralValue(id, inc, c, n));
    await deleteNoted(eph, c);
    await pause(gapMs());
  }
}

/** The worker's cycled key: kept 0.3-1.5 s at a time. */
export function ephemeralCycleLoop(): Promise<void> {
  return cycles(
    conn.newEphemeralKey(path('eph-cycle', id)),
    () => 300 + Math.random() * 1200,
    () => 100 + Math.random() * 200,
  );
}

/** The key every worker wants: kept 0.5-2 s once got, then deleted for the next. */
export function ephemeralSharedLoop(): Promise<void> {
  return cycles(
    conn.newEphemeralKey(path('eph-shared')),
    () => 500 + Math.random() * 1500,
    () => 200 + Math.random() * 300,
  );
}
