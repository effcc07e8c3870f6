/**
 * `etcd-connector/testing`: real etcd processes and network faults for tests — the kit this
 * library's own tests use. No mocks: members are real `etcd` processes on 127.0.0.1.
 *
 * @example
 * ```ts
 * import { startEtcd } from 'etcd-connector/testing';
 * await using etcd = await startEtcd();
 * // new Etcd3({ hosts: etcd.endpoints }) ...
 * ```
 *
 * @packageDocumentation
 */
export {
  enableAuth,
  type AuthOptions,
  type AuthPermission,
  type AuthPermissionType,
  type AuthRole,
  type AuthUser,
} from './auth.js';
export { findEtcdBinary } from './binary.js';
export { ETCD_DATA_DIR_MARKER } from './cleanup.js';
export { startEtcd, startEtcdCluster, type EtcdCluster, type EtcdOptions } from './etcd-cluster.js';
export type { EtcdMember } from './etcd-member.js';
export { startClusterProxies, startProxy, type FaultProxy, type ProxyMode } from './proxy.js';
export {
  etcd3Credentials,
  makeTlsMaterial,
  type Etcd3Credentials,
  type TlsKeyPair,
  type TlsMaterial,
  type TlsMaterialOptions,
} from './tls.js';
export { testTimeout, uniqueName, waitFor, withTimeout, type WaitForOptions } from './wait.js';
