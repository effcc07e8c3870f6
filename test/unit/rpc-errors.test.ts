// How etcd3's and grpc-js's errors become ours: the class decides whether a caller retries.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GRPCDeadlineExceededError, GRPCUnavailableError, GRPCUnknownError } from 'etcd3';
import { RequestFailedError, TimeoutError, UnavailableError } from '../../src/errors.js';
import { toConnectorError } from '../../src/transport/rpc.js';

/** A grpc-js status error as a stream hands it over (a plain Error with a numeric code). */
function grpcError(code: number, message: string): Error {
  return Object.assign(new Error(message), { code });
}

void test("a deadline is a TimeoutError, etcd's own context expiry (UNKNOWN) included", () => {
  const deadlines = [
    new GRPCDeadlineExceededError('4 DEADLINE_EXCEEDED: Deadline exceeded after 1.500s'),
    new GRPCUnknownError('2 UNKNOWN: context deadline exceeded'),
    grpcError(2, '2 UNKNOWN: context deadline exceeded'),
    grpcError(4, '4 DEADLINE_EXCEEDED: Deadline exceeded'),
  ];
  for (const e of deadlines) {
    const ours = toConnectorError(e, 'range');
    assert.ok(ours instanceof TimeoutError, `${e.message}: ${ours.name}`);
    assert.notEqual(ours.cause, undefined);
  }
});

void test('other transient failures are UnavailableError; a final one is RequestFailedError', () => {
  assert.ok(
    toConnectorError(
      new GRPCUnavailableError('14 UNAVAILABLE: Connection dropped'),
      'range',
    ) instanceof UnavailableError,
  );
  assert.ok(
    toConnectorError(new GRPCUnknownError('2 UNKNOWN: something else'), 'range') instanceof
      UnavailableError,
  );
  assert.ok(
    toConnectorError(
      grpcError(3, '3 INVALID_ARGUMENT: etcdserver: key is not provided'),
      'put',
    ) instanceof RequestFailedError,
  );
});

void test("grpc-js's empty resolution note is cut from the message; a real one stays", () => {
  const refused = toConnectorError(
    new GRPCUnavailableError(
      '14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED ' +
        '127.0.0.1:2379. Resolution note: ',
    ),
    'status of 127.0.0.1:2379',
  );
  assert.ok(refused instanceof UnavailableError);
  assert.equal(
    refused.message,
    'status of 127.0.0.1:2379: 14 UNAVAILABLE: No connection established. Last error: Error: ' +
      'connect ECONNREFUSED 127.0.0.1:2379',
  );
  const noted = toConnectorError(
    new GRPCUnavailableError('14 UNAVAILABLE: No addresses resolved. Resolution note: DNS failed'),
    'range',
  );
  assert.match(noted.message, /Resolution note: DNS failed$/);
});
