// This node's Weave peer name. The router wants a MAC-form name (mesh peer_name_mac.go PeerNameFromUserInput),
// and IPAM records address ranges against it, so it must survive reboots and reinstalls of Weave's data, and
// differ between machines. /etc/machine-id does both: systemd makes it once per machine at first boot (the
// image ships it empty, so clones of one image still differ) and keeps it. machine-id(5) asks applications not
// to expose it, but to derive an application-specific ID from it, as sd_id128_get_machine_app_specific() does:
// HMAC-SHA256 keyed with the machine ID over a fixed application ID. The first 6 bytes, with the
// locally-administered bit set and the multicast bit cleared, are the name (a MAC no vendor hands out).
import { createHmac } from 'node:crypto';
import { InputError } from './errors.js';
import type { Host } from './host.js';

export const MACHINE_ID = '/etc/machine-id';
/** This application's ID for the derivation (fixed: changing it renames every node). */
const APP_ID = Buffer.from('6b7562657365656457656176654e616d', 'hex'); // "kubeseedWeaveNam"

/** The peer name for a machine ID (32 hex digits). Pure. */
export function peerNameFor(machineId: string): string {
  const bytes = createHmac('sha256', Buffer.from(machineId, 'hex')).update(APP_ID).digest().subarray(0, 6);
  bytes[0] = (bytes[0]! | 0x02) & 0xfe;
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export async function readPeerName(host: Host): Promise<string> {
  const text = ((await host.readFile(MACHINE_ID)) ?? '').trim();
  if (!/^[0-9a-f]{32}$/.test(text) || /^0+$/.test(text)) {
    throw new InputError('no machine ID (32 hex digits, written by systemd at first boot): the Weave peer name is derived from it', {
      file: host.resolve(MACHINE_ID),
    });
  }
  return peerNameFor(text);
}
