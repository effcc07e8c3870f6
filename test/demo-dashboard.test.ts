/**
 * `npm run demo -- --dashboard`, as the README tells a newcomer: the demo prints the page's
 * address, starts its scenario once the page is open, shows the election, the failovers and the
 * lock moving on from a frozen holder on it, keeps running afterwards, and Ctrl-C (to the process
 * group, as a terminal sends it) ends it with exit 0 and leaves no etcd member, participant, lock
 * worker or server behind.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { PageState } from '../src/cli/dashboard/live.js';
import { ETCD_DATA_DIR_MARKER, testTimeout, waitFor } from '../src/testing/index.js';
import {
  CliProcess,
  ROOT,
  etcdProcessesWith,
  killAll,
  processesWith,
} from './fixtures/cli-harness.js';
import { openEvents, type SseStream } from './fixtures/sse.js';

async function pageState(url: string): Promise<PageState> {
  const res = await fetch(new URL('state', url), { signal: AbortSignal.timeout(5000) });
  return (await res.json()) as PageState;
}

void describe('npm run demo -- --dashboard', () => {
  let stream: SseStream | undefined;

  after(async () => {
    stream?.close();
    await killAll();
  });

  void test('prints the address, runs the scenario on the page, keeps running until Ctrl-C', async () => {
    const runId = `dash${randomBytes(4).toString('hex')}`;
    const marker = `${ETCD_DATA_DIR_MARKER}r${runId}-`;
    // What `npm run demo -- --dashboard` runs (test/cli-demo.test.ts pins the script), without
    // npm in between: npm itself dies of the SIGINT it forwards, hiding the demo's exit code.
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    assert.equal(pkg.scripts.demo, 'node dist/src/cli/main.js demo');
    const demo = new CliProcess(['demo', '--dashboard'], {
      env: { ETCDC_KIT_RUN_ID: runId },
      detached: true,
    });
    const up = await demo.waitLine(/cluster up: /, 'embedded cluster up', 30000);
    const endpoints = (/cluster up: (.*)$/.exec(up)?.[1] ?? '').split(', ').join(',');
    const line = await demo.waitLine(/open http:\/\/\S+ to watch/, 'the address', 15000);
    const url = /open (http:\/\/\S+) to watch/.exec(line)?.[1] ?? '';
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    await demo.waitLine(/the scenario starts when the page is open/, 'the wait for a page');

    // Opening the page starts the scenario (long before the 30 s fallback).
    stream = await openEvents(new URL('events', url).href);
    await stream.next((e) => e.event === 'hello', 'hello');
    const opened = performance.now();
    await demo.waitLine(/== three participants campaign/, 'the scenario starts', 10000);
    assert.ok(performance.now() - opened < testTimeout(10000));

    // The failovers show on the page's log as they happen.
    const events = stream;
    const logged = (re: RegExp, what: string, from = 0) =>
      events.next(
        (e) => e.event === 'log' && re.test((e.data as { text: string }).text),
        what,
        from,
        60000,
      );
    const clean = await logged(
      /node-a \(leader\) left; node-\w: candidate → leader/,
      'the clean stop on the page',
    );
    const crash = await logged(
      /node-[bc] \(leader\) left; node-[bc]: candidate → leader/,
      'the takeover after the crash on the page',
      events.events.indexOf(clean) + 1,
    );
    // The frozen holder's lease runs out: its key goes and the waiter holds the lock.
    await logged(
      /^[0-9a-f]+ \(holder\) left; [0-9a-f]+: waiter → holder$/,
      'the lock moving on the page',
      events.events.indexOf(crash) + 1,
    );

    const keeps = await demo.waitLine(/the demo keeps running/, 'the demo keeps running', 90000);
    assert.ok(keeps);
    const leads = /the leader keeps leading: (node-[bc])/.exec(demo.lines.join('\n'))?.[1];
    assert.ok(leads !== undefined, demo.describe());
    const state = await waitFor(
      async () => {
        const s = await pageState(url);
        const election = s.recipes.find((r) => r.kind === 'election');
        const only = election?.entries.length === 1 && election.entries[0]?.name === leads;
        return only && s.health?.status === 'degraded' ? s : undefined;
      },
      { timeoutMs: testTimeout(10000), message: `the page shows ${leads} leading, a member down` },
    );
    const services = state.recipes.find((r) => r.kind === 'services');
    assert.deepEqual(
      services?.entries.map((e) => e.name),
      ['api-1', 'api-2', 'api-3'],
    );
    // Still running, still serving.
    assert.ok(demo.running);
    assert.equal((await fetch(url)).status, 200);

    demo.interruptGroup();
    const { code } = await demo.exit(20000);
    assert.equal(code, 0, demo.describe());
    assert.match(demo.lines.join('\n'), /done in [\d.]+ s/);
    await stream.ended;
    await assert.rejects(fetch(url, { signal: AbortSignal.timeout(2000) }));
    assert.deepEqual(etcdProcessesWith(marker), [], 'no etcd member left');
    assert.deepEqual(processesWith(' elect demo node-', endpoints), [], 'no participant left');
    assert.deepEqual(processesWith('locks/demo --ttl', endpoints), [], 'no lock worker left');
  });
});
