/** One row of the results table per measured figure, and the table printer. */
import { fmt } from './stats.js';

/** Which direction is good for a figure. */
export type Better = 'lower' | 'higher';

/** One measured figure of ours against a peer's. */
export interface Row {
  /** What is measured, with its unit, e.g. `handover p50 (ms)`. */
  readonly name: string;
  /** Our figure; undefined when our side could not be measured (printed `n/a`). */
  readonly ours: number | undefined;
  /** What the figure is compared with, e.g. `etcd3 Election`. */
  readonly peer: string;
  /** The peer's figure; undefined when there is no peer figure. */
  readonly peerValue: number | undefined;
  /** Whether lower or higher figures are better (applies to the ratio ours/peer too). */
  readonly better: Better;
  /** The target in words, or `—`. */
  readonly target: string;
  /** Whether the target is met; undefined when there is no target or no figure. */
  readonly met: boolean | undefined;
  /** The ratio to print when it is not simply ours / peer (e.g. a median of paired ratios). */
  readonly ratio?: number;
}

/** ours / peer, or undefined when either side is missing. */
export function ratio(ours: number | undefined, peer: number | undefined): number | undefined {
  if (ours === undefined || peer === undefined || Number.isNaN(ours) || Number.isNaN(peer)) {
    return undefined;
  }
  return peer === 0 ? undefined : ours / peer;
}

/**
 * A row whose target is a bound on ours/peer: `<= max` when lower is better, `>= min` when higher
 * is better.
 */
export function ratioRow(
  name: string,
  ours: number | undefined,
  peer: string,
  peerValue: number | undefined,
  better: Better,
  bound?: number,
  pairedRatio?: number,
): Row {
  const r = pairedRatio ?? ratio(ours, peerValue);
  const target =
    bound === undefined ? '—' : better === 'lower' ? `ratio <= ${bound}` : `ratio >= ${bound}`;
  const met =
    bound === undefined || r === undefined
      ? undefined
      : better === 'lower'
        ? r <= bound
        : r >= bound;
  const row: Row = { name, ours, peer, peerValue, better, target, met };
  return pairedRatio === undefined ? row : { ...row, ratio: pairedRatio };
}

function cell(row: Row): string[] {
  const r = row.ratio ?? ratio(row.ours, row.peerValue);
  const ratioText = r === undefined ? 'n/a' : `${r >= 10 ? r.toFixed(1) : r.toPrecision(3)}x`;
  const met = row.met === undefined ? (row.target === '—' ? '—' : 'n/a') : row.met ? 'yes' : 'NO';
  return [
    row.name,
    fmt(row.ours),
    row.peer,
    row.peerValue === undefined ? '—' : fmt(row.peerValue),
    `${ratioText} (${row.better} better)`,
    row.target,
    met,
  ];
}

/** Renders the rows as one aligned Markdown table. */
export function renderTable(rows: readonly Row[]): string {
  const header = ['case', 'ours', 'peer', 'peer figure', 'ratio ours/peer', 'target', 'met?'];
  const body = rows.map(cell);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')} |`;
  const rule = `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`;
  return [line(header), rule, ...body.map(line)].join('\n');
}
