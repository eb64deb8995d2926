/**
 * The end of an optimize run: verify the rewritten model in ORT (from memory when it is
 * written inline, so nothing unverifiable is written), write OUT atomically, and measure
 * latency. Fills the report's verify, inputs and latency parts; a latency budget's
 * achieved value becomes the measured ratio.
 */
import { LrError } from '../errors.js';
import { AUTO_EXTERNAL_BYTES, forEachTensor, saveModel } from '../onnx/file.js';
import { encodeModel } from '../onnx/codec.js';
import type { ModelProto } from '../onnx/schema.js';
import { isExternal } from '../onnx/tensor.js';
import type { Report } from '../report/report.js';
import { measureLatency } from '../verify/latency.js';
import { preflightOriginal, verifyModels } from '../verify/verify.js';
import type { Job } from './budget-run.js';
import type { PipelineConfig, VerificationData } from './pipeline.js';

/** Returns whether verification passed (true when it is off). */
export async function writeAndVerify(job: Job, cfg: PipelineConfig, outPath: string, report: Report, heldOut?: VerificationData): Promise<boolean> {
  const notes = job.notes;
  const verifyOpts = {
    seed: cfg.opts.seed, shapes: cfg.shapes, inputs: cfg.values, minCosine: cfg.verify.minCosine, threads: cfg.verify.threads, feeds: heldOut?.feeds, outputs: cfg.outputs,
    // Without --atol/--rtol only the cosine decides: a lossy rewrite never meets 1e-5.
    atol: cfg.verify.atol ?? Infinity, rtol: cfg.verify.rtol ?? 0,
  };
  // Nothing is written that ORT cannot check: a model that is written inline is verified
  // from memory before it is written (which also proves ORT loads it); one with external
  // data needs its files, so only the original's first run is checked before writing.
  const unverifiable = (e: LrError): LrError => new LrError(e.kind, `cannot verify: ${e.message}; nothing written (--no-verify writes OUT unchecked)`);
  let verified: Awaited<ReturnType<typeof verifyModels>> | undefined;
  if (cfg.verify.enabled) {
    cfg.onStage?.('verifying in ONNX Runtime');
    const inline = !cfg.save.externalData && !hasExternalTensors(job.loaded.model) ? encodeModel(job.loaded.model) : undefined;
    if (inline && inline.length <= AUTO_EXTERNAL_BYTES) {
      verified = await verifyModels({ path: job.loaded.path }, { bytes: inline }, verifyOpts);
      if (!verified.ok) throw unverifiable(verified.error);
    } else {
      const pre = await preflightOriginal({ path: job.loaded.path }, verifyOpts);
      if (!pre.ok) throw unverifiable(pre.error);
    }
  }
  cfg.onStage?.('writing');
  const saved = saveModel({ model: job.loaded.model, external: job.loaded.external, path: job.loaded.path }, outPath, {
    force: cfg.save.force, ...(cfg.save.externalData ? { externalData: true } : {}),
  });
  report.output.bytes = saved.bytes + (saved.externalBytes ?? 0);
  let pass = true;
  if (cfg.verify.enabled) {
    const v = cfg.verify;
    if (!verified) {
      cfg.onStage?.('verifying in ONNX Runtime');
      verified = await verifyModels({ path: job.loaded.path }, { path: saved.path }, verifyOpts);
    }
    const res = verified;
    if (!res.ok) throw res.error;
    report.verify = { ...res.value, minCosine: v.minCosine, atol: v.atol, rtol: v.rtol };
    report.inputs = heldOut ? heldOut.description
      : Object.keys(cfg.values).length > 0 ? `--input ${Object.keys(cfg.values).join(', ')} + seeded random for the rest` : 'seeded random inputs';
    pass = res.value.pass;
    if (v.latency) {
      cfg.onStage?.('measuring latency');
      const lat = await measureLatency({ path: job.loaded.path }, { path: saved.path }, { threads: v.threads, shapes: cfg.shapes, values: cfg.values });
      if (lat.ok) report.latency = lat.value; else notes.push(`latency not measured: ${lat.error.message}`);
      if (v.web) {
        const web = await measureLatency({ path: job.loaded.path }, { path: saved.path }, { backend: 'web', shapes: cfg.shapes, values: cfg.values });
        if (web.ok) report.latencyWeb = web.value; else notes.push(`web latency not measured: ${web.error.message}`);
      }
      if (cfg.budget?.kind === 'latency' && report.latency && report.budget) {
        const ratio = report.latency.optimizedMs.p50 / report.latency.originalMs.p50;
        report.budget.achieved = ratio;
        report.budget.unit = 'measured latency (ORT-node p50)';
        report.budget.met = ratio <= cfg.budget.fraction * 1.02;
        if (!report.budget.met) report.budget.why = `measured latency ratio ${ratio.toFixed(3)} > target ${cfg.budget.fraction} (allocated by per-layer timings; ${report.budget.why ?? 'their sum met the target: layer times do not add up exactly'})`;
      }
    }
  }
  return pass;
}

function hasExternalTensors(m: ModelProto): boolean {
  let found = false;
  forEachTensor(m, (t) => { if (isExternal(t)) found = true; });
  return found;
}
