/**
 * Telling a credentials problem from a cluster problem. etcd and gRPC report both as plain
 * errors (an authentication failure is gRPC INVALID_ARGUMENT, a failed TLS handshake is
 * UNAVAILABLE, like a dead member), so the CLI looks at etcd3's typed errors and at the messages
 * down the `cause` chain. Used so that `etcdc health` does not call a cluster "unhealthy" when
 * etcdc could not even ask it, and so error lines say what to check.
 */
import {
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  GRPCUnauthenticatedError,
} from 'etcd3';
import { ErrorCode, hasCode } from '../errors.js';

/** `authentication`: etcd refused or needs credentials. `tls`: the TLS handshake failed. */
export type CredentialProblem = 'authentication' | 'tls';

const AUTH_MESSAGES =
  /authentication failed|invalid user ID or password|user name is empty|invalid auth token/i;
const TLS_MESSAGES =
  /secure TLS connection|\bTLS\b|\bSSL\b|certificate|handshake|wrong version number|EPROTO|ERR_SSL|ERR_TLS/i;

/** The credentials problem behind `err` (or one of its causes), if that is what it is. */
export function credentialProblem(err: unknown): CredentialProblem | undefined {
  // Bad input was caught before any I/O: it says nothing about etcd.
  if (hasCode(err, ErrorCode.InvalidArgument)) return undefined;
  // The library's own classes say it; the message test below covers raw etcd3 errors.
  if (hasCode(err, ErrorCode.AuthFailed)) return 'authentication';
  if (hasCode(err, ErrorCode.Tls)) return 'tls';
  let e: unknown = err;
  for (let depth = 0; depth < 8 && e instanceof Error; depth++) {
    if (
      e instanceof EtcdAuthenticationFailedError ||
      e instanceof EtcdInvalidAuthTokenError ||
      e instanceof GRPCUnauthenticatedError ||
      AUTH_MESSAGES.test(e.message)
    ) {
      return 'authentication';
    }
    if (TLS_MESSAGES.test(e.message)) return 'tls';
    e = e.cause;
  }
  return undefined;
}

/** What failed and what to check, in one sentence. */
export function problemHint(problem: CredentialProblem): string {
  return problem === 'authentication'
    ? 'authentication failed: check --user/--password (ETCDC_USER/ETCDC_PASSWORD); ' +
        'this is not a cluster fault'
    : 'TLS failed: check the endpoint scheme (http:// or https://), --cacert, --cert and ' +
        '--key; this is not a cluster fault';
}
