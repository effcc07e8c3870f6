// A Node gRPC client that dials etcd:///<servicePath> and follows the registered instances.
import * as grpc from '@grpc/grpc-js';
import { EtcdConnector, prepareEndpointList } from 'etcd-connector';
import { registerEtcdResolver } from 'etcd-connector/grpc';

const hosts = (process.env.ETCD_HOSTS ?? '127.0.0.1:2379').split(',');
await using conn = new EtcdConnector(prepareEndpointList(hosts, 2379), 'grpc_example');
const servicePath = conn.constructPath('grpc', 'greeter'); // '/grpc_example/grpc/greeter'

// A server (proto-less: raw bytes) that registers itself where clients look.
const raw = (b: Buffer): Buffer => b;
const hello = { path: '/Greeter/Hello', requestStream: false, responseStream: false };
const method = { ...hello, requestSerialize: raw, requestDeserialize: raw };
const service = { hello: { ...method, responseSerialize: raw, responseDeserialize: raw } };
const server = new grpc.Server();
server.addService(service, {
  hello: (call: grpc.ServerUnaryCall<Buffer, Buffer>, reply: grpc.sendUnaryData<Buffer>) => {
    reply(null, Buffer.from(`hello, ${call.request.toString()}`));
  },
});
const port = await new Promise<number>((resolve, reject) => {
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => {
    if (err) reject(err);
    else resolve(p);
  });
});
await conn.newEndpointRegistration(servicePath, `127.0.0.1:${port}`, { ttl: 10 }).register();

// The client: round robin over the live instances; dead ones leave the list within the TTL.
registerEtcdResolver(conn);
const client = new grpc.Client(`etcd:///${servicePath}`, grpc.credentials.createInsecure());
const answer = await new Promise<string>((resolve, reject) => {
  client.makeUnaryRequest(hello.path, raw, raw, Buffer.from('etcd'), (err, res) => {
    if (err) reject(err);
    else resolve(res?.toString() ?? '');
  });
});
console.log('answer:', answer);
client.close();
server.forceShutdown();
