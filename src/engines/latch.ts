/**
 * A resettable wake-up latch for one waiting loop. `fire()` before `wait()` is not lost: the loop
 * resets the latch at the top of an iteration, reads etcd, then waits; anything that happened
 * since the reset wakes it at once, so no change slips between a read and the wait.
 */
export class Latch {
  private fired = false;
  private resolve: (() => void) | undefined;

  fire(): void {
    this.fired = true;
    const r = this.resolve;
    this.resolve = undefined;
    r?.();
  }

  reset(): void {
    this.fired = false;
  }

  wait(): Promise<void> {
    if (this.fired) return Promise.resolve();
    return new Promise((resolve) => {
      this.resolve = resolve;
    });
  }
}
