/**
 * Module structure: no import cycles (type-only imports included) and no upward imports
 * between the layers of the code, from the numerics up to the command line.
 */
import { describe, expect, it } from 'vitest';
import { cycles, importGraph, type ImportGraph } from './import-graph.js';

const ROOT = new URL('../../', import.meta.url).pathname;

/** Lower layers never import higher ones; a folder may import any lower layer. */
const LAYERS: readonly (readonly string[])[] = [
  ['src/errors'],
  ['src/util'],
  ['src/io', 'src/onnx', 'src/linalg'],
  ['src/verify'],
  ['src/graph'],
  ['src/rewrite'],
  ['passes', 'models'],
  ['src/calib'],
  ['src/report'],
  ['src/optimize'],
  // The library's calls and defaults; the command line, the package entry and the web
  // page's entry (with its stand-ins for Node's modules) are thin layers over them.
  ['src/api'],
  ['src/cli', 'src/index', 'src/browser'],
];

const unitOf = (m: string): string => (m.startsWith('src/') ? m.split('/').slice(0, 2).join('/') : m.split('/')[0]!);
const rankOf = (unit: string): number => LAYERS.findIndex((l) => l.includes(unit));

function upward(g: ImportGraph): string[] {
  const bad: string[] = [];
  for (const [m, deps] of g) {
    const from = unitOf(m);
    for (const d of deps) {
      const to = unitOf(d);
      if (to !== from && rankOf(to) >= rankOf(from)) bad.push(`${m} -> ${d}`);
    }
  }
  return bad;
}

describe('import structure', () => {
  const g = importGraph(ROOT, ['src', 'passes', 'models']);

  it('reads the real import graph', () => {
    // A scanner that found nothing would pass every check below.
    expect(g.get('src/cli/main')).toContain('src/errors');
    expect(g.get('passes/index')?.length).toBeGreaterThan(3);
  });

  it('every module belongs to a layer', () => {
    expect([...g.keys()].filter((m) => rankOf(unitOf(m)) < 0)).toEqual([]);
  });

  it('has no import cycles', () => {
    expect(cycles(g).map((c) => c.join(' <-> '))).toEqual([]);
  });

  it('has no upward imports between layers', () => {
    expect(upward(g)).toEqual([]);
  });

  it('detects a cycle and an upward import when there is one', () => {
    const planted: ImportGraph = new Map([
      ['src/linalg/a', ['src/linalg/b']], ['src/linalg/b', ['src/linalg/a']], ['src/graph/x', ['src/optimize/y']], ['src/optimize/y', []],
    ]);
    expect(cycles(planted)).toEqual([['src/linalg/a', 'src/linalg/b']]);
    expect(upward(planted)).toEqual(['src/graph/x -> src/optimize/y']);
  });
});
