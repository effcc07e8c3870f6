/**
 * The in-process gate of a mutex's Go key, and a release that queues the next caller of this
 * process in the same transaction.
 *
 * Callers of one process wanting one mutex pass the in-process gate of their key one at a time
 * (engines/local-gate.ts): one key per process in etcd's queue. Without a hand-over, a contended
 * cycle costs three calls — the holder's release, the next local caller's join at the end of the
 * queue, and the woken waiter's read — and two of them are raft writes. Go's key is
 * `path/<lease hex>`, and one transaction may not delete a key and create it again, so the next
 * local caller's key goes under another lease: the connector's spare session of that TTL
 * (session/session-pool.ts). The release is then `If(our key has our revision, its key is absent)
 * Then(delete ours, put its, read what a join reads)`: in etcd, the same as the release followed
 * by the join, at one revision, so the queue's order is the same (its key is the newest). The
 * caller takes that place as its own join's (QueueMember.adopt) and the gate passes to it.
 *
 * Nothing is handed over when the first local waiter must hold under a session of its own
 * choosing, when no spare is ready (one is granted for next time), when the other key's gate is
 * in use, or when the transaction did not apply: the release then goes as before. An answer lost
 * on the way leaves the outcome unknown; the release falls back to its guarded delete, the waiter
 * joins as usual, and a late copy of the transaction creating the other key is swept
 * (engines/stray-keys.ts).
 */
import type { ITxnResponse } from 'etcd3';
import type { SessionRef } from '../session/session-pool.js';
import type { ConnectorContext } from './context.js';
import { LocalGates } from './local-gate.js';
import { sweepStrays } from './stray-keys.js';
import type { QueueMember } from './wait-deletes.js';

/** What the next local caller is given with the gate. */
export interface Handoff {
  /** A reference to the session its key is under. */
  readonly ref: SessionRef;
  /** Leaves the gate of that key (a no-op when it is the gate handed over). */
  readonly leaveKey: () => void;
  /** The release's transaction, applied: it created that key (see QueueMember.adopt). */
  readonly placement: ITxnResponse;
}

/** Counters of this process, for tests and benchmarks. */
export const handoffStats = {
  /** Releases that queued the next local caller in their transaction. */
  handedOver: 0,
};

/** How a caller came through the gate. */
export interface GateEntry {
  /** The session its key is under (another than it came with, after a hand-over). */
  readonly ref: SessionRef;
  /** Leaves the gate (and the gate of the key handed over, if that is another one). */
  readonly leave: () => void;
  /** The gate it is in: its release may hand it over. */
  readonly gateKey: string;
  /** Its key, created by the release before it (the hand-over). */
  readonly placement?: ITxnResponse;
}

const gatesOf = new WeakMap<ConnectorContext, LocalGates<Handoff>>();

function gates(ctx: ConnectorContext): LocalGates<Handoff> {
  let g = gatesOf.get(ctx);
  if (g === undefined) gatesOf.set(ctx, (g = new LocalGates()));
  return g;
}

/**
 * Passes the gate of `prefix`'s key under `ref`'s session, in turn or by a hand-over
 * (`takesHandoff`); with `tryOnly`, only if nobody of this process is in it or waiting (else
 * undefined, and `ref` is released).
 *
 * @throws AbortError `signal` fired while waiting (`ref` is released)
 */
export async function passGate(
  ctx: ConnectorContext,
  prefix: string,
  ref: SessionRef,
  opts: { tryOnly: boolean; takesHandoff: boolean; signal: AbortSignal },
): Promise<GateEntry | undefined> {
  const gateKey = prefix + ref.session.leaseIdHex;
  const g = gates(ctx);
  if (opts.tryOnly) {
    const leave = g.tryEnter(gateKey);
    if (leave !== undefined) return { ref, leave, gateKey };
    await ref.release();
    return undefined;
  }
  // Behind another caller of ours: its release may hand over under the spare session.
  if (opts.takesHandoff && g.busy(gateKey)) ctx.sessions.prepareSpare(ref.session.requestedTtl);
  let pass;
  try {
    pass = await g.enter(gateKey, opts.signal, opts.takesHandoff);
  } catch (err) {
    await ref.release();
    throw err;
  }
  const { leave, handoff } = pass;
  if (handoff === undefined) return { ref, leave, gateKey };
  // The release before us queued our key under another session.
  await ref.release();
  return {
    ref: handoff.ref,
    leave: () => {
      leave();
      handoff.leaveKey();
    },
    gateKey,
    placement: handoff.placement,
  };
}

/**
 * Releases `member`'s key handing the gate `gateKey` (which the caller is in) to its first waiter,
 * as the file comment says. True when our key was deleted (the caller's release is done); false
 * when the caller must release as usual. Never throws.
 */
export async function handOff(
  ctx: ConnectorContext,
  gateKey: string,
  member: QueueMember,
  slots: number,
): Promise<boolean> {
  const gates = gatesOf.get(ctx);
  if (gates?.nextTakesHandoff(gateKey) !== true || ctx.closing || !member.session.isAlive()) {
    return false;
  }
  const ref = ctx.sessions.otherThan(member.session);
  if (ref === undefined) return false;
  const { session } = ref;
  const key = member.prefix + session.leaseIdHex;
  // The waiter comes in by our gate: its own key's gate, if that is another, must be free.
  const leaveKey = key === gateKey ? () => undefined : gates.tryEnter(key);
  if (leaveKey === undefined) {
    await ref.release();
    return false;
  }
  let res: ITxnResponse | undefined;
  try {
    res = await member.releaseInto(key, session.leaseId, slots);
  } catch {
    // A late copy may still create the key: deleted whenever nothing of ours uses it.
    sweepStrays(ctx, session, key);
  }
  const applied = res?.succeeded === true;
  if (res !== undefined && applied && gates.handOver(gateKey, { ref, leaveKey, placement: res })) {
    handoffStats.handedOver++;
    return true;
  }
  // Nobody to take the key made for it (the waiter gave up meanwhile): it goes as a stray.
  if (applied) sweepStrays(ctx, session, key);
  leaveKey();
  await ref.release();
  return applied;
}
