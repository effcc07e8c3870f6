// Diagnostics and metrics: a lock's wait on its channel, and the metrics as Prometheus reads them.
import { subscribe } from 'node:diagnostics_channel';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import {
  EtcdConnector,
  LEStatus,
  prepareEndpointList,
  type DiagnosticMessages,
} from 'etcd-connector';
import { instrumentMetrics } from 'etcd-connector/metrics';

subscribe('etcd-connector:lock.acquire', (message) => {
  const m = message as DiagnosticMessages['etcd-connector:lock.acquire'];
  console.log(`${m.kind} ${m.path} acquired in ${m.waitMs.toFixed(1)} ms (token ${m.token})`);
});

// Prometheus' text on your own server (or let the exporter listen: new PrometheusExporter({ port })).
const exporter = new PrometheusExporter({ preventServerStart: true });
const provider = new MeterProvider({ readers: [exporter] });
const metrics = instrumentMetrics({ meterProvider: provider });
const server = createServer((req, res) => {
  exporter.getMetricsRequestHandler(req, res);
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'metrics_example');
const elector = conn.newLeaderElector(conn.constructPath('elections', 'jobs'), 'node-a', 10);
for await (const event of elector.start()) {
  if (event.status !== LEStatus.Leader) continue;
  await conn.newMutex(conn.constructPath('locks', 'jobs')).withLock(async () => {
    /* work */
  });
  // What a Prometheus server would scrape now.
  const { port } = server.address() as AddressInfo;
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  for (const line of text.split('\n')) {
    if (/^etcd_connector_(leader_status|lock_wait_count|lock_held_count)\{/.test(line)) {
      console.log(line);
    }
  }
  break; // leaving the loop resigns
}
metrics.dispose();
await provider.shutdown();
server.close();
