/**
 * etcd-connector: distributed coordination recipes for Node.js on etcd v3.
 *
 * The export list is explicit and pinned by test/exports.test.ts. Recipe classes are exported as
 * types only: recipes are made by the connector (`conn.newLeaderElector(...)`), never with `new`.
 * @packageDocumentation
 */
export { EtcdConnector, type EtcdConnectorOptions, type SessionRequest } from './connector.js';
export { prepareEndpointList, DEFAULT_MAX_REQUEST_BYTES } from './paths.js';
export {
  ErrorCode,
  EtcdConnectorError,
  InvalidArgumentError,
  InvalidStateError,
  ClosedError,
  KeyExistsError,
  KeyChangedError,
  SessionLostError,
  NotLeaderError,
  NotLockedError,
  NoInstanceError,
  CompactedError,
  SlowConsumerError,
  TimeoutError,
  UnavailableError,
  RequestFailedError,
  AuthenticationFailedError,
  PermissionDeniedError,
  TlsError,
  AbortError,
  EtcdNotFoundError,
  EtcdStartError,
  TooManyParticipantsError,
  TransactionConflictError,
  OutcomeUnknownError,
  ValueFormatError,
  hasCode,
  type ErrorOptions,
  type KeyChange,
} from './errors.js';
export { fencingToken, type FencingToken } from './fencing.js';
export {
  DIAGNOSTIC_CHANNELS,
  type DiagnosticChannel,
  type DiagnosticMessages,
  type LockKind,
} from './diagnostics.js';
export type { TlsOptions } from './transport/client-options.js';
export type { ConnectionState } from './transport/connection-state.js';
export type { RecipeStream } from './transport/stream-queue.js';
export type { StartOptions } from './engines/lifecycle.js';
export type { SessionState } from './session/session.js';
export type { SessionHandle } from './session/session-handle.js';
export {
  LEStatus,
  type LeaderElector,
  type LeaderElectorOptions,
  type LeaderEvent,
  type LeaderRunOptions,
  type LeaderWorkFunction,
} from './recipes/leader-elector.js';
export type { LeaderObserver, LeaderInfo } from './recipes/leader-observer.js';
export type { HeldLock as Lock, LockState } from './engines/held-lock.js';
export type { LockRecipeOptions } from './engines/queue-lock.js';
export type { Mutex, MutexOptions, LockOptions } from './recipes/mutex.js';
export type { RWMutex, RWMutexOptions } from './recipes/rw-mutex.js';
export type { Semaphore, SemaphoreOptions, Permit } from './recipes/semaphore.js';
export type { MultiLock, MultiLockHandle, MultiLockOptions } from './recipes/multi-lock.js';
export type { ServiceRegistration } from './recipes/registration.js';
export type {
  ServiceTracker,
  ServiceData,
  ServiceTrackerOptions,
} from './recipes/service-tracker.js';
export type {
  EndpointRegistration,
  EndpointRegistrationOptions,
  EndpointRegisterOptions,
} from './recipes/endpoint-registration.js';
export type {
  EndpointTracker,
  EndpointTrackerOptions,
  EndpointData,
  ServiceEndpoint,
} from './recipes/endpoint-tracker.js';
export type {
  ServiceProvider,
  ServiceProviderOptions,
  ProviderStrategy,
  DownInstancePolicy,
  PickOptions,
} from './recipes/service-provider.js';
export type {
  EphemeralKey,
  EphemeralKeyState,
  EphemeralKeyCreateOptions,
} from './recipes/ephemeral-key.js';
export type {
  Observer,
  ObserverOptions,
  ObserverStartOptions,
  ObserverEvent,
  ObserverChange,
  ObserverResync,
  ObserverStatus,
} from './recipes/observer.js';
export {
  ClusterStatus,
  type HealthMonitor,
  type HealthMonitorOptions,
  type HealthMonitorStartOptions,
  type HealthReport,
  type MemberHealth,
} from './recipes/health-monitor.js';
export type { CallOptions } from './engines/call-scope.js';
export type { SessionOptions } from './engines/held-session.js';
export type { Barrier } from './recipes/barrier.js';
export type { DoubleBarrier, DoubleBarrierOptions } from './recipes/double-barrier.js';
export type { Queue, QueueOptions, QueueItem } from './recipes/queue.js';
export type { PriorityQueue, PriorityQueueOptions } from './recipes/priority-queue.js';
export type { Counter, CounterOptions } from './recipes/counter.js';
export type { Isolation, StmOptions, StmResult, StmTx } from './recipes/stm.js';
export type {
  Inspector,
  InspectorOptions,
  InspectorStartOptions,
  InspectorState,
  LeaseTtl,
} from './recipes/inspector.js';
export type { EntryView, RecipeKind, RecipeView, Since } from './engines/layouts/index.js';
