/**
 * `onnx-lr convert IN OUT`: load and save (normalises the encoding, moves data in or out);
 * with --compute float32 a float16 graph is made to compute in float32, and with
 * --narrow-reorder narrow conv outputs leave ORT's blocked layout at the conv; either is
 * verified in ORT against IN before OUT is committed.
 */
import { LrError } from '../errors.js';
import { loadModel, prepareSave, saveModel, type LoadedModel, type SaveResult } from '../onnx/file.js';
import { computeInFloat32, computesInFloat16, float32Changes } from '../rewrite/compute-float32.js';
import { Model } from '../graph/graph.js';
import { insertLayoutBarriers, narrowSites, sitesSummary } from '../rewrite/narrow-layout.js';
import { machineNchwcBlock, WIDEST_NCHWC_BLOCK } from '../verify/cpu-block.js';
import { measureLatency } from '../verify/latency.js';
import { NARROW_TIMING } from '../optimize/narrow-reorder.js';
import { verifyModels } from '../verify/verify.js';
import { feedOverrides } from './feeds.js';
import { DEFAULT_EXTERNAL_THRESHOLD } from '../onnx/save-options.js';
import { bytes } from '../report/format.js';
import { expectPositionals, flag, num, parse, str, strs } from './args.js';

/** The check of --compute float32 and --narrow-reorder: float32 instead of float16 arithmetic, or another layout, changes outputs by rounding only. */
export const CONVERT_MIN_COSINE = 0.9999;

export const CONVERT_HELP = `Usage: onnx-lr convert IN OUT [--external-data [--threshold BYTES]] [--compute float32] [--narrow-reorder] [--shape NAME:DIMS ...] [--force]

Loads IN and writes it to OUT: every field survives, including ones this tool does not
know. OUT is written to a temporary file and renamed, so a failure never leaves a
half-written file; IN is never modified. OUT must be a regular file or absent.

Options:
  --external-data     store initializers of at least --threshold bytes in OUT.<hash>.data
                      beside OUT (4096-byte aligned, named by its content, so OUT can
                      only ever name the data written with it; the previous OUT's data
                      file is removed once the new OUT is in place). Chosen
                      automatically past 2 GiB.
  --threshold BYTES   size threshold for --external-data (default 1024); empty tensors,
                      1-D integer tensors under 64 KiB (shapes, axes, pads) and other
                      integer tensors under 1024 bytes always stay inline: ORT reads
                      those during shape inference
  --inline            keep every tensor inside OUT, even when the input used external data
  --compute float32   a float16 graph computes in float32, its constants still stored in
                      float16 (each read through a Cast; float16 graph inputs and outputs
                      keep their type behind a Cast). ONNX Runtime's CPU and wasm builds
                      have no float16 conv kernels: they run a float16 graph in float32
                      behind Casts and layout reorders of their own, which this removes
                      (ISNet: 1.09x faster alone, 1.21x after optimize). Keep the float16
                      graph for runtimes with float16 kernels (GPUs, NPUs). OUT is checked
                      in ONNX Runtime against IN on 3 seeded random inputs (cosine at least
                      ${CONVERT_MIN_COSINE} on every output) and written only then. Refused for subgraphs,
                      model-local functions and operators outside the ONNX domain
  --narrow-reorder    a conv to at most half ORT's channel block (8, or 16 with AVX-512;
                      16 where this CPU has no blocked layout), e.g. a 1-channel
                      segmentation head, gets a same-shape Reshape after it (after the
                      BatchNormalization and activation ORT fuses into it), so ORT's CPU
                      provider reorders out of its blocked layout there instead of
                      running the Resize or Sigmoid that follow on channels padded to the
                      block (ISNet: 1.09x faster). Exact; checked like --compute, and both
                      models are timed in ORT (1 thread) and the speed-up printed
  --shape NAME:DIMS   with --compute or --narrow-reorder: concrete dims for an input with
                      dynamic dims, for the check (e.g. x:1x3x224x224)
  --force             allow OUT to be the same file as IN (never one of IN's data files)
  -h, --help          this help`;

export async function convert(argv: readonly string[], out: (s: string) => void): Promise<number> {
  const p = parse(argv, {
    'external-data': { type: 'boolean' }, threshold: { type: 'string' }, inline: { type: 'boolean' },
    force: { type: 'boolean' }, help: { type: 'boolean', short: 'h' }, compute: { type: 'string' }, shape: { type: 'string', multiple: true },
    'narrow-reorder': { type: 'boolean' },
  }, 'convert');
  if (flag(p, 'help')) { out(CONVERT_HELP); return 0; }
  const [inPath, outPath] = expectPositionals(p, 2, 'convert', 'IN OUT');
  const threshold = num(p, 'threshold', { min: 0, integer: true });
  if (threshold !== undefined && !flag(p, 'external-data')) throw new LrError('usage', '--threshold needs --external-data');
  const compute = str(p, 'compute');
  if (compute !== undefined && compute !== 'float32') throw new LrError('usage', `--compute expects float32, got "${compute}"`);
  const narrow = flag(p, 'narrow-reorder');
  if (compute === undefined && !narrow && strs(p, 'shape').length > 0) throw new LrError('usage', '--shape needs --compute or --narrow-reorder (it sets the dims of the check)');
  const loaded = loadModel(inPath);
  try {
    const ext = flag(p, 'external-data') ? { threshold } : flag(p, 'inline') ? false : undefined;
    if (compute || narrow) return await convertChecked(loaded, outPath, { compute: compute !== undefined, narrow, externalData: ext, force: flag(p, 'force'), shapeArgs: strs(p, 'shape') }, out);
    const r = saveModel(loaded, outPath, { externalData: ext, force: flag(p, 'force') });
    out(wroteLine(r));
    // Asked to move data out and none went: say so, and why it can be (not a failure: OUT is valid).
    if (ext && !r.externalPath) {
      out(`--external-data moved nothing: no initializer of at least ${threshold ?? DEFAULT_EXTERNAL_THRESHOLD} bytes can leave OUT ` +
        '(weights in Constant nodes, empty tensors and small integer tensors stay inline), so OUT holds every tensor');
    }
    return 0;
  } finally {
    loaded.external.close();
  }
}

/** What was written: OUT and its data file. */
const wroteLine = (r: SaveResult): string =>
  `wrote ${r.path} (${bytes(r.bytes)})${r.externalPath ? ` + ${r.externalPath} (${bytes(r.externalBytes ?? 0)}, ${r.externalTensors} tensors)` : ''}`;

interface CheckedOptions { compute: boolean; narrow: boolean; externalData?: { threshold?: number } | false; force: boolean; shapeArgs: readonly string[] }

/** --compute float32 and/or --narrow-reorder: change, write under a temp name, check against IN in ORT, commit. */
async function convertChecked(loaded: LoadedModel, outPath: string, o: CheckedOptions, out: (s: string) => void): Promise<number> {
  const { shapes } = feedOverrides(o.shapeArgs, []);
  const said: string[] = [];
  if (o.compute) {
    const half = computesInFloat16(loaded.model);
    const c = computeInFloat32(loaded.model);
    said.push(half
      ? `computes in float32: ${float32Changes(c)}`
      : 'IN computes in float32 already (no float16 values or Casts to float16): no change for --compute');
  }
  const block = machineNchwcBlock();
  let reordered = 0;
  if (o.narrow) {
    const model = new Model(loaded.model);
    const sites = narrowSites(model, block ?? WIDEST_NCHWC_BLOCK);
    const n = insertLayoutBarriers(model, sites);
    reordered = n;
    const where = block === undefined ? `ORT has no blocked conv layout on this CPU; for a block of ${WIDEST_NCHWC_BLOCK}` : `ORT's conv channel block here: ${block}`;
    const s = sitesSummary(sites);
    said.push(n === 0 ? `narrow reorder: no conv to at most half the block read by an op other than a conv (${where}): no change`
      : `narrow reorder: ${n} conv output(s) of ${s.channels} channel(s) reordered before their readers (${s.readers}; ${where})`);
  }
  const pending = prepareSave(loaded, outPath, { externalData: o.externalData, force: o.force });
  try {
    const res = await verifyModels({ path: loaded.path }, { path: pending.tempPath }, { shapes, seed: 0, minCosine: CONVERT_MIN_COSINE, atol: Infinity, rtol: 0 });
    const named = (m: string): string => m.split(pending.tempPath).join(outPath);
    if (!res.ok) throw new LrError(res.error.kind, `cannot check OUT in ONNX Runtime: ${named(res.error.message)}; nothing written`);
    const worst = Math.min(...res.value.outputs.map((x) => x.cosine));
    if (!res.value.pass) throw new LrError('verify-mismatch', `OUT computes other outputs than IN (${named(res.value.reasons.join('; '))}); nothing written`);
    // Timed before the commit, from the temp name; a failed timing is said, not fatal (OUT is checked).
    const lat = reordered > 0 && block !== undefined ? await measureLatency({ path: loaded.path }, { path: pending.tempPath }, { shapes, threads: 1, ...NARROW_TIMING }) : undefined;
    pending.commit();
    const r = pending.result;
    out(wroteLine(r));
    for (const line of said) out(line);
    out(`checked in ONNX Runtime against IN on ${res.value.runs} seeded random inputs: worst output cosine ${worst.toFixed(6)} (at least ${CONVERT_MIN_COSINE} needed)`);
    if (lat) {
      out(lat.ok
        ? `latency ORT-node (1 thread): IN ${lat.value.originalMs.p50.toFixed(1)} ms -> OUT ${lat.value.optimizedMs.p50.toFixed(1)} ms (${lat.value.speedup.toFixed(2)}x, ${lat.value.runs} runs each)${lat.value.speedup < 1 ? '; slower on this machine: keep IN for it' : ''}`
        : `latency not measured: ${named(lat.error.message)}`);
    }
    return 0;
  } catch (e) {
    pending.discard();
    throw e;
  }
}
