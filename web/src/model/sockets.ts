// The connection rule, the same as engine/types.py `can_connect`: the same type; "*" on either side;
// INT into FLOAT (widening, never the reverse); or a declared super-type of the output.

import type { SocketTypeInfo } from '../api/types';

export const ANY = '*';

export class TypeTable {
  private readonly byName = new Map<string, SocketTypeInfo>();
  private readonly ancestorsCache = new Map<string, Set<string>>();

  constructor(types: SocketTypeInfo[]) {
    for (const t of types) this.byName.set(t.name, t);
  }

  get(name: string): SocketTypeInfo | undefined {
    return this.byName.get(name);
  }

  color(name: string): string {
    return this.byName.get(name)?.color ?? '#9e9e9e';
  }

  /** Every declared super-type of `name`, transitively. */
  ancestors(name: string): Set<string> {
    const hit = this.ancestorsCache.get(name);
    if (hit) return hit;
    const seen = new Set<string>();
    const stack = [name];
    while (stack.length) {
      const t = this.byName.get(stack.pop()!);
      if (!t) continue;
      for (const p of t.supertypes) {
        if (!seen.has(p)) {
          seen.add(p);
          stack.push(p);
        }
      }
    }
    this.ancestorsCache.set(name, seen);
    return seen;
  }

  canConnect(outputType: string, inputType: string): boolean {
    return (
      outputType === inputType ||
      outputType === ANY ||
      inputType === ANY ||
      (outputType === 'INT' && inputType === 'FLOAT') ||
      this.ancestors(outputType).has(inputType)
    );
  }

  /** Why `outputType` may not feed `inputType` (null when it may): shown where a drop is refused. */
  refusal(outputType: string, inputType: string): string | null {
    if (this.canConnect(outputType, inputType)) return null;
    if (outputType === 'FLOAT' && inputType === 'INT') {
      return 'FLOAT cannot feed INT: a real number is never narrowed to an integer (INT into FLOAT works)';
    }
    const parents = [...this.ancestors(outputType)];
    const also = parents.length ? ` (${outputType} is also usable as ${parents.join(', ')})` : '';
    return `${outputType} cannot feed ${inputType}: the input expects ${inputType}${also}`;
  }
}
