/** What each check reports: an invariant's verdict, and how checks build one. */
/** One invariant's verdict. */
export interface Verdict {
  readonly name: string;
  readonly ok: boolean;
  /** Set when what this row counts is a known etcd bug, not ours (the run still passes). */
  readonly knownIssue?: string;
  /** How many things were checked (holds, writes, events, ...), and what they are. */
  readonly checked: number;
  readonly unit: string;
  /** The first violations, in words. */
  readonly violations: readonly string[];
  /** How many violations in all. */
  readonly violationCount: number;
}

/** How many violations a verdict shows in words. */
export const SHOW = 5;

/** Counts what was checked and what failed, keeping the first failures. */
export class Tally {
  checked = 0;
  count = 0;
  readonly shown: string[] = [];
  constructor(
    readonly name: string,
    readonly unit: string,
  ) {}
  fail(text: string): void {
    this.count++;
    if (this.shown.length < SHOW) this.shown.push(text);
  }
  verdict(): Verdict {
    return {
      name: this.name,
      ok: this.count === 0,
      checked: this.checked,
      unit: this.unit,
      violations: this.shown,
      violationCount: this.count,
    };
  }
}

/** `12:03:04.567` (UTC) for messages. */
export function fmtT(t: number): string {
  return Number.isFinite(t) ? new Date(t).toISOString().slice(11, 23) : 'never';
}
