/** Progress after the faults, and clean exits. */
import { byKind, holder, type ChaosRecord, type FinalRecord, type RunParams } from './records.js';
import { lastFaultEnd } from './check-streams.js';
import { Tally, type Verdict } from './verdict.js';

/** Something that went on from `start` to `end`: a hold, or an instant (an add, a delivery). */
interface Span {
  readonly start: number;
  readonly end: number;
}

/**
 * Calls (adds, dequeues, transfers, barrier passes) that went through, as instants: `ok`, or no
 * outcome for records written only on success.
 */
export function instants(calls: readonly { t: number; outcome?: string }[]): Span[] {
  return calls.flatMap((r) => ((r.outcome ?? 'ok') === 'ok' ? [{ start: r.t, end: r.t }] : []));
}

/**
 * After the last fault, every role (the locks, leadership, an add, a queue delivery) is held or
 * done again within TTL + 2 s.
 */
export function checkLiveness(
  records: readonly ChaosRecord[],
  params: RunParams,
  roles: readonly (readonly [string, readonly Span[]])[],
): Verdict {
  const tally = new Tally(
    'liveness: locks, leadership, adds, deliveries and transfers within TTL + 2 s after faults and raft elections',
    'roles',
  );
  const quietFrom = lastFaultEnd(records);
  const bound = quietFrom + params.ttl * 1000 + 2000;
  for (const [role, list] of roles) {
    tally.checked++;
    const first = list.find((h) => h.end > quietFrom);
    const at = first === undefined ? Infinity : Math.max(first.start, quietFrom);
    if (at > bound) {
      tally.fail(
        first === undefined
          ? `no ${role} after the last fault`
          : `${role} again only ${(at - quietFrom).toFixed(0)} ms after the last fault or raft election`,
      );
    }
  }
  return tally.verdict();
}

/** Every worker told to stop exited by itself with 0; no unhandled rejection; no lease left. */
export function checkExits(
  records: readonly ChaosRecord[],
  final: FinalRecord | undefined,
): Verdict {
  const tally = new Tally('clean exits: code 0, no unhandled rejection, no lease left', 'workers');
  if (final === undefined) {
    tally.fail('no final record');
    return tally.verdict();
  }
  for (const [who, code] of Object.entries(final.exits)) {
    tally.checked++;
    if (code !== 0) tally.fail(`${who} exited with ${String(code)}`);
  }
  for (const u of byKind(records, 'unhandled')) tally.fail(`${holder(u)}: unhandled ${u.message}`);
  if (final.leasesLeft > 0)
    tally.fail(`${final.leasesLeft} lease(s) left in etcd after every worker stopped`);
  return tally.verdict();
}
