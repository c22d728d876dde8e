// dns-sync as a Lambda handler for EventBridge "EC2 Instance State-change Notification" and Auto
// Scaling "EC2 Instance Launch/Terminate Successful" events. The event only says that something
// changed; the handler re-reads everything and repairs the whole zone, so a lost or reordered event
// costs nothing. Give it a schedule rule as well (EventBridge `rate(5 minutes)`, any event shape does):
// two runs racing can still leave a stale record between them (Route53 has no conditional write), and
// only a later run repairs it. Configuration from the function's environment:
//   DNS_DOMAIN (default k8s) or HOSTED_ZONE_ID, RECORD_TTL (default 30), CLUSTERS (comma-separated, optional).
import { InputError } from '../../agent/errors.js';
import { makeClients, type Clients } from './aws.js';
import { syncDns, type SyncResult } from './route53-sync.js';

interface StateChangeEvent {
  'detail-type'?: string;
  detail?: { 'instance-id'?: string; state?: string; EC2InstanceId?: string };
}

let clients: Clients | undefined;

/** What Lambda calls (its second argument, the context, is not needed). Clients live across warm invocations. */
export async function handler(event: StateChangeEvent): Promise<SyncResult> {
  clients ??= makeClients();
  return syncForEvent(event, clients, process.env);
}

export async function syncForEvent(event: StateChangeEvent, clients: Clients, env: NodeJS.ProcessEnv): Promise<SyncResult> {
  const instance = event.detail?.['instance-id'] ?? event.detail?.EC2InstanceId ?? '-';
  console.log(`event ${event['detail-type'] ?? 'unknown'} instance=${instance} state=${event.detail?.state ?? '-'}`);
  const clusters = env.CLUSTERS?.split(',').map((c) => c.trim()).filter(Boolean);
  const ttl = Number(env.RECORD_TTL || '30');
  if (!Number.isInteger(ttl) || ttl <= 0) throw new InputError(`RECORD_TTL must be a positive whole number of seconds`, { value: env.RECORD_TTL });
  return syncDns({
    ...clients,
    ...(env.HOSTED_ZONE_ID ? { zoneId: env.HOSTED_ZONE_ID } : { domain: env.DNS_DOMAIN || 'k8s' }),
    ttl,
    ...(clusters?.length && { clusters }),
  });
}
