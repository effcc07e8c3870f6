/**
 * A minimal client of etcd's own lock service (`v3lockpb.Lock`, what the gRPC gateway and
 * `etcdctl` users call "the v3lock API"): `Lock(name, lease)` blocks in the server until the lock
 * is ours (the server runs Go's concurrency.Mutex under the given lease) and returns the key;
 * `Unlock(key)` deletes it. etcd3 has no binding for it, so the two messages are encoded by hand
 * (two fields each) over grpc-js, the transport etcd3 itself uses.
 */
import { credentials, Client, type ServiceError } from '@grpc/grpc-js';

function varint(n: bigint): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, n);
  while (v >= 0x80n) {
    out.push(Number((v & 0x7fn) | 0x80n));
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

function bytesField(field: number, value: Buffer): Buffer {
  return Buffer.concat([Buffer.from([(field << 3) | 2, ...varint(BigInt(value.length))]), value]);
}

/** Field `field` (length-delimited) of a protobuf message, if present. */
function readBytesField(msg: Buffer, field: number): Buffer | undefined {
  let i = 0;
  const readVarint = (): bigint => {
    let shift = 0n;
    let v = 0n;
    for (;;) {
      const b = msg[i++];
      if (b === undefined) throw new Error('truncated protobuf');
      v |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return v;
      shift += 7n;
    }
  };
  while (i < msg.length) {
    const tag = Number(readVarint());
    const wire = tag & 7;
    if (wire === 0) readVarint();
    else if (wire === 2) {
      const len = Number(readVarint());
      if (tag >> 3 === field) return msg.subarray(i, i + len);
      i += len;
    } else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else throw new Error(`unexpected wire type ${wire}`);
  }
  return undefined;
}

export class V3LockClient {
  readonly #client: Client;

  constructor(endpoint: string) {
    this.#client = new Client(endpoint.replace(/^https?:\/\//, ''), credentials.createInsecure());
  }

  /** Waits in etcd until `name` is locked under `lease` (decimal); resolves with the key. */
  lock(name: string, lease: string, deadlineMs = 60000): Promise<string> {
    const request = Buffer.concat([
      bytesField(1, Buffer.from(name)),
      Buffer.from([(2 << 3) | 0, ...varint(BigInt(lease))]),
    ]);
    return new Promise((resolve, reject) => {
      this.#client.makeUnaryRequest(
        '/v3lockpb.Lock/Lock',
        (b: Buffer) => b,
        (b: Buffer) => b,
        request,
        { deadline: Date.now() + deadlineMs },
        (err: ServiceError | null, res?: Buffer) => {
          const key = res === undefined ? undefined : readBytesField(res, 2);
          if (err !== null || key === undefined) reject(err ?? new Error('no key in LockResponse'));
          else resolve(key.toString());
        },
      );
    });
  }

  unlock(key: string, deadlineMs = 10000): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#client.makeUnaryRequest(
        '/v3lockpb.Lock/Unlock',
        (b: Buffer) => b,
        (b: Buffer) => b,
        bytesField(1, Buffer.from(key)),
        { deadline: Date.now() + deadlineMs },
        (err: ServiceError | null) => {
          if (err !== null) reject(err);
          else resolve();
        },
      );
    });
  }

  close(): void {
    this.#client.close();
  }
}
