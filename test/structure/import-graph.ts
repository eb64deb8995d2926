/**
 * The project's own import graph, read from the sources as text: every relative
 * `import … from`, `export … from` and `import('…')` in src/, passes/ and models/. Type-only
 * imports count too: a type cycle still ties two modules into one unit to read and change.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

export type ImportGraph = Map<string, string[]>;

const SPEC = /(?:^|\n)\s*(?:import|export)\s[^'";]*?from\s*['"](\.[^'"]+)['"]|import\(\s*['"](\.[^'"]+)['"]\s*\)/g;

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = path.join(dir, e);
    if (statSync(p).isDirectory()) return tsFiles(p);
    return p.endsWith('.ts') && !p.endsWith('.d.ts') ? [p] : [];
  });
}

/** Module ids are paths relative to `root` without the extension, e.g. `src/optimize/driver`. */
export function importGraph(root: string, dirs: readonly string[]): ImportGraph {
  const g: ImportGraph = new Map();
  const id = (abs: string): string => path.relative(root, abs).replace(/\\/g, '/').replace(/\.[jt]s$/, '');
  for (const file of dirs.flatMap((d) => tsFiles(path.join(root, d)))) {
    const text = readFileSync(file, 'utf8');
    const deps = new Set<string>();
    for (const m of text.matchAll(SPEC)) deps.add(id(path.resolve(path.dirname(file), m[1] ?? m[2]!)));
    g.set(id(file), [...deps].sort());
  }
  return g;
}

/** Strongly connected components with more than one module (or a self-import): Tarjan. */
export function cycles(g: ImportGraph): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, counter); low.set(v, counter); counter++;
    stack.push(v); onStack.add(v);
    for (const w of g.get(v) ?? []) {
      if (!g.has(w)) continue;
      if (!index.has(w)) { visit(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); }
      else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do { w = stack.pop()!; onStack.delete(w); scc.push(w); } while (w !== v);
      if (scc.length > 1 || (g.get(v) ?? []).includes(v)) out.push(scc.sort());
    }
  };
  for (const v of [...g.keys()].sort()) if (!index.has(v)) visit(v);
  return out;
}
