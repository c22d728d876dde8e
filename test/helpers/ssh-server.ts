// A real SSH server (ssh2's Server) on 127.0.0.1 for tests: public-key auth for one client key, and an
// exec handler the test writes. It records every command it was asked to run.
import ssh2, { type Connection } from 'ssh2';
import { parsableKeyPair } from '../../scripts/check/ssh-session.js';

const { Server, utils } = ssh2;

export interface ExecAnswer {
  stdout: string;
  stderr?: string;
  code: number;
}

export interface TestSshServer {
  port: number;
  /** `ssh-ed25519 AAAA...`: the server's public host key, as a node would report it. */
  hostPublicKey: string;
  commands: string[];
  close(): Promise<void>;
}

export function generateKeyPair(): { privateKey: string; publicKey: string } {
  const pair = parsableKeyPair();
  return { privateKey: pair.private, publicKey: pair.public };
}

export async function startSshServer(
  clientPublicKey: string,
  answer: (command: string) => ExecAnswer,
  hostKey = generateKeyPair(),
): Promise<TestSshServer> {
  const allowed = utils.parseKey(clientPublicKey);
  if (allowed instanceof Error) throw allowed;
  const commands: string[] = [];
  const connections = new Set<Connection>();
  const server = new Server({ hostKeys: [hostKey.privateKey] }, (client) => {
    connections.add(client);
    client.on('close', () => connections.delete(client));
    client.on('error', () => undefined);
    client.on('authentication', (ctx) => {
      const ok =
        ctx.method === 'publickey' &&
        ctx.key.algo === allowed.type &&
        ctx.key.data.equals(allowed.getPublicSSH()) &&
        (!ctx.signature || allowed.verify(ctx.blob as Buffer, ctx.signature, ctx.hashAlgo) === true);
      if (ok) ctx.accept();
      else ctx.reject(['publickey']);
    });
    client.on('ready', () => {
      client.on('session', (accept) => {
        accept().on('exec', (acceptExec, _reject, info) => {
          commands.push(info.command);
          const { stdout, stderr, code } = answer(info.command);
          const stream = acceptExec();
          stream.write(stdout);
          if (stderr) stream.stderr.write(stderr);
          stream.exit(code);
          stream.end();
        });
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    hostPublicKey: hostKey.publicKey.split(' ').slice(0, 2).join(' '),
    commands,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of connections) c.end();
        server.close(() => resolve());
      }),
  };
}
