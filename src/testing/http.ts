/** Tiny HTTP/JSON calls to etcd's client port (health and the grpc-gateway status). */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';

/** What an https request to a TLS member needs: the CA, and a client cert for mutual TLS. */
export interface ClientTls {
  ca: string;
  cert: string;
  key: string;
}

/** Options of {@link httpJson}. */
export interface HttpJsonOptions {
  /** POSTed as JSON; a GET without it. */
  body?: string;
  /** Needed for `https://` URLs. */
  tls?: ClientTls | undefined;
  headers?: Record<string, string>;
}

/**
 * One request with its own deadline and no keep-alive agent, so a paused member cannot hang a
 * poll and no pooled socket keeps the process alive.
 */
export function httpJson(
  url: string,
  timeoutMs: number,
  options: HttpJsonOptions = {},
): Promise<{ status: number; json: unknown }> {
  const { body, tls } = options;
  const headers = { ...options.headers };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const common = { method: body === undefined ? 'GET' : 'POST', agent: false, headers } as const;
  return new Promise((resolve, reject) => {
    const onResponse = (res: IncomingMessage): void => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        clearTimeout(timer);
        try {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as unknown });
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
    };
    const req = url.startsWith('https:')
      ? httpsRequest(url, { ...common, ...tls }, onResponse)
      : httpRequest(url, common, onResponse);
    const timer = setTimeout(() => {
      req.destroy(new Error(`${url}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end(body);
  });
}

/** True when the member at `endpoint` answers GET /health with `{"health":"true"}`. */
export async function isHealthy(
  endpoint: string,
  timeoutMs = 1000,
  tls?: ClientTls,
): Promise<boolean> {
  try {
    const { json } = await httpJson(`${endpoint}/health`, timeoutMs, { tls });
    return (
      typeof json === 'object' && json !== null && (json as { health?: unknown }).health === 'true'
    );
  } catch {
    return false;
  }
}

/** The member's own id and the leader id it knows of (`'0'` for none), as decimal strings. */
export async function memberStatus(
  endpoint: string,
  timeoutMs = 1000,
  tls?: ClientTls,
): Promise<{ memberId: string; leaderId: string }> {
  const { json } = await httpJson(`${endpoint}/v3/maintenance/status`, timeoutMs, {
    body: '{}',
    tls,
  });
  const status = json as { header?: { member_id?: unknown }; leader?: unknown };
  const memberId = status.header?.member_id;
  if (typeof memberId !== 'string') throw new Error(`${endpoint}: unexpected status reply`);
  return { memberId, leaderId: typeof status.leader === 'string' ? status.leader : '0' };
}
