// The role file: the one input of a node (DESIGN.md "The role file"). systemd reads the same file through
// EnvironmentFile=, so we parse exactly what systemd's env-file parser accepts, and reject what it would
// silently misread (an unterminated quote swallows the rest of the file there; a line without `=` vanishes).
import { posix as path } from 'node:path';
import { DEFAULT_DNS_DOMAIN, isDnsLabel, isDnsName, roleRecordName, type Role } from './dns-names.js';
import { parseNameserver, type Nameserver } from './dns.js';
import { InputError } from './errors.js';
import type { Host } from './host.js';
import type { RoleConfig } from './phase.js';

export const ROLE_FILES: Readonly<Record<Role, string>> = {
  master: '/etc/sysconfig/kubernetes-masters',
  minion: '/etc/sysconfig/kubernetes-minions',
};

/** Keys the agent or the units read; any other key is kept (units may use it) but warned about. */
export const KNOWN_KEYS: ReadonlySet<string> = new Set([
  'CLUSTER_NAME',
  'DNS_DOMAIN',
  'CLOUD_PROVIDER',
  'KUBELET_HOSTNAME',
  'API_ENDPOINT',
  'NAMESERVER',
  'WEAVE_PASSWORD',
  'SERVICE_CIDR',
]);

export interface Assignment {
  key: string;
  value: string;
  /** Line where the assignment starts (1-based). */
  line: number;
}

export interface ParsedEnvFile {
  assignments: Assignment[];
  problems: InputError[];
  /** The key whose quoted value never closed (it swallowed the rest of the file), if any. */
  unterminated?: string;
}

const WHITESPACE = ' \t\v\f\r';
const NEWLINE = '\n';
// Inside double quotes systemd drops the backslash only before these (its SHELL_NEED_ESCAPE).
const DOUBLE_QUOTE_ESCAPES = '"\\`$';

type State = 'pre-key' | 'key' | 'pre-value' | 'value' | 'value-escape' | 'single' | 'double' | 'double-escape' | 'comment';

/**
 * systemd's EnvironmentFile= grammar (src/basic/env-file.c), as a state machine over characters:
 * KEY=VALUE; `#`/`;` comment lines; unquoted values lose trailing whitespace and take `\x` as `x` and
 * `\<newline>` as a continuation; '…' is literal; "…" honours \" \\ \` \$ and `\<newline>`; quoted and
 * unquoted pieces concatenate. Every problem is collected, so `agent check` can list them all.
 */
export function parseEnvironmentFile(text: string, file: string): ParsedEnvFile {
  const assignments: Assignment[] = [];
  const problems: InputError[] = [];
  let state: State = 'pre-key';
  let key = '';
  let value = '';
  let valueEnd = 0; // length of value without trailing unquoted whitespace
  let line = 1;
  let startLine = 1;
  let quoteLine = 1;
  let comment = '';
  let unterminated: string | undefined;

  const push = () => {
    const name = key.replace(/[ \t\v\f\r]+$/, '');
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      problems.push(new InputError(`invalid variable name ${JSON.stringify(name)}`, { file, line: startLine, value: name }));
    } else {
      assignments.push({ key: name, value, line: startLine });
    }
    key = '';
    value = '';
  };

  for (const c of text) {
    switch (state) {
      case 'pre-key':
        if (c === '#' || c === ';') {
          state = 'comment';
          comment = '';
        }
        else if (!WHITESPACE.includes(c) && c !== NEWLINE) {
          state = 'key';
          key = c;
          startLine = line;
        }
        break;
      case 'key':
        if (c === NEWLINE) {
          problems.push(new InputError(`missing '=' in ${JSON.stringify(key.trim())}`, { file, line: startLine }));
          key = '';
          state = 'pre-key';
        } else if (c === '=') {
          state = 'pre-value';
          value = '';
          valueEnd = 0;
        } else key += c;
        break;
      case 'pre-value':
        if (WHITESPACE.includes(c)) break;
        if (c === NEWLINE) {
          value = value.slice(0, valueEnd);
          push();
          state = 'pre-key';
        } else if (c === "'") {
          state = 'single';
          quoteLine = line;
        } else if (c === '"') {
          state = 'double';
          quoteLine = line;
        } else if (c === '\\') state = 'value-escape';
        else {
          state = 'value';
          value += c;
          valueEnd = value.length;
        }
        break;
      case 'value':
        if (c === NEWLINE) {
          value = value.slice(0, valueEnd);
          push();
          state = 'pre-key';
        } else if (c === '\\') {
          // systemd keeps whitespace written before a backslash, even a continuation's.
          state = 'value-escape';
          valueEnd = value.length;
        } else {
          value += c;
          if (!WHITESPACE.includes(c)) valueEnd = value.length;
        }
        break;
      case 'value-escape':
        state = 'value';
        if (c !== NEWLINE) {
          value += c;
          valueEnd = value.length;
        }
        break;
      case 'single':
        if (c === "'") {
          state = 'pre-value';
          valueEnd = value.length;
        } else value += c;
        break;
      case 'double':
        if (c === '"') {
          state = 'pre-value';
          valueEnd = value.length;
        } else if (c === '\\') state = 'double-escape';
        else value += c;
        break;
      case 'double-escape':
        state = 'double';
        if (DOUBLE_QUOTE_ESCAPES.includes(c)) value += c;
        else if (c !== NEWLINE) value += `\\${c}`;
        break;
      case 'comment':
        if (c !== NEWLINE) comment += c;
        else {
          state = 'pre-key';
          // systemd <= 253 continued a comment ending in `\` onto the next line, >= 254 does not:
          // such a file means different things to different machines, so it is refused.
          if (comment.endsWith('\\')) {
            problems.push(
              new InputError('comment ends in a backslash (systemd versions disagree on whether the next line is a comment)', {
                file,
                line,
              }),
            );
          }
        }
        break;
    }
    if (c === NEWLINE) line++;
  }

  switch (state) {
    case 'single':
    case 'double':
    case 'double-escape':
      unterminated = key.trim();
      problems.push(
        new InputError(`unterminated ${state === 'single' ? 'single' : 'double'} quote in the value of ${key.trim()}`, {
          file,
          line: quoteLine,
        }),
      );
      break;
    case 'key':
      problems.push(new InputError(`missing '=' in ${JSON.stringify(key.trim())}`, { file, line: startLine }));
      break;
    case 'pre-value':
    case 'value':
    case 'value-escape':
      value = value.slice(0, valueEnd);
      push();
      break;
    default:
      break;
  }
  return { assignments, problems, ...(unterminated ? { unterminated } : {}) };
}

export interface RoleValidation {
  config?: RoleConfig;
  /** The nameserver the role file names (NAMESERVER), if any. */
  nameserver?: Nameserver;
  problems: InputError[];
  warnings: InputError[];
}

/** What the role file says, checked against DESIGN.md's table. Pure: no file access. */
export function validateRole(role: Role, file: string, text: string): RoleValidation {
  const { assignments, problems, unterminated } = parseEnvironmentFile(text, file);
  const warnings: InputError[] = [];
  const last = new Map<string, Assignment>();
  for (const a of assignments) {
    const earlier = last.get(a.key);
    if (earlier) warnings.push(new InputError(`${a.key} is set again (line ${earlier.line} is overridden, as systemd does)`, { file, line: a.line }));
    if (!KNOWN_KEYS.has(a.key)) warnings.push(new InputError(`unknown key ${a.key} (ignored by the agent)`, { file, line: a.line }));
    last.set(a.key, a);
  }
  const at = (a: Assignment) => ({ file, line: a.line, value: a.value });
  // Optional keys set to '' mean "not set": user-data templates often leave them blank.
  const optional = (k: string) => {
    const a = last.get(k);
    return a && a.value !== '' ? a : undefined;
  };

  const clusterA = last.get('CLUSTER_NAME');
  let cluster: string | undefined;
  if (!clusterA) {
    if (unterminated !== 'CLUSTER_NAME') problems.push(new InputError('CLUSTER_NAME is required', { file }));
  }
  else if (clusterA.value === '') problems.push(new InputError('CLUSTER_NAME is empty', at(clusterA)));
  else if (clusterA.value.length > 63)
    problems.push(new InputError(`CLUSTER_NAME is ${clusterA.value.length} characters long; a DNS label has at most 63`, at(clusterA)));
  else if (!isDnsLabel(clusterA.value))
    problems.push(
      new InputError(
        `CLUSTER_NAME ${JSON.stringify(clusterA.value)} is not a DNS label (letters, digits and inner '-' only)`,
        at(clusterA),
      ),
    );
  else cluster = clusterA.value.toLowerCase();

  const domainA = optional('DNS_DOMAIN');
  let domain = DEFAULT_DNS_DOMAIN;
  if (domainA) {
    if (isDnsName(domainA.value)) domain = domainA.value.toLowerCase().replace(/\.$/, '');
    else problems.push(new InputError(`DNS_DOMAIN ${JSON.stringify(domainA.value)} is not a DNS name`, at(domainA)));
  }

  const endpointA = optional('API_ENDPOINT');
  let apiEndpoint = cluster ? `https://${roleRecordName('master', cluster, domain)}:6443` : '';
  if (endpointA) {
    const problem = checkEndpoint(endpointA.value);
    if (problem) problems.push(new InputError(`API_ENDPOINT ${JSON.stringify(endpointA.value)} ${problem}`, at(endpointA)));
    else apiEndpoint = endpointA.value.replace(/\/+$/, '');
  }

  const nsA = optional('NAMESERVER');
  let nameserver: Nameserver | undefined;
  if (nsA) {
    try {
      nameserver = parseNameserver(nsA.value, 'NAMESERVER');
    } catch (err) {
      problems.push(new InputError((err as Error).message, at(nsA)));
    }
  }

  if (problems.length || !cluster) return { problems, warnings };
  const cloudProvider = optional('CLOUD_PROVIDER')?.value;
  const kubeletHostname = optional('KUBELET_HOSTNAME')?.value;
  const config: RoleConfig = {
    role,
    file,
    cluster,
    domain,
    apiEndpoint,
    ...(cloudProvider ? { cloudProvider } : {}),
    ...(kubeletHostname ? { kubeletHostname } : {}),
    vars: Object.fromEntries([...last].map(([k, a]) => [k, a.value])),
  };
  return { config, ...(nameserver ? { nameserver } : {}), problems, warnings };
}

function checkEndpoint(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return 'is not a URL';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'must be an http:// or https:// URL';
  if (url.username || url.password) return 'must not carry credentials';
  if (url.search || url.hash) return 'must not have a query or fragment';
  if (!url.hostname) return 'has no host';
  return undefined;
}

export type RoleState =
  | { state: 'unconfigured' }
  | { state: 'invalid'; files: string[]; problems: InputError[]; warnings: InputError[] }
  | { state: 'configured'; config: RoleConfig; nameserver?: Nameserver; warnings: InputError[] };

/** Which role file exists, and what it says. Exactly one may exist (DESIGN.md). */
export async function loadRole(host: Host): Promise<RoleState> {
  const found: { role: Role; file: string; text: string }[] = [];
  for (const role of ['master', 'minion'] as const) {
    const file = ROLE_FILES[role];
    const text = await host.readFile(file);
    if (text !== undefined) found.push({ role, file, text });
  }
  const [only, ...others] = found;
  if (!only) return { state: 'unconfigured' };
  if (others.length) {
    const files = found.map((f) => f.file);
    return {
      state: 'invalid',
      files,
      problems: [new InputError(`both role files exist (${files.join(' and ')}): a node has exactly one role`, { file: files.join(', ') })],
      warnings: [],
    };
  }
  const unsafe = await unsafeOwnership(host, only.file);
  if (unsafe) return { state: 'invalid', files: [only.file], problems: [unsafe], warnings: [] };
  const v = validateRole(only.role, only.file, only.text);
  if (!v.config) return { state: 'invalid', files: [only.file], problems: v.problems, warnings: v.warnings };
  return { state: 'configured', config: v.config, ...(v.nameserver ? { nameserver: v.nameserver } : {}), warnings: v.warnings };
}

/**
 * The role file decides what a node trusts (API endpoint, nameserver, weave password): anyone who can
 * write it owns the node, so it must be root's and not writable by group or others (as secrets are).
 */
async function unsafeOwnership(host: Host, file: string): Promise<InputError | undefined> {
  const info = await host.stat(file);
  if (!info) return undefined;
  if (info.uid !== 0) return new InputError(`owned by uid ${info.uid}, not root: the role file must belong to root`, { file });
  if (info.mode & 0o022)
    return new InputError(`mode ${info.mode.toString(8).padStart(4, '0')} lets others write it: the role file must not be group- or world-writable (chmod 644)`, { file });
  return undefined;
}

/** Whether a path names a role file (for unit conditions), whatever its spelling (`//`, `/./`). */
export function roleOfPath(p: string): Role | undefined {
  const normal = path.normalize(p);
  return (Object.keys(ROLE_FILES) as Role[]).find((r) => ROLE_FILES[r] === normal);
}
