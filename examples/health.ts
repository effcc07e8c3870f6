// One health check of every member.
import { ClusterStatus, EtcdConnector, prepareEndpointList } from 'etcd-connector';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'health_example');

for await (const report of conn.newHealthMonitor().start(true, 10_000)) {
  for (const m of report.members) {
    console.log(m.endpoint, m.healthy ? 'healthy' : `unhealthy: ${m.error?.message}`);
  }
  console.log('cluster:', report.status, report.status === ClusterStatus.Healthy ? 'OK' : '!');
}
