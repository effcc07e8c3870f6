/**
 * A leader in its own process, for the handover and takeover cases: campaigns with etcd3's
 * Election or our LeaderElector on command, prints `{"event":"leader"}` when elected, and resigns
 * on command (handover) — or is SIGKILLed by the parent (takeover).
 *
 * Args: <ours|etcd3> <endpoints,comma-separated>
 * Commands: {"op":"campaign","name":n,"ttl":s} -> leader; {"op":"resign"} -> resigned
 */
import { Etcd3 } from 'etcd3';
import { fail, send, serve } from './protocol.js';

const [mode, endpointList = ''] = process.argv.slice(2);
const endpoints = endpointList.split(',');

/** Starts one campaign; resolves with the function that resigns it. */
type Campaigner = (name: string, ttl: number) => () => Promise<void>;

function etcd3Campaigner(client: Etcd3): Campaigner {
  return (name, ttl) => {
    const campaign = client.election(name, ttl).campaign('child');
    campaign.on('elected', () => {
      send('leader');
    });
    campaign.on('error', (err) => {
      send('error', { message: err.message });
    });
    return () => campaign.resign();
  };
}

async function oursCampaigner(): Promise<{ campaign: Campaigner; close: () => Promise<void> }> {
  const { EtcdConnector, LEStatus } = await import('../../src/index.js');
  const conn = new EtcdConnector(endpoints, 'bench');
  const campaign: Campaigner = (name, ttl) => {
    const elector = conn.newLeaderElector(name, 'child', ttl);
    void (async () => {
      for await (const ev of elector.start()) {
        if (ev.status === LEStatus.Leader) send('leader');
        if (ev.error !== undefined) send('error', { message: ev.error.message });
      }
    })().catch((err: unknown) => {
      send('error', { message: String(err) });
    });
    return () => elector.stop();
  };
  return { campaign, close: () => conn.close() };
}

async function main(): Promise<void> {
  let campaign: Campaigner;
  let close: () => Promise<void>;
  if (mode === 'ours') {
    ({ campaign, close } = await oursCampaigner());
  } else {
    const client = new Etcd3({ hosts: endpoints });
    campaign = etcd3Campaigner(client);
    close = () => {
      client.close();
      return Promise.resolve();
    };
  }
  let resign: (() => Promise<void>) | undefined;
  serve(
    async (cmd) => {
      if (cmd.op === 'campaign') {
        resign = campaign(String(cmd.name), Number(cmd.ttl));
      } else if (cmd.op === 'resign') {
        await resign?.();
        resign = undefined;
        send('resigned');
      }
    },
    async () => {
      await resign?.().catch(() => undefined);
      await close();
    },
  );
  send('ready');
}

main().catch(fail);
