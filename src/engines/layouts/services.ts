/**
 * Service instances: ours (`path/<instance>` under the registering process's lease, any value) and
 * Go's gRPC naming endpoints (`target/<addr>`, value `{"Op":0,"Addr":..,"Metadata":..}`, leased or
 * not).
 */
import { byKey, count, groupBy, lastSegment, parentOf, shown, view } from './groups.js';
import type { KeyEntry, LayoutDecoder } from './types.js';

/** The `Addr` of a Go endpoint value, or undefined when the value is not one. */
export function endpointAddr(value: string): string | undefined {
  if (!value.startsWith('{')) return undefined;
  try {
    const parsed: unknown = JSON.parse(value);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
    const addr = (parsed as { Addr?: unknown }).Addr;
    return typeof addr === 'string' && addr !== '' ? addr : undefined;
  } catch {
    return undefined;
  }
}

export const endpointsDecoder: LayoutDecoder = {
  name: 'endpoints',
  decode(entries) {
    const groups = groupBy(entries, (e) =>
      endpointAddr(e.value) === undefined ? undefined : parentOf(e.key),
    );
    return [...groups].map(([path, group]) => ({
      kind: 'endpoints',
      path,
      summary: count(group.length, 'endpoint'),
      entries: [...group].sort(byKey).map((e) => view(e, 'endpoint', endpointAddr(e.value) ?? '')),
    }));
  },
};

/** Leased keys no other layout took: registrations (and other ephemeral keys), by parent. */
export const servicesDecoder: LayoutDecoder = {
  name: 'services',
  decode(entries) {
    const groups = groupBy(entries, (e) => (e.lease === undefined ? undefined : parentOf(e.key)));
    return [...groups].map(([path, group]) => {
      const ordered = [...group].sort(byKey);
      const names = ordered.map((e) => lastSegment(e.key));
      return {
        kind: 'services',
        path,
        summary: `${count(ordered.length, 'instance')}: ${shown(names.join(', '))}`,
        entries: ordered.map((e, i) => view(e, 'instance', names[i] ?? '')),
      };
    });
  },
};

/** The first `__<name>` segment of a key and everything before it, e.g. `/ns/q/__jobs.queue`. */
const BOOKKEEPING = /^(.*?\/__[^/]+)(?:\/|$)/;

/**
 * etcd-connector's own bookkeeping beside a recipe (`<parent>/__<name>.<kind>/...`: queue lines,
 * receipts): shown apart so it is not read as services or locks.
 */
export const bookkeepingDecoder: LayoutDecoder = {
  name: 'bookkeeping',
  decode(entries) {
    const groups = groupBy(entries, (e) => BOOKKEEPING.exec(e.key)?.[1]);
    return [...groups].map(([path, group]) => ({
      kind: 'bookkeeping',
      path,
      summary: count(group.length, 'key'),
      entries: [...group].sort(byKey).map((e) => view(e, 'key', e.key.slice(path.length + 1))),
    }));
  },
};

/** Whatever is left, by parent: plain keys of the application (configuration, counters, ...). */
export const unknownDecoder: LayoutDecoder = {
  name: 'unknown',
  decode(entries: readonly KeyEntry[]) {
    const groups = groupBy(entries, (e) => parentOf(e.key));
    return [...groups].map(([path, group]) => ({
      kind: 'unknown',
      path,
      summary: count(group.length, 'key'),
      entries: [...group].sort(byKey).map((e) => view(e, 'key', lastSegment(e.key))),
    }));
  },
};
