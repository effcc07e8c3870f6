/**
 * Notes every raft leader election of the cluster: each member's status is polled directly (no
 * proxy), one loop per member so a paused member delays only its own, and a term higher than any
 * seen before is logged with when it was first seen. The checker needs it because a new leader
 * restarts every lease's TTL plus its election timeout (etcd's lessor `Promote`): after an election
 * that the last fault caused (a member resumed from a pause calls one), a dead worker's lease, and
 * so its lock, leadership and registration, lives that much longer.
 */
import { Etcd3 } from 'etcd3';
import { singleAttemptFaults } from '../src/transport/client-options.js';

export interface RaftWatch {
  /** Epoch ms when the newest term was first seen (-Infinity before any). */
  lastElection(): number;
  stop(): Promise<void>;
}

const POLL_MS = 50;
const DEADLINE_MS = 300;

export function startRaftWatch(
  endpoints: readonly string[],
  /** The cluster's election timeout: what etcd adds to every lease on promotion. */
  extendMs: number,
  write: (record: Record<string, unknown>) => void,
  now: () => number,
): RaftWatch {
  const halt = new AbortController();
  let term = 0;
  let lastAt = -Infinity;
  const loops = endpoints.map(async (endpoint, i) => {
    const client = new Etcd3({ hosts: [endpoint], faultHandling: singleAttemptFaults });
    try {
      while (!halt.signal.aborted) {
        const polledAt = now();
        try {
          const st = await client.maintenance.status({
            deadline: new Date(Date.now() + DEADLINE_MS),
          });
          const seen = Number(st.raftTerm);
          if (seen > term && st.leader !== '0') {
            term = seen;
            // The poll's start: the election happened no later than that answer, and it is
            // at most one poll earlier; the earlier bound keeps the checker strict.
            lastAt = polledAt;
            write({
              kind: 'raft',
              t: polledAt,
              term,
              leader: BigInt(st.leader).toString(16),
              member: `m${i}`,
              extendMs,
            });
          }
        } catch {
          // a paused or killed member: the others report the election
        }
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    } finally {
      client.close();
    }
  });
  return {
    lastElection: () => lastAt,
    stop: async () => {
      halt.abort();
      await Promise.all(loops);
    },
  };
}
