/**
 * etcd-connector: distributed coordination recipes for Node.js on etcd v3.
 * @packageDocumentation
 */
export { EtcdConnector, type EtcdConnectorOptions } from './connector.js';
export { prepareEndpointList, DEFAULT_MAX_REQUEST_BYTES } from './paths.js';
export * from './errors.js';
export {
  Session,
  type SessionState,
  type SessionStateChange,
  type SessionOptions,
} from './session.js';
export * from './recipes/leader-elector.js';
export * from './recipes/leader-observer.js';
export * from './recipes/registration.js';
export * from './recipes/service-tracker.js';
export * from './recipes/ephemeral-key.js';
export * from './recipes/observer.js';
export * from './recipes/health-monitor.js';
