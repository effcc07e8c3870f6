/**
 * The run's report: a summary table for the terminal (operations, faults by kind, each invariant
 * with its count) and an HTML timeline a person can open (who held the lock and leadership when,
 * faults as bands). The HTML is well-formed XML (XHTML), so a test can parse it strictly.
 */
import {
  holder,
  queueOf,
  type ChaosRecord,
  type Counter,
  type FaultRecord,
  type QueueName,
  type Recipe,
} from './records.js';
import { holds, type Hold, type Verdict } from './checker.js';

/** What the run did, counted from the records. */
export interface Operations {
  lockHolds: number;
  /** Of those, got by `tryLock()`. */
  triedLockHolds: number;
  incrementsAcked: number;
  incrementsUnknown: number;
  permitHolds: number;
  readHolds: number;
  writeHolds: number;
  multiLocks: number;
  rwIncrementsAcked: number;
  rwIncrementsUnknown: number;
  addsAcked: number;
  addsUnknown: number;
  /** Of the adds, compare-and-sets that took. */
  casAcked: number;
  itemsEnqueued: number;
  itemsDelivered: number;
  priorityItemsEnqueued: number;
  priorityItemsDelivered: number;
  transfersAcked: number;
  transfersUnknown: number;
  barrierPasses: number;
  /** Ephemeral keys created (the shared key's among them), and what their error streams said. */
  ephemeralCreates: number;
  sharedKeyCreates: number;
  ephemeralReports: number;
  /** The vandal's deletes and overwrites of ephemeral keys. */
  vandalActs: number;
  leaderTerms: number;
  leaderWrites: number;
  /** Terms of `elector.run(fn)` (a suspension that recovers runs fn again: counted again). */
  runTerms: number;
  observerEvents: number;
  trackerMaps: number;
  workerIncarnations: number;
}

export function countOperations(records: readonly ChaosRecord[]): Operations {
  const ops: Operations = {
    lockHolds: 0,
    triedLockHolds: 0,
    incrementsAcked: 0,
    incrementsUnknown: 0,
    permitHolds: 0,
    readHolds: 0,
    writeHolds: 0,
    multiLocks: 0,
    rwIncrementsAcked: 0,
    rwIncrementsUnknown: 0,
    addsAcked: 0,
    addsUnknown: 0,
    casAcked: 0,
    itemsEnqueued: 0,
    itemsDelivered: 0,
    priorityItemsEnqueued: 0,
    priorityItemsDelivered: 0,
    transfersAcked: 0,
    transfersUnknown: 0,
    barrierPasses: 0,
    ephemeralCreates: 0,
    sharedKeyCreates: 0,
    ephemeralReports: 0,
    vandalActs: 0,
    leaderTerms: 0,
    leaderWrites: 0,
    runTerms: 0,
    observerEvents: 0,
    trackerMaps: 0,
    workerIncarnations: 0,
  };
  // A leader that recovers from a suspension gains the same term again: counted once.
  const terms = new Set<string>();
  for (const r of records) {
    if (r.kind === 'lock.acquired') {
      ops[HOLDS[r.recipe ?? 'mutex']]++;
      if (r.tried === true) ops.triedLockHolds++;
    } else if (r.kind === 'inc' && r.outcome !== 'failed') {
      ops[INCREMENTS[r.counter ?? 'mutex'][r.outcome]]++;
    } else if (r.kind === 'add' && r.outcome !== 'failed') {
      ops[r.outcome === 'ok' ? 'addsAcked' : 'addsUnknown']++;
      if (r.outcome === 'ok' && r.via === 'cas') ops.casAcked++;
    } else if (r.kind === 'enqueue' && r.outcome === 'ok') ops[ITEMS[queueOf(r)].in]++;
    else if (r.kind === 'dequeue' && r.outcome === 'ok') ops[ITEMS[queueOf(r)].out]++;
    else if (r.kind === 'transfer' && r.outcome !== 'failed') {
      ops[r.outcome === 'ok' ? 'transfersAcked' : 'transfersUnknown']++;
    } else if (r.kind === 'barrier' && r.phase === 'left') ops.barrierPasses++;
    else if (r.kind === 'eph' && r.phase === 'created') {
      ops.ephemeralCreates++;
      if (r.key.endsWith('/eph-shared')) ops.sharedKeyCreates++;
    } else if (r.kind === 'eph.error') ops.ephemeralReports++;
    else if (r.kind === 'vandal') ops.vandalActs++;
    else if (r.kind === 'lead.gained') terms.add(`${holder(r)}|${r.token}`);
    else if (r.kind === 'work' && r.outcome === 'ok') ops.leaderWrites++;
    else if (r.kind === 'run.started') ops.runTerms++;
    else if (r.kind === 'obs.event') ops.observerEvents++;
    else if (r.kind === 'tracker') ops.trackerMaps++;
    else if (r.kind === 'start') ops.workerIncarnations++;
  }
  ops.leaderTerms = terms.size;
  return ops;
}

/** Which count a hold of each recipe adds to. */
const HOLDS = {
  mutex: 'lockHolds',
  semaphore: 'permitHolds',
  read: 'readHolds',
  write: 'writeHolds',
  multi: 'multiLocks',
} as const satisfies Record<Recipe, keyof Operations>;

/** Which counts an item of each queue adds to, enqueued and delivered. */
const ITEMS = {
  fifo: { in: 'itemsEnqueued', out: 'itemsDelivered' },
  priority: { in: 'priorityItemsEnqueued', out: 'priorityItemsDelivered' },
} as const satisfies Record<QueueName, Record<'in' | 'out', keyof Operations>>;

/** Which count an increment of each counter adds to, acknowledged or unanswered. */
const INCREMENTS = {
  mutex: { ok: 'incrementsAcked', unknown: 'incrementsUnknown' },
  rw: { ok: 'rwIncrementsAcked', unknown: 'rwIncrementsUnknown' },
} as const satisfies Record<Counter, Record<'ok' | 'unknown', keyof Operations>>;

/** Faults injected, by kind. */
export function countFaults(records: readonly ChaosRecord[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of records) {
    if (r.kind === 'fault' && r.phase === 'start') out.set(r.fault, (out.get(r.fault) ?? 0) + 1);
  }
  return new Map([...out].sort((a, b) => a[0].localeCompare(b[0])));
}

/** The summary as Markdown tables. */
export function summary(
  title: string,
  records: readonly ChaosRecord[],
  verdicts: readonly Verdict[],
): string {
  const ops = countOperations(records);
  const faults = countFaults(records);
  const lines = [
    title,
    '',
    '| operations | count |',
    '| --- | ---: |',
    `| worker incarnations | ${ops.workerIncarnations} |`,
    `| lock holds (by tryLock) | ${ops.lockHolds} (${ops.triedLockHolds}) |`,
    `| fenced increments acknowledged (unanswered) | ${ops.incrementsAcked} (${ops.incrementsUnknown}) |`,
    `| semaphore permits held | ${ops.permitHolds} |`,
    `| RWMutex read holds, write holds | ${ops.readHolds}, ${ops.writeHolds} |`,
    `| MultiLock locks held (2 per hold) | ${ops.multiLocks} |`,
    `| RWMutex writers' increments acknowledged (unanswered) | ${ops.rwIncrementsAcked} (${ops.rwIncrementsUnknown}) |`,
    `| counter adds acknowledged (unanswered); compare-and-sets among them | ${ops.addsAcked} (${ops.addsUnknown}); ${ops.casAcked} |`,
    `| queue items enqueued, delivered | ${ops.itemsEnqueued}, ${ops.itemsDelivered} |`,
    `| priority queue items enqueued, delivered | ${ops.priorityItemsEnqueued}, ${ops.priorityItemsDelivered} |`,
    `| STM transfers committed (unanswered) | ${ops.transfersAcked} (${ops.transfersUnknown}) |`,
    `| double barrier passes (enter and leave) | ${ops.barrierPasses} |`,
    `| ephemeral keys created (the shared one); errors they reported | ${ops.ephemeralCreates} (${ops.sharedKeyCreates}); ${ops.ephemeralReports} |`,
    `| ephemeral keys deleted or overwritten by the vandal | ${ops.vandalActs} |`,
    `| leader terms | ${ops.leaderTerms} |`,
    `| fenced leader writes | ${ops.leaderWrites} |`,
    `| leader work runs (elector.run) | ${ops.runTerms} |`,
    `| observer events delivered | ${ops.observerEvents} |`,
    `| tracker maps | ${ops.trackerMaps} |`,
    '',
    '| fault | injected |',
    '| --- | ---: |',
    ...[...faults].map(([k, n]) => `| ${k} | ${n} |`),
    `| **all** | ${[...faults.values()].reduce((a, b) => a + b, 0)} |`,
    '',
    '| invariant | checked | violations | result |',
    '| --- | ---: | ---: | --- |',
    ...verdicts.map(
      (v) => `| ${v.name} | ${v.checked} ${v.unit} | ${v.violationCount} | ${result(v)} |`,
    ),
  ];
  const failed = verdicts.filter((v) => !v.ok);
  if (failed.length > 0) {
    lines.push('', 'violations:');
    for (const v of failed) for (const text of v.violations) lines.push(`- ${v.name}: ${text}`);
  }
  for (const v of verdicts.filter((x) => result(x) === 'etcd bug')) {
    lines.push('', `etcd bug: ${v.knownIssue ?? ''}:`);
    for (const text of v.violations) lines.push(`- ${text}`);
  }
  return lines.join('\n');
}

/** A row's result: pass, FAIL, or etcd bug (what it counts is a known etcd bug, not ours). */
function result(v: Verdict): string {
  if (!v.ok) return '**FAIL**';
  return v.knownIssue !== undefined && v.violationCount > 0 ? 'etcd bug' : 'pass';
}

function esc(s: string): string {
  return s
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;');
}

const FAULT_COLOURS: Record<string, string> = {
  member: '#f4a261',
  worker: '#e76f51',
  proxy: '#e9c46a',
  cluster: '#9d4edd',
  compaction: '#2a9d8f',
};

function faultColour(fault: string): string {
  const family = fault.split('-')[0] ?? '';
  return FAULT_COLOURS[family] ?? '#adb5bd';
}

/** A kind of hold the timeline draws: one lane of it per worker incarnation. */
export interface Lane {
  /** `lock`, `leader`, ...: the lane's label after the holder's name, and its holds' titles. */
  readonly name: string;
  readonly holds: readonly Hold[];
  readonly colour: string;
  /** Holds of this recipe drawn in another colour (the RWMutex's writers among its readers). */
  readonly accent?: { readonly recipe: Recipe; readonly colour: string };
}

/** The lanes of a run: the mutex, the semaphore, the RWMutex and leadership. */
export function timelineLanes(records: readonly ChaosRecord[]): Lane[] {
  const locks = (recipes: readonly Recipe[]): Hold[] =>
    holds(records, 'lock.acquired', 'lock.ended', recipes);
  return [
    { name: 'lock', holds: locks(['mutex']), colour: '#1d3557' },
    { name: 'semaphore', holds: locks(['semaphore']), colour: '#6a994e' },
    { name: 'multi', holds: locks(['multi']), colour: '#bc6c25' },
    {
      name: 'rw',
      holds: locks(['read', 'write']),
      colour: '#a8dadc',
      accent: { recipe: 'write', colour: '#e63946' },
    },
    { name: 'leader', holds: holds(records, 'lead.gained', 'lead.ended'), colour: '#457b9d' },
    { name: 'run', holds: holds(records, 'run.started', 'run.ended'), colour: '#2a9d8f' },
  ];
}

/** The timeline: per worker incarnation one lane for each kind of hold (lock, leadership...). */
export function timelineHtml(
  title: string,
  records: readonly ChaosRecord[],
  verdicts: readonly Verdict[],
  lanes: readonly Lane[],
): string {
  // A loop, not Math.min(...times): a long run has more records than a call takes arguments.
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const r of records) {
    t0 = Math.min(t0, r.t);
    t1 = Math.max(t1, r.t);
  }
  const width = 1400;
  const left = 140;
  const x = (t: number): number => left + ((t - t0) / Math.max(1, t1 - t0)) * (width - left - 20);
  const who = [
    ...new Set(records.flatMap((r) => ('w' in r && r.kind === 'start' ? [holder(r)] : []))),
  ].sort();
  const laneH = 14;
  const top = 30;
  const rows = who.flatMap((h) => lanes.map((l) => `${h} ${l.name}`));
  const height = top + rows.length * (laneH + 4) + 30;
  const parts: string[] = [];
  // Faults: bands from start to end, over every lane.
  const starts = new Map<number, FaultRecord>();
  for (const r of records) {
    if (r.kind !== 'fault') continue;
    if (r.phase === 'start') {
      starts.set(r.id, r);
      continue;
    }
    const s = starts.get(r.id);
    if (s === undefined) continue;
    const x0 = x(s.t);
    const w = Math.max(1, x(r.t) - x0);
    parts.push(
      `<rect x="${x0.toFixed(1)}" y="${top - 10}" width="${w.toFixed(1)}" height="${height - top}" ` +
        `fill="${faultColour(s.fault)}" opacity="0.25"><title>${esc(`${s.fault} ${s.target}`)}</title></rect>`,
    );
  }
  rows.forEach((label, i) => {
    const y = top + i * (laneH + 4);
    parts.push(`<text x="4" y="${y + laneH - 3}" font-size="11">${esc(label)}</text>`);
    parts.push(
      `<line x1="${left}" x2="${width - 20}" y1="${y + laneH / 2}" y2="${y + laneH / 2}" stroke="#dee2e6"/>`,
    );
  });
  const lane = new Map(rows.map((label, i) => [label, i]));
  for (const { name, holds, colour, accent } of lanes) {
    for (const h of holds) {
      const i = lane.get(`${h.holder} ${name}`);
      if (i === undefined || !Number.isFinite(h.end)) continue;
      const y = top + i * (laneH + 4);
      // A lane of two kinds (the RWMutex's) names each hold's kind.
      const what = accent === undefined ? name : `${name} ${h.recipe ?? ''}`;
      const fill = accent !== undefined && h.recipe === accent.recipe ? accent.colour : colour;
      parts.push(
        `<rect x="${x(h.start).toFixed(1)}" y="${y}" width="${Math.max(1, x(h.end) - x(h.start)).toFixed(1)}" ` +
          `height="${laneH}" fill="${fill}"><title>${esc(`${h.holder} ${what} token ${h.token} (${h.how})`)}</title></rect>`,
      );
    }
  }
  const legend = Object.entries(FAULT_COLOURS)
    .map(([k, c]) => `<span style="background:${c};opacity:0.6;padding:0 6px">${esc(k)}</span>`)
    .join(' ');
  const table = verdicts
    .map(
      (v) =>
        `<tr><td>${esc(v.name)}</td><td>${v.checked} ${esc(v.unit)}</td><td>${v.violationCount}</td>` +
        `<td>${v.ok ? esc(result(v)) : '<strong>FAIL</strong>'}</td></tr>`,
    )
    .join('\n');
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" lang="en">
<head><meta charset="utf-8"/><title>${esc(title)}</title>
<style>body{font-family:sans-serif;margin:16px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}</style>
</head>
<body>
<h1>${esc(title)}</h1>
<p>Lanes per worker: a hold is drawn from its grant until its release, its loss or the holder's session deadline (lock, semaphore permit, MultiLock, RWMutex with writers in red, leader). Bands: faults (${legend}). Hover for details.</p>
<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img" aria-label="timeline">
${parts.join('\n')}
</svg>
<h2>Invariants</h2>
<table><thead><tr><th>invariant</th><th>checked</th><th>violations</th><th>result</th></tr></thead>
<tbody>
${table}
</tbody></table>
</body>
</html>
`;
}
