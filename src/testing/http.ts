/** Tiny HTTP/JSON calls to etcd's client port (health and the grpc-gateway status). */
import { request } from 'node:http';

/**
 * One request with its own deadline and no keep-alive agent, so a paused member cannot hang a
 * poll and no pooled socket keeps the process alive.
 */
export function httpJson(
  url: string,
  timeoutMs: number,
  body?: string,
): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: body === undefined ? 'GET' : 'POST',
        agent: false,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
      },
      (res) => {
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
      },
    );
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
export async function isHealthy(endpoint: string, timeoutMs = 1000): Promise<boolean> {
  try {
    const { json } = await httpJson(`${endpoint}/health`, timeoutMs);
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
): Promise<{ memberId: string; leaderId: string }> {
  const { json } = await httpJson(`${endpoint}/v3/maintenance/status`, timeoutMs, '{}');
  const status = json as { header?: { member_id?: unknown }; leader?: unknown };
  const memberId = status.header?.member_id;
  if (typeof memberId !== 'string') throw new Error(`${endpoint}: unexpected status reply`);
  return { memberId, leaderId: typeof status.leader === 'string' ? status.leader : '0' };
}
