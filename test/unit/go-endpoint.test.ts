// Fast tests of Go's naming/endpoints value format: no etcd. The same bytes are checked against a
// real Go peer in test/endpoints.test.ts.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InvalidArgumentError } from '../../src/errors.js';
import {
  endpointValue,
  goJson,
  goString,
  parseEndpoint,
  splitAddr,
  validateAddr,
} from '../../src/engines/go-endpoint.js';

void describe("Go's endpoint format", () => {
  void test('the value: Op, Addr, Metadata in struct order, no spaces, null for none', () => {
    assert.equal(
      endpointValue('10.0.0.1:50051', goJson(undefined)),
      '{"Op":0,"Addr":"10.0.0.1:50051","Metadata":null}',
    );
    assert.equal(
      endpointValue('h:1', goJson({ zone: 'a', weight: 3, tags: ['x', 'y'], on: true })),
      '{"Op":0,"Addr":"h:1","Metadata":{"on":true,"tags":["x","y"],"weight":3,"zone":"a"}}',
    );
    assert.equal(goJson(null), 'null');
    assert.equal(goJson('s'), '"s"');
    assert.equal(goJson([]), '[]');
    assert.equal(goJson({}), '{}');
  });

  void test("strings: Go's HTML-safe escaping (before Go 1.22), U+FFFD for a lone surrogate", () => {
    assert.equal(goString('a<b>&c'), String.raw`"a\u003cb\u003e\u0026c"`);
    assert.equal(goString('q"b\\'), String.raw`"q\"b\\"`);
    assert.equal(goString('\n\r\t'), String.raw`"\n\r\t"`);
    assert.equal(goString('\b\f\u0000\u001f'), String.raw`"\u0008\u000c\u0000\u001f"`);
    assert.equal(goString('\u2028\u2029'), String.raw`"\u2028\u2029"`);
    assert.equal(goString('/\u007f é 😀'), '"/\u007f é 😀"');
    assert.equal(goString('x\ud800y\udc00'), String.raw`"x\ufffdy\ufffd"`);
  });

  void test('object keys sorted by UTF-8 bytes (Go), not UTF-16 units; nested too', () => {
    // UTF-16 puts U+1F600 (0xD83D...) before U+FF61; UTF-8 (F0... vs EF...) after it, as Go.
    const json = goJson({ '\u{1F600}': 1, '\uFF61': 2, b: { z: 1, a: 2 }, a: null });
    assert.equal(json, '{"a":null,"b":{"a":2,"z":1},"｡":2,"😀":1}');
    assert.deepEqual(Object.keys(JSON.parse(json) as object), ['a', 'b', '｡', '😀']);
  });

  void test("numbers as Go's encoder (ES6 formatting)", () => {
    assert.equal(
      goJson([1, -2.5, 1e21, 1.5e-7, 0.000001, 123456789012345680000]),
      '[1,-2.5,1e+21,1.5e-7,0.000001,123456789012345680000]',
    );
    assert.equal(goJson(-0), '0'); // as JSON.stringify has it
  });

  void test('what JSON.stringify describes: toJSON, undefined properties left out', () => {
    assert.equal(goJson({ at: new Date(0), gone: undefined }), '{"at":"1970-01-01T00:00:00.000Z"}');
  });

  void test('not JSON: refused with InvalidArgumentError (never turned into null silently)', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    for (const bad of [
      NaN,
      Infinity,
      { w: -Infinity },
      [NaN],
      1n,
      { n: 2n },
      cyclic,
      () => 1,
      Symbol('s'),
    ]) {
      assert.throws(() => goJson(bad), InvalidArgumentError, typeof bad);
    }
  });

  void test('addresses: host:port, [IPv6]:port; nothing else', () => {
    for (const ok of [
      '10.0.0.1:50051',
      'api.example.com:443',
      'localhost:1',
      '[::1]:8080',
      '[fe80::1%eth0]:9',
      'a_b-c:65535',
    ]) {
      assert.equal(validateAddr(ok), ok);
    }
    for (const bad of [
      '',
      'host',
      ':80',
      'host:',
      'host:0',
      'host:65536',
      'a b:1',
      'a/b:1',
      '[host]:1',
      '::1:80',
      'unix:///tmp/s',
      7,
    ]) {
      assert.throws(() => validateAddr(bad), InvalidArgumentError, String(bad));
    }
    assert.deepEqual(splitAddr('[::1]:8080'), { host: '::1', port: 8080 });
    assert.deepEqual(splitAddr('h:5'), { host: 'h', port: 5 });
  });

  void test("reading as Go's decoder: case-insensitive fields, last wins, Op ignored, foreign skipped", () => {
    assert.deepEqual(parseEndpoint('{"Op":0,"Addr":"h:1","Metadata":{"a":1}}'), {
      addr: 'h:1',
      metadata: { a: 1 },
    });
    assert.deepEqual(parseEndpoint('{"Addr":"h:1"}'), { addr: 'h:1', metadata: null });
    // Go treats every PUT as an addition, whatever Op says.
    assert.deepEqual(parseEndpoint('{"Op":1,"Addr":"h:1"}'), { addr: 'h:1', metadata: null });
    assert.deepEqual(parseEndpoint('{"addr":"a:1","ADDR":"b:2","metadata":"m","x":1}'), {
      addr: 'b:2',
      metadata: 'm',
    });
    // JSON null leaves a string field as it was.
    assert.deepEqual(parseEndpoint('{"Addr":"a:1","addr":null}'), { addr: 'a:1', metadata: null });
    for (const [value, reason] of [
      ['not json', 'not JSON'],
      ['"h:1"', 'not a JSON object (string)'],
      ['[1]', 'not a JSON object (array)'],
      ['null', 'not a JSON object (null)'],
      ['{}', 'no Addr'],
      ['{"Addr":""}', 'no Addr'],
      ['{"Addr":5}', 'Addr is not a string'],
      ['{"Addr":"h:1","Op":"add"}', 'Op is not an integer from 0 to 255'],
      ['{"Addr":"h:1","Op":256}', 'Op is not an integer from 0 to 255'],
    ] as const) {
      assert.deepEqual(parseEndpoint(value), { reason }, value);
    }
  });
});
