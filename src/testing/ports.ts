/** Free loopback ports for etcd members, chosen at run time. */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** Ports handed out in this process and not released yet: never given out twice. */
const reserved = new Set<number>();

const MIN_PORT = 20000;

/**
 * Picks from 20000 up to the start of the kernel's ephemeral range when there is room: ports there
 * are never taken by the outgoing connections of other processes, so a killed member can almost
 * always restart on its old ports. Otherwise 20000-60000.
 */
function portRange(): [number, number] {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
      .trim()
      .split(/\s+/)
      .map(Number);
    if (low !== undefined && Number.isInteger(low) && low - MIN_PORT >= 2000)
      return [MIN_PORT, low - 1];
  } catch {
    // not Linux: fall through
  }
  return [MIN_PORT, 60000];
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => {
      resolve(false);
    });
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => {
      server.close(() => {
        resolve(true);
      });
    });
  });
}

/**
 * Reserves `count` distinct free loopback ports above 20000. Another process may still take one
 * before etcd binds it; callers detect that from etcd's log and retry with new ports.
 */
export async function reservePorts(count: number): Promise<number[]> {
  const [low, high] = portRange();
  const ports: number[] = [];
  for (let tries = 0; ports.length < count; tries++) {
    if (tries > 1000) throw new Error(`could not find ${count} free ports in ${low}-${high}`);
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (reserved.has(port)) continue;
    reserved.add(port);
    if (await canListen(port)) ports.push(port);
    else reserved.delete(port);
  }
  return ports;
}

/** Gives ports back once their etcd members are gone for good. */
export function releasePorts(ports: Iterable<number>): void {
  for (const port of ports) reserved.delete(port);
}
