// The public surface, pinned: every runtime export by name, and the types users build on.
// Changing either list is an API change and must be deliberate.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as api from '../src/index.js';
import * as testing from '../src/testing/index.js';
import * as grpc from '../src/grpc/index.js';

void test('the runtime exports of etcd-connector are exactly these', () => {
  assert.deepEqual(Object.keys(api).sort(), [
    'AbortError',
    'AuthenticationFailedError',
    'ClosedError',
    'ClusterStatus',
    'CompactedError',
    'DEFAULT_MAX_REQUEST_BYTES',
    'ErrorCode',
    'EtcdConnector',
    'EtcdConnectorError',
    'EtcdNotFoundError',
    'EtcdStartError',
    'InvalidArgumentError',
    'InvalidStateError',
    'KeyChangedError',
    'KeyExistsError',
    'LEStatus',
    'NoInstanceError',
    'NotLeaderError',
    'PermissionDeniedError',
    'RequestFailedError',
    'SessionLostError',
    'SlowConsumerError',
    'TimeoutError',
    'TlsError',
    'UnavailableError',
    'fencingToken',
    'hasCode',
    'prepareEndpointList',
  ]);
});

void test('the runtime exports of etcd-connector/testing are exactly these', () => {
  assert.deepEqual(Object.keys(testing).sort(), [
    'ETCD_DATA_DIR_MARKER',
    'enableAuth',
    'etcd3Credentials',
    'findEtcdBinary',
    'makeTlsMaterial',
    'startClusterProxies',
    'startEtcd',
    'startEtcdCluster',
    'startProxy',
    'testTimeout',
    'uniqueName',
    'waitFor',
    'withTimeout',
  ]);
});

// Compile-time pins: each name must stay an exported type (the build fails otherwise), and the
// recipe classes must stay types only — made by the connector, never with `new`.
export type PublicTypes = [
  api.EtcdConnectorOptions,
  api.SessionRequest,
  api.SessionHandle,
  api.SessionState,
  api.ConnectionState,
  api.RecipeStream<unknown>,
  api.StartOptions,
  api.TlsOptions,
  api.FencingToken,
  api.ErrorOptions,
  api.KeyChange,
  api.LeaderElector,
  api.LeaderElectorOptions,
  api.LeaderEvent,
  api.LeaderObserver,
  api.LeaderInfo,
  api.ServiceRegistration,
  api.EndpointRegistration,
  api.EndpointRegistrationOptions,
  api.EndpointRegisterOptions,
  api.EndpointTracker,
  api.EndpointTrackerOptions,
  api.EndpointData,
  api.ServiceEndpoint,
  api.ServiceProvider,
  api.ServiceProviderOptions,
  api.ProviderStrategy,
  api.DownInstancePolicy,
  api.PickOptions,
  api.LeaderRunOptions,
  api.LeaderWorkFunction,
  grpc.EtcdResolverOptions,
  api.ServiceTracker,
  api.ServiceData,
  api.ServiceTrackerOptions,
  api.EphemeralKey,
  api.EphemeralKeyState,
  api.EphemeralKeyCreateOptions,
  api.Observer,
  api.ObserverOptions,
  api.ObserverStartOptions,
  api.ObserverEvent,
  api.ObserverChange,
  api.ObserverResync,
  api.ObserverStatus,
  api.HealthMonitor,
  api.HealthMonitorOptions,
  api.HealthMonitorStartOptions,
  api.HealthReport,
  api.MemberHealth,
];

void test('the runtime exports of etcd-connector/grpc are exactly these', () => {
  assert.deepEqual(Object.keys(grpc).sort(), ['registerEtcdResolver']);
});

void test('recipe classes are not values of the package', () => {
  const exported = api as Record<string, unknown>;
  for (const name of [
    'LeaderElector',
    'LeaderObserver',
    'ServiceRegistration',
    'ServiceTracker',
    'EndpointRegistration',
    'EndpointTracker',
    'ServiceProvider',
    'EphemeralKey',
    'Observer',
    'HealthMonitor',
    'SessionHandle',
    'Session',
    'validateInstance',
  ]) {
    assert.equal(exported[name], undefined, name);
  }
});
