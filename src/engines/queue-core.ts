/**
 * What every consumer and producer of one queue in one connector shares: the held session, the
 * receipt book and the claim loop (engines/claim-queue.ts). Queue objects take a reference; the
 * last one to close (or the connector's close) ends it. One per queue, kind and session: two
 * loops of one connector would share the session's line key and fight over it.
 */
import type { ItemLayout } from './claim-candidates.js';
import { ClaimQueue } from './claim-queue.js';
import type { ConnectorContext } from './context.js';
import { HeldSession } from './held-session.js';
import { bookkeepingDir } from './keys.js';
import { ReceiptBook } from './receipts.js';
import type { Session } from '../session/session.js';

/** One queue of a connector, as a Queue object names it. */
export interface QueueSpec {
  readonly ctx: ConnectorContext;
  /** Names the queue in errors. */
  readonly what: string;
  readonly path: string;
  /** `queue`, `pqueue`: the bookkeeping dir is `<parent>/__<name>.<kind>`. */
  readonly kind: string;
  readonly items: ItemLayout;
  readonly ttl: number;
  /** The user's session, if the queue is bound to one. */
  readonly bound: Session | undefined;
}

export class QueueCore {
  readonly held: HeldSession;
  readonly book: ReceiptBook;
  readonly claims: ClaimQueue;
  /** `<parent>/__<name>.<kind>`: the line and the receipts. */
  readonly dir: string;
  refs = 0;
  private closing: Promise<void> | undefined;

  constructor(
    { ctx, what, path, kind, items, ttl, bound }: QueueSpec,
    private readonly onClose: () => void,
  ) {
    this.dir = bookkeepingDir(path, kind);
    this.held = new HeldSession(ctx, ttl, what, bound);
    this.book = new ReceiptBook(ctx, `${this.dir}/receipts`, this.held);
    this.claims = new ClaimQueue({
      ctx,
      what,
      items,
      dir: this.dir,
      held: this.held,
      book: this.book,
    });
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.onClose();
      await this.claims.close();
      await this.held.close();
    })();
    return this.closing;
  }
}

const cores = new WeakMap<ConnectorContext, Map<string, QueueCore>>();
const sessionIds = new WeakMap<Session, number>();
let nextSessionId = 0;

/** A reference to the shared core of a queue; `release()` it once (the last one closes it). */
export function acquireQueueCore(spec: QueueSpec): {
  core: QueueCore;
  release: () => Promise<void>;
} {
  const { ctx, path, kind, ttl, bound } = spec;
  let byName = cores.get(ctx);
  if (byName === undefined) cores.set(ctx, (byName = new Map<string, QueueCore>()));
  let sessionPart = `ttl ${ttl}`;
  if (bound !== undefined) {
    let id = sessionIds.get(bound);
    if (id === undefined) sessionIds.set(bound, (id = nextSessionId++));
    sessionPart = `session ${id}`;
  }
  const name = `${kind} ${path} ${sessionPart}`;
  let core = byName.get(name);
  if (core === undefined) {
    const map = byName;
    let untrack: () => void = () => undefined;
    core = new QueueCore(spec, () => {
      map.delete(name);
      untrack();
    });
    const made = core;
    untrack = ctx.track({ close: () => made.close() });
    byName.set(name, core);
  }
  core.refs += 1;
  const held = core;
  let released = false;
  return {
    core,
    release: async () => {
      if (released) return;
      released = true;
      held.refs -= 1;
      if (held.refs === 0) await held.close();
    },
  };
}
