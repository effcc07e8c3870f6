/** Turning on etcd's user/role authentication in a test cluster. */
import { Etcd3, GRPCDeadlineExceededError, Range, isRecoverableError } from 'etcd3';
import {
  InvalidArgumentError,
  RequestFailedError,
  TimeoutError,
  UnavailableError,
} from '../errors.js';
import type { EtcdCluster } from './etcd-cluster.js';
import { httpJson } from './http.js';
import { etcd3Credentials, kitClientTls } from './tls.js';
import { testTimeout, waitFor } from './wait.js';

/** What a grant allows. */
export type AuthPermissionType = 'read' | 'write' | 'readwrite';

/** One grant: every key under a prefix, or a single key. */
export type AuthPermission =
  | { prefix: string; key?: never; permission: AuthPermissionType }
  | { key: string; prefix?: never; permission: AuthPermissionType };

/** A role several users can share. */
export interface AuthRole {
  name: string;
  permissions: AuthPermission[];
}

/** A user; one with neither `permissions` nor `roles` may authenticate but read nothing. */
export interface AuthUser {
  name: string;
  password: string;
  /** Granted through a role of the user's own, named `user:<name>`. */
  permissions?: AuthPermission[];
  /** Names of roles from {@link AuthOptions.roles}, or `'root'` (every permission). */
  roles?: string[];
}

/** Options of {@link enableAuth}. */
export interface AuthOptions {
  /** Password of the `root` user the kit creates (etcd needs it to enable auth). */
  rootPassword: string;
  roles?: AuthRole[];
  users?: AuthUser[];
  /** Deadline of the whole setup, default `testTimeout(20000)`. */
  timeoutMs?: number;
}

const ETCD3_PERMISSION = { read: 'Read', write: 'Write', readwrite: 'Readwrite' } as const;

function userRole(user: AuthUser): string {
  return `user:${user.name}`;
}

/** Every mistake is reported before etcd is touched: a half-done setup helps no test. */
function validate(options: AuthOptions): void {
  const roles = new Set(['root']);
  for (const role of options.roles ?? []) {
    if (roles.has(role.name)) throw new InvalidArgumentError('roles', `${role.name} twice`);
    roles.add(role.name);
  }
  const users = new Set(['root']);
  for (const user of options.users ?? []) {
    if (users.has(user.name)) {
      throw new InvalidArgumentError('users', `${user.name} twice (root is the kit's)`);
    }
    users.add(user.name);
    if (roles.has(userRole(user))) {
      throw new InvalidArgumentError('roles', `${userRole(user)} is the role of user ${user.name}`);
    }
    const unknown = (user.roles ?? []).find((r) => !roles.has(r));
    if (unknown !== undefined) {
      throw new InvalidArgumentError('users', `${user.name}: unknown role ${unknown}`);
    }
  }
}

/** A failed setup step as the library's typed error, naming the step. */
function stepError(step: string, err: unknown): Error {
  const why = `enableAuth: ${step}: ${err instanceof Error ? err.message : String(err)}`;
  if (err instanceof GRPCDeadlineExceededError) return new TimeoutError(why, { cause: err });
  if (err instanceof Error && isRecoverableError(err)) {
    return new UnavailableError(why, { cause: err });
  }
  return new RequestFailedError(why, { cause: err });
}

async function step<T>(name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw stepError(name, err);
  }
}

async function createRole(
  admin: Etcd3,
  role: string,
  permissions: AuthPermission[],
): Promise<void> {
  await step(`creating role ${role}`, () => admin.role(role).create());
  for (const p of permissions) {
    const permission = ETCD3_PERMISSION[p.permission];
    await step(`granting ${p.permission} on ${p.prefix ?? p.key} to role ${role}`, () =>
      admin
        .role(role)
        .grant(
          p.prefix === undefined
            ? { permission, key: p.key }
            : { permission, range: Range.prefix(p.prefix) },
        ),
    );
  }
}

/**
 * Waits until every running member refuses a made-up token. A follower applies `authEnable` a
 * moment after the member that answered it, and until then serves requests without a token.
 * The gateway passes the `Authorization` header on as etcd's token.
 */
async function waitEnforced(cluster: EtcdCluster, deadline: number): Promise<void> {
  const tls = cluster.tls === undefined ? undefined : kitClientTls(cluster.tls);
  const probe = JSON.stringify({
    key: Buffer.from('etcdc-kit-auth-probe').toString('base64'),
    serializable: true,
  });
  const members = cluster.members.filter((m) => m.running && !m.paused);
  await waitFor(
    async () => {
      const replies = await Promise.all(
        members.map((m) =>
          httpJson(`${m.endpoint}/v3/kv/range`, 1000, {
            body: probe,
            tls,
            headers: { authorization: 'etcdc-kit-not-a-token' },
          }),
        ),
      );
      return replies.every((r) => JSON.stringify(r.json).includes('invalid auth token'));
    },
    { timeoutMs: Math.max(0, deadline - Date.now()), message: 'every member to enforce auth' },
  );
}

/**
 * Turns on authentication in `cluster`: creates the `root` user (role `root`), the `roles`, the
 * `users` with their roles and permissions, then enables auth and resolves once every running
 * member enforces it. Works with TLS clusters (the kit's client presents `tls.client`).
 *
 * @throws {@link InvalidArgumentError} for duplicate names or unknown roles, before any change
 * @throws {@link RequestFailedError} when etcd refuses a step (e.g. auth already enabled)
 * @throws {@link UnavailableError} / {@link TimeoutError} when etcd cannot be reached in time
 */
export async function enableAuth(cluster: EtcdCluster, options: AuthOptions): Promise<void> {
  validate(options);
  const deadline = Date.now() + (options.timeoutMs ?? testTimeout(20000));
  const admin = new Etcd3({
    hosts: cluster.endpoints,
    ...(cluster.tls === undefined ? {} : { credentials: etcd3Credentials(cluster.tls) }),
    defaultCallOptions: () => ({ deadline }),
  });
  try {
    await createRole(admin, 'root', []);
    await step('creating user root', () => admin.user('root').create(options.rootPassword));
    await step('adding role root to user root', () => admin.user('root').addRole('root'));
    for (const role of options.roles ?? []) await createRole(admin, role.name, role.permissions);
    for (const user of options.users ?? []) {
      await step(`creating user ${user.name}`, () => admin.user(user.name).create(user.password));
      const roles = [...(user.roles ?? [])];
      if (user.permissions !== undefined && user.permissions.length > 0) {
        await createRole(admin, userRole(user), user.permissions);
        roles.push(userRole(user));
      }
      for (const role of roles) {
        await step(`adding role ${role} to user ${user.name}`, () =>
          admin.user(user.name).addRole(role),
        );
      }
    }
    await step('enabling auth', () => admin.auth.authEnable());
  } finally {
    admin.close();
  }
  await waitEnforced(cluster, deadline);
}
