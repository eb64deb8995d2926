/**
 * The end of an optimize run: write OUT's files under temp names, verify the rewritten
 * model in ORT and measure latency from there, then commit OUT (nothing unverifiable is
 * ever in place). Returns what it measured, for the report: whether a latency budget is
 * met is the budget's to say (budget-run.ts settleLatencyBudget).
 */
import { LrError } from '../errors.js';
import { forEachTensor, prepareSave } from '../onnx/file.js';
import type { ModelProto } from '../onnx/schema.js';
import { timed } from './timings.js';
import type { Measured } from '../report/build.js';
import { measureLatency } from '../verify/latency.js';

/** The whole models' timing: ≥ 20 interleaved runs each, but a model of seconds (ISNet at 1024²) stops at 10 after 30 s and warms up for 2 s at most. */
const FINAL_TIMING = { maxSeconds: 30, fewestRuns: 10, warmupSeconds: 2 };
import { verifyModels, type VerifyStats } from '../verify/verify.js';
import type { FactorStorage } from '../rewrite/quantize-factors.js';
import type { Job, PipelineConfig, VerificationData } from './job.js';
import { budgetLabel } from './budgeted.js';
import { policyLabel } from './driver.js';
import { TOOL_NAME, TOOL_VERSION } from '../report/version.js';

/**
 * What the written model's metadata_props say made it (Netron shows them). The verdict is
 * known only once the temp file is verified: it is appended then, before the commit.
 */
export const METADATA_KEYS = {
  tool: 'onnx-lr.tool', version: 'onnx-lr.version', command: 'onnx-lr.command', policy: 'onnx-lr.policy', verdict: 'onnx-lr.verdict',
} as const;

/** A config may carry the command line that started the run (the CLI sets it), for OUT's metadata. */
export interface CommandLine { commandLine?: string }

/** OUT's run metadata (the verdict is appended once known): the CLI's and the page's. */
export function metadataOf(cfg: PipelineConfig & CommandLine): Record<string, string> {
  return {
    [METADATA_KEYS.tool]: TOOL_NAME, [METADATA_KEYS.version]: TOOL_VERSION,
    ...(cfg.commandLine !== undefined && { [METADATA_KEYS.command]: cfg.commandLine }),
    [METADATA_KEYS.policy]: cfg.budget ? budgetLabel(cfg.budget) : policyLabel(cfg.opts),
  };
}

export interface Written extends Measured {
  /** Whether verification passed (true when it is off). */
  pass: boolean;
}

/** The worst checked output's cosine, for messages ("" when there is none). */
function worstCosine(v: { outputs: readonly { cosine: number; checked?: boolean }[] }): string {
  const worst = Math.min(...v.outputs.filter((o) => o.checked !== false).map((o) => o.cosine));
  // Six places: a factor type's loss near a tight threshold (0.99999) shows.
  return Number.isFinite(worst) ? `worst output cosine ${worst.toFixed(6)}` : 'failed';
}

/**
 * Writes OUT and verifies it; with `factors` (--weights fp16|int8), an OUT that fails the
 * verification is written again with the factors one step wider (int8 → fp16 → fp32) until
 * it passes or they are as the rewrite made them: the stored type is "chosen so the whole
 * output still meets the verification". Each fall-back is said on the progress line and in
 * the report (`weights.fallback`, and a note). The model's payloads are kept in memory
 * while a fall-back is possible (another OUT may have to be written from them).
 */
export async function writeAndVerify(job: Job, cfg: PipelineConfig & CommandLine, outPath: string, heldOut?: VerificationData, factors?: FactorStorage): Promise<Written> {
  const fellBack: string[] = [];
  for (;;) {
    const wider = factors !== undefined && factors.mode !== 'fp32' && cfg.verify.enabled;
    const r = await writeOnce(job, cfg, outPath, heldOut, wider);
    if ('written' in r) {
      r.written.notes = [...fellBack, ...r.written.notes];
      return r.written;
    }
    const from = factors!.mode;
    factors!.widen(`${worstCosine(r.failed)}${cfg.verify.minCosine !== undefined ? `, threshold ${cfg.verify.minCosine}` : ''}`);
    const said = `--weights: OUT failed the verification with ${from} factors (${worstCosine(r.failed)}): ${factors!.mode === 'fp32' ? 'writing the factors as the rewrite made them' : `storing them as ${factors!.mode}`}`;
    fellBack.push(said);
    cfg.onStage?.(said);
  }
}

/**
 * One write and verification of OUT. With `mayFail`, an OUT that fails the verification
 * is discarded and the verification returned instead (the caller stores the factors wider
 * and writes again); the payloads are then kept, as another OUT will be written from them.
 */
async function writeOnce(job: Job, cfg: PipelineConfig & CommandLine, outPath: string, heldOut: VerificationData | undefined, mayFail: boolean): Promise<{ written: Written } | { failed: VerifyStats }> {
  const notes: string[] = [];
  const verifyOpts = {
    seed: cfg.opts.seed, shapes: cfg.shapes, inputs: cfg.values, minCosine: cfg.verify.minCosine, threads: cfg.verify.threads, feeds: heldOut?.feeds, learned: heldOut?.learned, outputs: cfg.outputs,
    // Without --atol/--rtol only the cosine decides: a lossy rewrite never meets 1e-5.
    atol: cfg.verify.atol ?? Infinity, rtol: cfg.verify.rtol ?? 0,
  };
  // Nothing is committed that ORT cannot check: the files are written under a temp name
  // (external data already in place under its content-hashed name, so the temp model loads
  // as OUT will), verified and timed from there, and only then renamed into place. The
  // original is read before OUT can replace it (OUT = IN with --force).
  cfg.onStage?.('writing');
  const pending = await timed(job.timings, 'write', () => prepareSave(job.loaded, outPath, {
    force: cfg.save.force, ...(cfg.save.externalData ? { externalData: true } : {}), ...(job.original && { alsoInputs: job.original.inputs }),
    metadata: metadataOf(cfg), dropMetadata: [METADATA_KEYS.command, METADATA_KEYS.verdict],
  }));
  // OUT's files hold every payload now and ORT reads the model back from disk: the JS
  // copies (the new factors above all) would only sit beside ORT's own while it verifies.
  if (!mayFail) releasePayloads(job.loaded.model);
  // Messages name OUT, not the temp name it is checked under.
  const named = (m: string): string => m.split(pending.tempPath).join(outPath);
  const unverifiable = (e: LrError): LrError => new LrError(e.kind, `cannot verify: ${named(e.message)}; nothing written (--no-verify writes OUT unchecked)`);
  try {
    const out: Written = { pass: true, bytes: pending.result.bytes + (pending.result.externalBytes ?? 0), notes };
    if (cfg.verify.enabled) {
      const v = cfg.verify;
      const written = { path: pending.tempPath };
      cfg.onStage?.('verifying in ONNX Runtime');
      const res = await timed(job.timings, 'verification', () => verifyModels({ path: job.original?.path ?? job.loaded.path }, written, verifyOpts));
      if (!res.ok) throw unverifiable(res.error);
      out.verify = { ...res.value, minCosine: v.minCosine, atol: v.atol, rtol: v.rtol };
      if (res.value.widened) notes.push(res.value.widened);
      out.inputs = heldOut ? heldOut.description
        : Object.keys(cfg.values).length > 0 ? `--input ${Object.keys(cfg.values).join(', ')} + seeded random for the rest` : 'seeded random inputs';
      out.pass = res.value.pass;
      if (mayFail && !out.pass) {
        pending.discard();
        return { failed: res.value };
      }
      if (v.latency) {
        cfg.onStage?.('measuring latency');
        const lat = await timed(job.timings, 'latency', () => measureLatency({ path: job.original?.path ?? job.loaded.path }, written, { threads: v.threads, shapes: cfg.shapes, values: cfg.values, ...FINAL_TIMING }));
        if (lat.ok) out.latency = lat.value; else notes.push(`latency not measured: ${named(lat.error.message)}`);
        if (v.web) {
          const web = await timed(job.timings, 'latencyWeb', () => measureLatency({ path: job.original?.path ?? job.loaded.path }, written, { backend: 'web', shapes: cfg.shapes, values: cfg.values }));
          if (web.ok) out.latencyWeb = web.value; else notes.push(`web latency not measured: ${named(web.error.message)}`);
        }
      }
    }
    pending.appendMetadata({ [METADATA_KEYS.verdict]: verdictOf(out) });
    out.bytes = pending.result.bytes + (pending.result.externalBytes ?? 0);
    pending.commit();
    return { written: out };
  } catch (e) {
    pending.discard();
    throw e;
  }
}

/** The verification's verdict in one line: PASS or FAIL with the worst output cosine, or not verified. */
export function verdictOf(w: Measured): string {
  const v = w.verify;
  if (!v) return 'not verified (--no-verify)';
  const runtime = v.backend === 'ort-web-wasm' ? 'ONNX Runtime Web' : 'ONNX Runtime';
  const checked = v.outputs.filter((o) => o.checked !== false);
  const worst = Math.min(...checked.map((o) => o.cosine));
  const cos = Number.isFinite(worst) ? `, worst output cosine ${worst.toFixed(4)}` : '';
  return `${v.pass ? 'PASS' : 'FAIL'} (${v.runs} run(s) in ${runtime}${cos}${v.minCosine !== undefined ? `, threshold ${v.minCosine}` : ''})`;
}

const PAYLOADS = ['rawData', 'floatData', 'int32Data', 'int64Data', 'doubleData', 'uint64Data'] as const;

/**
 * Drops the numeric payloads of every tensor of `model`, in place (every object that
 * shares a tensor loses it too, which is the point: nothing keeps the arrays alive). The
 * model is no longer usable for its values afterwards; strings are small and kept.
 * Returns the bytes released.
 */
export function releasePayloads(model: ModelProto): number {
  let bytes = 0;
  forEachTensor(model, (t) => {
    for (const k of PAYLOADS) {
      const v = t[k];
      if (v === undefined) continue;
      bytes += v.byteLength;
      delete t[k];
    }
  });
  return bytes;
}
