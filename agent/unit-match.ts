// Which roles a unit belongs to (DESIGN.md "Unit matching"): a unit names its role with
// ConditionPathExists= on the role files, so the agent and systemd read the same line the same way.
import { ROLES, type Role } from './dns-names.js';
import { roleOfPath } from './role-file.js';
import { listValues, type UnitFile } from './unit-file.js';

export interface RoleCondition {
  /** The role whose file the condition names. */
  role: Role;
  negate: boolean;
  trigger: boolean;
}

/** The unit's ConditionPathExists= entries that name a role file, after empty-assignment resets. */
export function roleConditions(unit: UnitFile): RoleCondition[] {
  const out: RoleCondition[] = [];
  for (const e of listValues(unit, 'Unit', 'ConditionPathExists')) {
    // systemd's order: `|` (triggering) first, then `!` (negation), each optionally followed by spaces.
    let v = e.value;
    const trigger = v.startsWith('|');
    if (trigger) v = v.slice(1).trimStart();
    const negate = v.startsWith('!');
    if (negate) v = v.slice(1).trimStart();
    const role = roleOfPath(v);
    if (role) out.push({ role, negate, trigger });
  }
  return out;
}

/**
 * The roles R for which the unit has at least one role-file condition and all of them hold in a world
 * where only R's file exists: plain conditions must all hold, triggering ones (`|`) are OR-ed.
 */
export function unitRoles(unit: UnitFile): Role[] {
  const conditions = roleConditions(unit);
  if (!conditions.length) return [];
  return ROLES.filter((role) => {
    const holds = (c: RoleCondition) => (c.role === role) !== c.negate;
    const plain = conditions.filter((c) => !c.trigger);
    const triggering = conditions.filter((c) => c.trigger);
    return plain.every(holds) && (triggering.length === 0 || triggering.some(holds));
  });
}
