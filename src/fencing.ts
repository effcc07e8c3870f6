/**
 * Fencing tokens (docs/faults.md: leases alone are not mutual exclusion). A token is the create
 * revision of the key that grants a role (leader key, later lock keys): every new holder's key is
 * created later, so tokens strictly increase, and a transaction that compares it fails once the
 * holder's key is gone — whatever the deposed holder believes.
 */
import {
  CompareResult,
  CompareTarget,
  type ComparatorBuilder,
  type Etcd3,
  type ICompare,
} from 'etcd3';

/**
 * Proof of one leadership term (or lock hold): the create revision of its key. Whoever receives
 * the holder's side effects can refuse ones with a smaller token; inside etcd, put
 * {@link FencingToken.compare} into the transaction and a deposed holder's write fails.
 */
export interface FencingToken {
  /** The key that grants the role, e.g. the leader key `path + '/' + leaseId(hex)`. */
  readonly key: string;
  /** Create revision of that key, as etcd's decimal string. Compare tokens with `BigInt()`. */
  readonly revision: string;
  /**
   * Adds "the key still has this create revision" to a transaction of the root client. Give that
   * transaction an operation: etcd 3.4 answers one with compares only (or only serializable
   * reads) from the member asked, without checking with the raft leader, so a follower that has
   * not applied the latest writes yet can say a deleted key still has its revision.
   */
  compare(txn: ComparatorBuilder): ComparatorBuilder;
  /**
   * Starts a transaction guarded by this token: `token.txn(conn.client).then(...).commit()`. When
   * the compare fails it reads the key (its `else`, unless you set your own), which also makes
   * etcd answer as of now even when `then` holds no write.
   */
  txn(client: Etcd3): ComparatorBuilder;
  /** The raw compare, for `client.kv.txn({ compare: [...] })`. */
  toCompare(): ICompare;
}

/**
 * The token of the key `key` created at `revision`. Use the connector's root client (`conn.client`)
 * with it: a namespaced etcd3 client would prefix the key.
 */
export function fencingToken(key: string, revision: string): FencingToken {
  return new Token(key, revision);
}

/** Methods on the prototype: a holder of thousands of tokens keeps two strings each. */
class Token implements FencingToken {
  constructor(
    readonly key: string,
    readonly revision: string,
  ) {}

  compare(txn: ComparatorBuilder): ComparatorBuilder {
    return txn.and(this.key, 'Create', '==', this.revision);
  }

  txn(client: Etcd3): ComparatorBuilder {
    // A linearizable read in a branch: etcd 3.4 serves a transaction whose branches hold no write
    // and no such read (e.g. a fenced check with no operations) from a follower's local state.
    return client
      .if(this.key, 'Create', '==', this.revision)
      .else({ request_range: { key: Buffer.from(this.key), keys_only: true } });
  }

  toCompare(): ICompare {
    return {
      key: Buffer.from(this.key),
      target: CompareTarget.Create,
      result: CompareResult.Equal,
      create_revision: this.revision,
    };
  }
}
