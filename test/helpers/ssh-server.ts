// A real SSH server (ssh2's Server) on 127.0.0.1 for tests: public-key auth for one client key, an
// exec handler the test writes, and an SFTP subsystem that reads files from a source the test writes. It records
// every command it was asked to run, every file read over SFTP, and how many SFTP channels were opened.
import ssh2, { type Connection, type SFTPWrapper } from 'ssh2';
import { parsableKeyPair } from '../../scripts/check/ssh-session.js';

const { Server, utils } = ssh2;
const { STATUS_CODE } = utils.sftp;

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
  /** Each path opened over SFTP, in order (whether or not the file existed). */
  reads: string[];
  /** SFTP channels opened so far. */
  readonly sftpSessions: number;
  close(): Promise<void>;
}

/** A file's text as the node has it now, or undefined when it has no such file; throwing kills the SFTP server mid-read. */
export type FileSource = (path: string) => string | undefined;

export function generateKeyPair(): { privateKey: string; publicKey: string } {
  const pair = parsableKeyPair();
  return { privateKey: pair.private, publicKey: pair.public };
}

export async function startSshServer(
  clientPublicKey: string,
  answer: (command: string) => ExecAnswer,
  { hostKey = generateKeyPair(), files = () => undefined }: { hostKey?: { privateKey: string; publicKey: string }; files?: FileSource } = {},
): Promise<TestSshServer> {
  const allowed = utils.parseKey(clientPublicKey);
  if (allowed instanceof Error) throw allowed;
  const commands: string[] = [];
  const reads: string[] = [];
  let sftpSessions = 0;
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
        const session = accept();
        session.on('sftp', (acceptSftp) => {
          sftpSessions += 1;
          serveFiles(acceptSftp(), files, reads);
        });
        session.on('exec', (acceptExec, _reject, info) => {
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
    reads,
    get sftpSessions() {
      return sftpSessions;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of connections) c.end();
        server.close(() => resolve());
      }),
  };
}

/**
 * What sftp-server answers a reader: OPEN (NO_SUCH_FILE when absent), FSTAT/STAT/LSTAT (the size), READ (the
 * bytes from the offset, then EOF), CLOSE. The file is read at OPEN, as an open file on the node keeps its inode.
 * A source that throws is an sftp-server that dies mid-read: OPEN gets its handle, and the next request on it ends
 * the channel unanswered.
 */
function serveFiles(sftp: SFTPWrapper, files: FileSource, reads: string[]): void {
  const open = new Map<string, Buffer | 'dies'>();
  let next = 0;
  const look = (path: string): Buffer | undefined | 'dies' => {
    try {
      const text = files(path);
      return text === undefined ? undefined : Buffer.from(text);
    } catch {
      return 'dies';
    }
  };
  const attrs = (data: Buffer) => ({ mode: 0o100644, uid: 0, gid: 0, size: data.length, atime: 0, mtime: 0 });
  /** The open file behind a handle; undefined when the request was answered (a bad handle) or the channel ended. */
  const opened = (reqid: number, handle: Buffer): Buffer | undefined => {
    const data = open.get(handle.toString());
    if (data === 'dies') sftp.end();
    else if (!data) sftp.status(reqid, STATUS_CODE.FAILURE, 'bad handle');
    return data === 'dies' ? undefined : data;
  };
  sftp.on('OPEN', (reqid, path) => {
    reads.push(path);
    const data = look(path);
    if (data === undefined) return sftp.status(reqid, STATUS_CODE.NO_SUCH_FILE, 'No such file');
    const handle = Buffer.from(String(next++));
    open.set(handle.toString(), data);
    sftp.handle(reqid, handle);
  });
  sftp.on('FSTAT', (reqid, handle) => {
    const data = opened(reqid, handle);
    if (data) sftp.attrs(reqid, attrs(data));
  });
  const stat = (reqid: number, path: string) => {
    const data = look(path);
    if (data === 'dies') return sftp.end();
    if (data === undefined) return sftp.status(reqid, STATUS_CODE.NO_SUCH_FILE, 'No such file');
    sftp.attrs(reqid, attrs(data));
  };
  sftp.on('STAT', stat);
  sftp.on('LSTAT', stat);
  sftp.on('READ', (reqid, handle, offset, length) => {
    const data = opened(reqid, handle);
    if (!data) return;
    if (offset >= data.length) return sftp.status(reqid, STATUS_CODE.EOF);
    sftp.data(reqid, data.subarray(offset, offset + length));
  });
  sftp.on('CLOSE', (reqid, handle) => {
    if (!open.delete(handle.toString())) return sftp.status(reqid, STATUS_CODE.FAILURE, 'bad handle');
    sftp.status(reqid, STATUS_CODE.OK);
  });
}
