// The few etcd calls the agent makes, over mutual TLS to a member's client URL, through etcd's JSON gateway
// (the gRPC API as HTTP POST under /v3/, served on the client port) and its /health endpoint: no etcdctl or
// gRPC library in the image. The client presents this master's etcd certificate (server and client usage).
import * as https from 'node:https';
import type { EtcdMember } from './etcd-membership.js';

export interface EtcdTls {
  ca: string;
  cert: string;
  key: string;
}

export class EtcdCallError extends Error {}

function call(url: string, path: string, tls: EtcdTls, body: unknown | undefined, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const target = new URL(path, url);
    const req = https.request(
      target,
      { method: body === undefined ? 'GET' : 'POST', ...tls, agent: false, timeout: timeoutMs, headers: { 'content-type': 'application/json' } },
      (res) => {
        let data = '';
        res.on('data', (c: Buffer) => (data += c.toString()));
        res.on('end', () => {
          let doc: unknown;
          try {
            doc = JSON.parse(data);
          } catch {
            return reject(new EtcdCallError(`${target.origin}${path}: HTTP ${res.statusCode}, not JSON`));
          }
          if (res.statusCode !== 200) {
            const message = (doc as { message?: string; error?: string }).message ?? (doc as { error?: string }).error ?? data.trim();
            return reject(new EtcdCallError(`${target.origin}${path}: HTTP ${res.statusCode}: ${message}`));
          }
          resolve(doc);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => reject(new EtcdCallError(`${target.origin}${path}: ${err.code ? `${err.code}: ` : ''}${err.message}`)));
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

export async function memberList(url: string, tls: EtcdTls, timeoutMs = 3000): Promise<EtcdMember[]> {
  const doc = (await call(url, '/v3/cluster/member/list', tls, {}, timeoutMs)) as { members?: EtcdMember[] };
  return doc.members ?? [];
}

/** Adds a member by its peer URL; returns the member list etcd answers with (the new member unstarted, no name). */
export async function memberAdd(url: string, peerUrl: string, tls: EtcdTls, timeoutMs = 5000): Promise<EtcdMember[]> {
  const doc = (await call(url, '/v3/cluster/member/add', tls, { peerURLs: [peerUrl] }, timeoutMs)) as { members?: EtcdMember[] };
  return doc.members ?? [];
}

export async function memberRemove(url: string, id: string, tls: EtcdTls, timeoutMs = 5000): Promise<void> {
  await call(url, '/v3/cluster/member/remove', tls, { ID: id }, timeoutMs);
}

/** etcd's own health answer: true when the member serves and the cluster has a leader (quorum). */
export async function memberHealth(url: string, tls: EtcdTls, timeoutMs = 3000): Promise<{ healthy: boolean; reason?: string }> {
  try {
    const doc = (await call(url, '/health', tls, undefined, timeoutMs)) as { health?: string; reason?: string };
    return doc.health === 'true' ? { healthy: true } : { healthy: false, reason: doc.reason || 'unhealthy' };
  } catch (err) {
    // /health answers 503 with a JSON body when the member has no leader.
    return { healthy: false, reason: (err as Error).message };
  }
}
