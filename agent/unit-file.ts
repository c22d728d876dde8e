// A systemd unit file, parsed to systemd.syntax(7): the agent reads units to learn their role, and no npm
// parser keeps repeated keys and continuations (TOOLING.md). Only the syntax: what a key means is systemd's.
import { InputError } from './errors.js';

export interface UnitEntry {
  key: string;
  value: string;
  line: number;
}

export interface UnitSection {
  name: string;
  line: number;
  entries: UnitEntry[];
}

export interface UnitFile {
  file: string;
  sections: UnitSection[];
}

export interface ParsedUnit {
  unit: UnitFile;
  problems: InputError[];
}

/**
 * `[Section]` headers, `Key=Value` assignments (whitespace around both trimmed), `#`/`;` comment lines,
 * and a trailing unescaped `\` joining the next line with a space (comment lines inside a continuation are
 * skipped, as systemd does). Problems are collected with their line so `agent check` can list them all.
 */
export function parseUnitFile(text: string, file: string): ParsedUnit {
  const sections: UnitSection[] = [];
  const problems: InputError[] = [];
  const lines = text.split('\n');
  let pending: { text: string; line: number } | undefined;

  for (let i = 0; i < lines.length; i++) {
    const raw = (lines[i] ?? '').replace(/\r$/, '');
    const trimmed = raw.trim();
    if (/^[#;]/.test(trimmed)) continue;
    if (pending === undefined && trimmed === '') continue;
    const joined = pending ? `${pending.text}${raw}` : raw;
    const line = pending?.line ?? i + 1;
    if (endsInContinuation(raw) && i < lines.length - 1) {
      pending = { text: `${joined.slice(0, -1)} `, line };
      continue;
    }
    pending = undefined;
    const logical = (endsInContinuation(joined) ? joined.slice(0, -1) : joined).trim();
    if (logical === '') continue;

    if (logical.startsWith('[')) {
      const m = /^\[([^\[\]]+)\]$/.exec(logical);
      if (!m?.[1]) problems.push(new InputError(`invalid section header ${JSON.stringify(logical)}`, { file, line }));
      else sections.push({ name: m[1], line, entries: [] });
      continue;
    }
    const eq = logical.indexOf('=');
    if (eq < 0) {
      problems.push(new InputError(`missing '=' in ${JSON.stringify(logical)}`, { file, line }));
      continue;
    }
    const key = logical.slice(0, eq).trim();
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(key)) {
      problems.push(new InputError(`invalid key ${JSON.stringify(key)}`, { file, line }));
      continue;
    }
    const section = sections[sections.length - 1];
    if (!section) {
      problems.push(new InputError(`assignment ${key}= outside of any section`, { file, line }));
      continue;
    }
    section.entries.push({ key, value: logical.slice(eq + 1).trim(), line });
  }
  return { unit: { file, sections }, problems };
}

/** A line continues when it ends in a backslash that is not itself escaped. */
function endsInContinuation(line: string): boolean {
  const m = /(\\+)$/.exec(line);
  return !!m?.[1] && m[1].length % 2 === 1;
}

/**
 * The effective list for a list-valued key: every assignment in order (sections of the same name merge,
 * as drop-ins do), where an empty assignment resets the list.
 */
export function listValues(unit: UnitFile, section: string, key: string): UnitEntry[] {
  let list: UnitEntry[] = [];
  for (const s of unit.sections) {
    if (s.name !== section) continue;
    for (const e of s.entries) {
      if (e.key !== key) continue;
      list = e.value === '' ? [] : [...list, e];
    }
  }
  return list;
}
