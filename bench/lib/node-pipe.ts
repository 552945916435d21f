/**
 * A reference point, not a product: the cheapest PostgreSQL proxy Node can be, bytes piped both ways with
 * no framing, no login of its own, no inspection and no audit. What it costs per transaction is the
 * floor for any proxy written on Node's net sockets on this machine (`--node-pipe` in bench/pgbench.ts).
 */
import net from 'node:net';

export interface NodePipe {
  host: string;
  port: number;
  close(): Promise<void>;
}

export async function startNodePipe(targetHost: string, targetPort: number): Promise<NodePipe> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ noDelay: true }, (client) => {
    const upstream = net.connect({ host: targetHost, port: targetPort, noDelay: true });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (d: Buffer) => {
      if (!upstream.write(d)) {
        client.pause();
        upstream.once('drain', () => client.resume());
      }
    });
    upstream.on('data', (d: Buffer) => {
      if (!client.write(d)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    host: '127.0.0.1',
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
