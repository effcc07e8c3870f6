// Which failures may be tried again on another member: only those that prove the request never
// left (a write that may have been applied must never be sent twice).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { neverSent } from '../../src/transport/client-options.js';

void test('only failures that prove the request never left are retried', () => {
  const unsent = [
    '14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ',
    '14 UNAVAILABLE: No connection established. Last error: Failed to connect (2026-11-29T23:00:00.000Z). Resolution note: ',
    'Execution prevented because the circuit breaker is open',
  ];
  const maybeSent = [
    '14 UNAVAILABLE: Connection dropped',
    '4 DEADLINE_EXCEEDED: Deadline exceeded after 5.001s',
    '13 INTERNAL: Received RST_STREAM with code 2',
    '14 UNAVAILABLE: etcdserver: leader changed',
  ];
  for (const m of unsent) assert.equal(neverSent(new Error(m)), true, m);
  for (const m of maybeSent) assert.equal(neverSent(new Error(m)), false, m);
});
