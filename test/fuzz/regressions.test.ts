/**
 * Replays every case that once failed (test/fuzz/regressions/*.json): the recipe is
 * materialized again, and a saved copy of the mutated model (`file`) is run as-is too.
 * New failures of the fuzz suites are saved here with LR_FUZZ_SAVE=1.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { describeFailures, FuzzWorker, REGRESSION_DIR, runCase, runMaterialized, type Regression } from './harness.js';
import { baseArgs } from './mutate.js';

const files = fs.existsSync(REGRESSION_DIR) ? fs.readdirSync(REGRESSION_DIR).filter((f) => f.endsWith('.json')).sort() : [];
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-lr-regress-'));
const worker = new FuzzWorker();
afterAll(() => { worker.stop(); fs.rmSync(root, { recursive: true, force: true }); });

describe('fuzz regressions', () => {
  it('has regression cases', () => { expect(files.length).toBeGreaterThan(0); });

  for (const f of files) {
    it(f.replace(/\.json$/, ''), async () => {
      const reg = JSON.parse(fs.readFileSync(path.join(REGRESSION_DIR, f), 'utf8')) as Regression;
      const r = await runCase(worker, reg.recipe, reg.plan, root);
      expect(r.failures, `${reg.note}\n${describeFailures(r.failures)}`).toEqual([]);
      if (reg.file) {
        const dir = fs.mkdtempSync(path.join(root, 'file-'));
        const model = path.join(dir, 'in.onnx');
        fs.copyFileSync(path.join(REGRESSION_DIR, reg.file), model);
        const c = { recipe: { ...reg.recipe, kinds: reg.recipe.kinds ?? [] }, model, inputs: [model], args: baseArgs(reg.recipe.base, dir), desc: [`saved file ${reg.file}`] };
        const r2 = await runMaterialized(worker, c, reg.plan, dir);
        expect(r2.failures, `${reg.note}\n${describeFailures(r2.failures)}`).toEqual([]);
      }
    }, 180_000);
  }
});
