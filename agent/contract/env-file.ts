// The environment-file contract: the role file user-data writes and the env files the agent writes for units
// (weave.env, cluster.env) are all read by systemd's EnvironmentFile= parser. This module is
// the one grammar every side uses: the renderers quote and check with it, the agent parses with it, so a value
// one side writes is always one the other reads back unchanged (or is refused, with the same message, before
// anything is written).
import { InputError } from '../errors.js';

/** systemd's env_name_is_valid() for the names it keeps. */
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function envKeyProblem(key: string): string | undefined {
  return ENV_KEY.test(key) ? undefined : `invalid variable name ${JSON.stringify(key)}: names are [A-Za-z_][A-Za-z0-9_]*`;
}

/** Lone surrogates and noncharacters: systemd's UTF-8 check refuses both. */
function notUnicodeText(ch: string): boolean {
  const cp = ch.codePointAt(0)!;
  return (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe;
}

/**
 * Why a value cannot travel in an env file, or undefined. A NUL truncates the file for C readers; CR/LF end
 * the assignment early in some readers and make the value span lines in others. Other control characters
 * (tab aside) and broken UTF-16 make systemd drop the assignment ("invalid value, ignoring"), so the node
 * would silently lose it.
 */
export function envValueProblem(key: string, value: string): string | undefined {
  if (/[\0\r\n]/.test(value)) return `${key}: value contains a NUL, CR or newline, which an environment file cannot hold`;
  if (/[\x01-\x08\x0b-\x1f\x7f]/.test(value) || [...value].some(notUnicodeText)) {
    return `${key}: value contains a control character or invalid Unicode, which systemd ignores`;
  }
  return undefined;
}

/**
 * A value systemd reads back unchanged: inside double quotes systemd unescapes exactly \" \\ \` \$, so no
 * value can end the line, start a comment, or reach a shell.
 */
export function quoteEnvValue(value: string): string {
  return `"${value.replace(/["\\`$]/g, (c) => `\\${c}`)}"`;
}

/** Checks every entry first (a bad one throws InputError naming it, and nothing is rendered), then renders. */
export function renderEnvFile(header: string, entries: readonly (readonly [string, string])[]): string {
  for (const [key, value] of entries) {
    const problem = envKeyProblem(key) ?? envValueProblem(key, value);
    if (problem) throw new InputError(problem, { value: key });
  }
  const comments = header.split('\n').map((line) => `# ${line}`);
  return `${[...comments, ...entries.map(([key, value]) => `${key}=${quoteEnvValue(value)}`)].join('\n')}\n`;
}

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
    const problem = envKeyProblem(name);
    if (problem) {
      problems.push(new InputError(problem, { file, line: startLine, value: name }));
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


/** The variables a file sets, the last assignment of a key winning as in systemd. */
export function envFileVars(text: string, file: string): Record<string, string> {
  return Object.fromEntries(parseEnvironmentFile(text, file).assignments.map((a) => [a.key, a.value]));
}
