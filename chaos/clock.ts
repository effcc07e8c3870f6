/**
 * The one clock of a chaos run: epoch ms, comparable across the processes of one machine. Each
 * process finds where its `performance.now()` stands on the wall clock itself, at ticks of
 * `Date.now()`, instead of trusting `performance.timeOrigin`: a worker started on a loaded machine
 * (seed 10002, w2#1) came out about 11 ms ahead of the others (probably descheduled between the
 * two clock reads Node makes for it at start-up), which made its holds look longer than they were.
 */
import { epochMs } from '../src/transport/timers.js';

/** Wall-clock ms at this process's `performance.now()` = 0. */
export const clockOrigin = calibrate();

/** Now, in epoch ms. */
export function now(): number {
  return clockOrigin + performance.now();
}

/** An epoch time the library gives (its `epochMs()` of a monotonic time), on our clock. */
export function fromLibrary(epoch: number): number {
  return epoch - epochMs(0) + clockOrigin;
}

/**
 * At a tick of `Date.now()` the wall clock is at that whole ms: the monotonic time read right
 * after it gives the origin, late (too small) by however long the read was delayed. The largest
 * of a few ticks is the least delayed. Costs a few ms of spinning, once per process.
 */
function calibrate(): number {
  let best = -Infinity;
  for (let i = 0; i < 5; i++) {
    const start = Date.now();
    let tick = start;
    while (tick === start) tick = Date.now();
    best = Math.max(best, tick - performance.now());
  }
  return best;
}
