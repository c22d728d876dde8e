// The role file as user-data writes it: systemd EnvironmentFile= syntax (systemd.exec(5), "EnvironmentFile="),
// read both by systemd units and by the agent. Every value is double-quoted with systemd's escapes, so
// no value can end the line, start a comment, or reach a shell: inside double quotes systemd unescapes
// exactly \" \\ \` \$ (and \<newline> as a continuation, which we never emit: newlines are refused).
import { InputError } from '../agent/errors.js';
import { isDnsLabel, isDnsName, type Role } from '../agent/dns-names.js';

const KEY = /^[A-Z_][A-Z0-9_]*$/;

/** Keys the renderer sets from its own options; a `--set` for them would be a second, conflicting source. */
const OWN_KEYS = ['CLUSTER_NAME', 'DNS_DOMAIN'];

export function quoteEnvValue(value: string): string {
  return `"${value.replace(/["\\`$]/g, (c) => `\\${c}`)}"`;
}

/** Lone surrogates and noncharacters: systemd's UTF-8 check refuses both. */
function notUnicodeText(ch: string): boolean {
  const cp = ch.codePointAt(0)!;
  return (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe;
}

function checkVar(key: string, value: string): void {
  if (!KEY.test(key)) throw new InputError(`bad key ${JSON.stringify(key)}: keys are [A-Z_][A-Z0-9_]*`, { value: key });
  // A NUL truncates the file for C readers; CR/LF would end the assignment early in some readers and
  // make the value span lines in others. Other control characters (tab aside) and broken UTF-16 make
  // systemd drop the assignment ("invalid value, ignoring"), so the node would silently lose it.
  if (/[\0\r\n]/.test(value)) {
    throw new InputError(`${key}: value contains a NUL, CR or newline, which a role file cannot hold`, { value });
  }
  if (/[\x01-\x08\x0b-\x1f\x7f]/.test(value) || [...value].some(notUnicodeText)) {
    throw new InputError(`${key}: value contains a control character or invalid Unicode, which systemd ignores`, { value });
  }
}

export interface RoleFileInput {
  role: Role;
  cluster: string;
  domain?: string | undefined;
  vars?: Record<string, string> | undefined;
}

/** Validates everything first and returns the file text; a bad input throws InputError and renders nothing. */
export function renderRoleFile({ role, cluster, domain, vars = {} }: RoleFileInput): string {
  if (role !== 'master' && role !== 'minion') {
    throw new InputError(`bad role ${JSON.stringify(role)}: expected master or minion`, { value: String(role) });
  }
  if (!isDnsLabel(cluster)) {
    throw new InputError(
      `bad cluster name ${JSON.stringify(cluster)}: CLUSTER_NAME must be an RFC 1123 label (letters, digits, '-', at most 63)`,
      { value: cluster },
    );
  }
  if (domain !== undefined && !isDnsName(domain)) {
    throw new InputError(`bad DNS domain ${JSON.stringify(domain)}: expected a dotted name of RFC 1123 labels`, { value: domain });
  }
  const entries = Object.entries(vars);
  for (const [key, value] of entries) {
    if (OWN_KEYS.includes(key)) {
      throw new InputError(`${key} comes from --cluster/--domain, not from a variable`, { value: key });
    }
    checkVar(key, value);
  }
  const all: [string, string][] = [['CLUSTER_NAME', cluster]];
  if (domain !== undefined) all.push(['DNS_DOMAIN', domain]);
  all.push(...entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const lines = all.map(([key, value]) => `${key}=${quoteEnvValue(value)}`);
  return `# kubeseed ${role} role file, written by cloud-init user-data\n${lines.join('\n')}\n`;
}
