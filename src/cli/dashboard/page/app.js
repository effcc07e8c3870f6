// @ts-check
// The dashboard page: listens to the server's event stream (`hello` with the log and the whole
// state, then `state` and `log` events) and renders plain tables. Text only ever goes in through
// textContent, so keys and values from etcd cannot inject markup. Between two states, lease TTLs
// and ages are counted down here, from the server's clock (`now`) and etcd's last answer.

/**
 * @typedef {{ time: number, source: 'key' | 'watch' | 'listing' }} Since
 * @typedef {{ role: string, name: string, key: string, value: string, lease?: string,
 *   createRevision: number, modRevision: number, version: number, since?: Since }} Entry
 * @typedef {{ kind: string, path: string, summary: string, entries: Entry[] }} Recipe
 * @typedef {{ ttl: number, grantedTtl: number, checkedAt: number }} LeaseTtl
 * @typedef {{ endpoint: string, healthy: boolean, isLeader: boolean, latencyMs?: number,
 *   memberId?: string, version?: string, raftIndex?: number, dbSize?: number, error?: string }} Member
 * @typedef {{ status: string, checkedAt: number, leader?: string, members: Member[] }} Health
 * @typedef {{ now: number, path: string, revision: number, connected: boolean, error?: string,
 *   health?: Health, recipes: Recipe[], leases: Record<string, LeaseTtl> }} State
 * @typedef {{ time: number, level: 'info' | 'warn', kind?: string, path?: string, text: string }} LogLine
 */

/** Which section shows which kinds; kinds not listed (a new decoder's) go to "Other keys". */
const SECTIONS = {
  elections: ['election'],
  locks: ['lock', 'rwmutex', 'semaphore'],
  services: ['services', 'endpoints'],
  queues: ['queue', 'priority-queue', 'barrier', 'double-barrier'],
};
/** Rows shown per recipe; `etcdc inspect` lists them all. */
const MAX_ROWS = 100;
const MAX_LOG = 200;

/** @type {State | undefined} */
let state;
/** Server clock minus ours, so TTLs count down from etcd's answer, not from our clock. */
let skew = 0;
/** The last rendered data of each section: a section is rebuilt only when its data changed. */
const rendered = new Map();

/**
 * An element with attributes and children (strings become text nodes).
 * @param {string} tag
 * @param {Record<string, string | number | undefined>} [attrs]
 * @param {(Node | string | undefined)[]} children
 * @returns {HTMLElement}
 */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined) el.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child !== undefined) el.append(child);
  }
  return el;
}

/** @param {string} id */
function byId(id) {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`#${id} is missing`);
  return el;
}

const now = () => Date.now() + skew;

/** `950 ms`, `12 s`, `3 min 04 s`, `2 h 05 min`. @param {number} ms */
function duration(ms) {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** @param {number} time */
function clock(time) {
  return new Date(time).toLocaleTimeString([], { hour12: false });
}

/** Seconds left on a lease now, or undefined when not known yet. @param {string} lease */
function ttlLeft(lease) {
  const t = state?.leases[lease];
  if (t === undefined) return undefined;
  if (t.ttl < 0) return -1;
  return Math.max(0, t.ttl - (now() - t.checkedAt) / 1000);
}

/** The TTL cell: a meter and the seconds, updated by `tick()`. @param {string} lease */
function ttlCell(lease) {
  const meter = h('meter', { min: 0, 'aria-label': `TTL left on lease ${lease}` });
  const td = h('td', { 'data-lease': lease, class: 'ttl' }, meter, ' ', h('span'));
  updateTtl(td);
  return td;
}

/** @param {Element} td */
function updateTtl(td) {
  const lease = td.getAttribute('data-lease') ?? '';
  const meter = td.querySelector('meter');
  const text = td.querySelector('span');
  if (meter === null || text === null) return;
  const left = ttlLeft(lease);
  const granted = state?.leases[lease]?.grantedTtl ?? 0;
  if (left === undefined) {
    text.textContent = '…';
    meter.hidden = true;
  } else if (left < 0) {
    text.textContent = 'expired';
    meter.hidden = true;
  } else {
    meter.hidden = false;
    meter.max = Math.max(granted, left, 1);
    meter.value = left;
    meter.low = meter.max / 3;
    meter.optimum = meter.max;
    text.textContent = `${Math.ceil(left)} s`;
  }
}

/** The age cell, counted by `tick()`. @param {Since | undefined} since */
function ageCell(since) {
  if (since === undefined) return h('td', {}, '–');
  const td = h('td', { 'data-since': since.time, 'data-source': since.source });
  td.title =
    since.source === 'key'
      ? 'created at the time written in the key'
      : since.source === 'watch'
        ? 'created while this dashboard watched'
        : 'already there when the dashboard started: at least this old';
  updateAge(td);
  return td;
}

/** @param {Element} td */
function updateAge(td) {
  const time = Number(td.getAttribute('data-since'));
  const atLeast = td.getAttribute('data-source') === 'listing' ? '≥ ' : '';
  td.textContent = `${atLeast}${duration(now() - time)}`;
}

/** Every TTL and age on screen, once a quarter second. */
function tick() {
  for (const td of document.querySelectorAll('td[data-lease]')) updateTtl(td);
  for (const td of document.querySelectorAll('td[data-since]')) updateAge(td);
}

/** One recipe as a table whose caption names it. @param {Recipe} r @param {string} n */
function recipeTable(r, n) {
  const rows = r.entries.slice(0, MAX_ROWS);
  const withValue = rows.some((e) => e.value !== '' && e.value !== e.name);
  const withLease = rows.some((e) => e.lease !== undefined && e.lease !== e.name);
  const withTtl = rows.some((e) => e.lease !== undefined);
  const headers = [
    'Role',
    'Name',
    ...(withValue ? ['Value'] : []),
    ...(withLease ? ['Lease'] : []),
    ...(withTtl ? ['TTL left'] : []),
    'Age',
    'Created at rev.',
  ];
  const summaryId = `summary-${n}`;
  const body = rows.map((e) =>
    h(
      'tr',
      { 'data-role': e.role, 'data-key': e.key },
      h('td', { class: `role role-${e.role}` }, e.role),
      h('th', { scope: 'row' }, e.name === '' ? '–' : e.name),
      withValue ? h('td', { class: 'value' }, e.value) : undefined,
      withLease ? h('td', {}, h('code', {}, e.lease ?? '–')) : undefined,
      withTtl ? (e.lease === undefined ? h('td', {}, '–') : ttlCell(e.lease)) : undefined,
      ageCell(e.since),
      h('td', { class: 'num' }, String(e.createRevision)),
    ),
  );
  const more = r.entries.length - rows.length;
  return h(
    'div',
    { class: 'recipe' },
    h(
      'table',
      { 'aria-describedby': summaryId },
      h('caption', {}, h('span', { class: 'kind' }, r.kind), ' ', h('code', {}, r.path)),
      h('thead', {}, h('tr', {}, ...headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, ...body),
    ),
    h(
      'p',
      { class: 'summary', id: summaryId },
      r.summary,
      more > 0 ? ` (and ${more} more: etcdc inspect lists them all)` : undefined,
    ),
  );
}

/** @param {string} id @param {Recipe[]} recipes */
function renderSection(id, recipes) {
  const data = JSON.stringify(recipes);
  if (rendered.get(id) === data) return;
  rendered.set(id, data);
  byId(id).replaceChildren(
    ...(recipes.length === 0
      ? [h('p', { class: 'empty' }, 'None.')]
      : recipes.map((r, i) => recipeTable(r, `${id}-${i}`))),
  );
}

/** @param {Health | undefined} health */
function renderCluster(health) {
  const data = JSON.stringify(health?.members.map((m) => ({ ...m, latencyMs: undefined })));
  byId('cluster-status').textContent =
    health === undefined
      ? ''
      : `${health.status} · checked ${clock(health.checkedAt)}` +
        (health.leader === undefined ? '' : ` · raft leader ${health.leader}`);
  byId('cluster-status').className = `summary status-${health?.status ?? 'unknown'}`;
  if (health === undefined || rendered.get('cluster') === data) return;
  rendered.set('cluster', data);
  const rows = health.members.map((m) =>
    h(
      'tr',
      { 'data-endpoint': m.endpoint },
      h('th', { scope: 'row' }, h('code', {}, m.endpoint)),
      h(
        'td',
        { class: m.healthy ? 'ok' : 'bad' },
        m.healthy ? '✓ healthy' : `✗ ${m.error ?? 'unhealthy'}`,
      ),
      h('td', {}, m.isLeader ? 'raft leader' : m.healthy ? 'follower' : '–'),
      h('td', { class: 'num' }, m.latencyMs === undefined ? '–' : `${m.latencyMs.toFixed(1)} ms`),
      h('td', { class: 'num' }, m.raftIndex === undefined ? '–' : String(m.raftIndex)),
      h(
        'td',
        { class: 'num' },
        m.dbSize === undefined ? '–' : `${Math.round(m.dbSize / 1024)} KiB`,
      ),
      h('td', {}, m.version ?? '–'),
      h('td', {}, h('code', {}, m.memberId ?? '–')),
    ),
  );
  const headers = [
    'Endpoint',
    'Health',
    'Role',
    'Latency',
    'Raft index',
    'DB size',
    'Version',
    'Member ID',
  ];
  byId('cluster').replaceChildren(
    h(
      'table',
      {},
      h('caption', { class: 'visually-hidden' }, 'Cluster members'),
      h('thead', {}, h('tr', {}, ...headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, ...rows),
    ),
  );
}

/** Every lease on screen, with what it holds. @param {State} s */
function renderLeases(s) {
  /** @type {Map<string, string[]>} */
  const holds = new Map();
  for (const r of s.recipes) {
    for (const e of r.entries) {
      if (e.lease === undefined) continue;
      const list = holds.get(e.lease) ?? [];
      list.push(`${r.kind} ${r.path}`);
      holds.set(e.lease, list);
    }
  }
  const data = JSON.stringify([...holds]);
  if (rendered.get('leases') === data) return;
  rendered.set('leases', data);
  const box = byId('leases');
  if (holds.size === 0) {
    box.replaceChildren(h('p', { class: 'empty' }, 'None.'));
    return;
  }
  const rows = [...holds].map(([lease, uses]) =>
    h(
      'tr',
      { 'data-lease-row': lease },
      h('th', { scope: 'row' }, h('code', {}, lease)),
      ttlCell(lease),
      h('td', { class: 'num' }, String(uses.length)),
      h('td', {}, [...new Set(uses)].join(', ')),
    ),
  );
  const headers = ['Lease', 'TTL left', 'Keys', 'Used by'];
  box.replaceChildren(
    h(
      'table',
      {},
      h('caption', { class: 'visually-hidden' }, 'Leases of the keys on screen'),
      h('thead', {}, h('tr', {}, ...headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, ...rows),
    ),
  );
}

/** @param {State} s */
function setState(s) {
  state = s;
  skew = s.now - Date.now();
  byId('path').textContent = s.path;
  byId('footer-path').textContent = s.path;
  byId('revision').textContent = String(s.revision);
  const badge = byId('connection');
  badge.textContent = s.connected ? 'live' : `etcd unreachable: ${s.error ?? 'connecting'}`;
  badge.className = `badge ${s.connected ? 'ok' : 'warn'}`;
  /** @type {Record<string, Recipe[]>} */
  const bySection = { elections: [], locks: [], services: [], queues: [], other: [] };
  for (const r of s.recipes) {
    const section = Object.entries(SECTIONS).find(([, kinds]) => kinds.includes(r.kind));
    (bySection[section?.[0] ?? 'other'] ?? []).push(r);
  }
  for (const [id, recipes] of Object.entries(bySection)) renderSection(id, recipes);
  const others = (bySection.other ?? []).reduce((n, r) => n + r.entries.length, 0);
  byId('other-count').textContent = others === 0 ? '' : `(${others})`;
  renderCluster(s.health);
  renderLeases(s);
  tick();
}

/** @param {LogLine} line */
function logItem(line) {
  return h(
    'li',
    { class: line.level },
    h('time', { datetime: new Date(line.time).toISOString() }, clock(line.time)),
    ' ',
    line.kind === undefined ? undefined : h('span', { class: 'kind' }, line.kind),
    line.path === undefined ? undefined : h('code', {}, line.path),
    line.path === undefined ? '' : ': ',
    line.text,
  );
}

/** @param {LogLine} line */
function addLog(line) {
  const log = byId('log');
  log.prepend(logItem(line));
  while (log.children.length > MAX_LOG) log.lastElementChild?.remove();
}

const events = new EventSource('events');
events.addEventListener('hello', (e) => {
  const { log, state: s } = JSON.parse(/** @type {MessageEvent<string>} */ (e).data);
  byId('log').replaceChildren(...log.map(logItem).reverse());
  rendered.clear();
  setState(s);
});
events.addEventListener('state', (e) => {
  setState(JSON.parse(/** @type {MessageEvent<string>} */ (e).data));
});
events.addEventListener('log', (e) => {
  addLog(JSON.parse(/** @type {MessageEvent<string>} */ (e).data));
});
events.addEventListener('error', () => {
  const badge = byId('connection');
  badge.textContent = 'dashboard server unreachable: reconnecting…';
  badge.className = 'badge warn';
});
setInterval(tick, 250);
