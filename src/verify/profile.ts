/**
 * Kernel time per node, from ORT's own profiler (`enableProfiling`): where a model's time
 * goes, without guessing from MACs (depthwise and 1x1 convs are memory-bound, so MAC
 * shares misstate their time). Runs at graphOptimizationLevel 'basic': the fusions at
 * 'all' (NCHWc, FusedConv) rename nodes, and then times cannot be traced back to layers.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { err, ok, type Result } from '../errors.js';
import { buildFeeds, type ShapeOverrides, type ValueOverrides } from './inputs.js';
import { createSession, firstLine, widenedCopy } from './session.js';
import type { Feeds } from './tensor.js';

export interface NodeTimes {
  /** Median over the timed runs of each node's kernel time, µs, by node name. */
  byNode: Map<string, number>;
  /** Sum of byNode, µs. */
  total: number;
  runs: number;
}

interface ProfileEvent { cat?: string; name?: string; dur?: number; args?: { op_name?: string } }

const KERNEL_SUFFIX = '_kernel_time';

/** Per-node medians from profiler events; the first `warmup` occurrences of each node are dropped. */
export function nodeTimesFromEvents(events: readonly ProfileEvent[], warmup: number): NodeTimes {
  const samples = new Map<string, number[]>();
  for (const e of events) {
    if (e.cat !== 'Node' || typeof e.name !== 'string' || !e.name.endsWith(KERNEL_SUFFIX) || typeof e.dur !== 'number') continue;
    const name = e.name.slice(0, -KERNEL_SUFFIX.length);
    let s = samples.get(name);
    if (!s) samples.set(name, (s = []));
    s.push(e.dur);
  }
  const byNode = new Map<string, number>();
  let runs = 0;
  for (const [name, s] of samples) {
    const timed = s.slice(warmup).sort((a, b) => a - b);
    if (timed.length === 0) continue;
    runs = Math.max(runs, timed.length);
    byNode.set(name, timed[timed.length >> 1]!);
  }
  let total = 0;
  for (const v of byNode.values()) total += v;
  return { byNode, total, runs };
}

/** Runs the model `1 + runs` times with the profiler on (the first run untimed) and reads its trace. */
export async function profileNodes(modelPath: string, feeds: Feeds, opts: { runs?: number; threads?: number } = {}): Promise<Result<NodeTimes>> {
  const runs = opts.runs ?? 3;
  const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-profile-'));
  try {
    let s: ort.InferenceSession;
    const options: ort.InferenceSession.SessionOptions = {
      graphOptimizationLevel: 'basic', executionMode: 'sequential', interOpNumThreads: 1, intraOpNumThreads: opts.threads ?? 1,
      logSeverityLevel: 4, enableProfiling: true, profileFilePrefix: path.join(dir, 'profile'),
    };
    try {
      s = await ort.InferenceSession.create(modelPath, options);
    } catch (e) {
      // A bf16 model is profiled as its fp32 copy (same node names), as it is verified (session.ts).
      const wide = widenedCopy({ path: modelPath });
      // The refused session may have started a trace file already: only the copy's may be read.
      for (const f of readdirSync(dir)) rmSync(path.join(dir, f), { force: true });
      const again = wide && await ort.InferenceSession.create(wide, options).catch(() => undefined);
      if (!again) return err('verify-mismatch', `ORT failed to load ${modelPath} for profiling: ${firstLine(e)}`);
      s = again;
    }
    try {
      const native: Record<string, ort.Tensor> = {};
      for (const [name, t] of Object.entries(feeds)) native[name] = new ort.Tensor(t.type, t.data as never, t.dims);
      for (let i = 0; i <= runs; i++) await s.run(native);
      s.endProfiling();
    } catch (e) {
      return err('verify-mismatch', `ORT failed to run ${modelPath} for profiling: ${firstLine(e)}`);
    } finally {
      await s.release();
    }
    const file = readdirSync(dir).find((f) => f.endsWith('.json'));
    if (!file) return err('verify-mismatch', 'ORT wrote no profile');
    // ORT writes node names into its JSON unescaped: a name with a control character makes
    // the file invalid JSON. Blanked here; such a node's time then matches no layer.
    // eslint-disable-next-line no-control-regex
    const text = readFileSync(path.join(dir, file), 'utf8').replace(/[\u0000-\u001f]/g, ' ');
    let events: ProfileEvent[];
    try {
      events = JSON.parse(text) as ProfileEvent[];
    } catch (e) {
      return err('verify-mismatch', `ORT wrote a profile that is not JSON: ${(e as Error).message}`);
    }
    return ok(nodeTimesFromEvents(events, 1));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Profiles a model file on one seeded input set at the given shapes and values. */
export async function profileModel(
  modelPath: string, opts: { shapes?: ShapeOverrides; values?: ValueOverrides; runs?: number; threads?: number } = {},
): Promise<Result<NodeTimes>> {
  const s = await createSession({ path: modelPath }, { graphOptimizationLevel: 'disabled' });
  if (!s.ok) return s;
  const inputs = s.value.inputs;
  await s.value.release();
  const plan = buildFeeds(inputs, { seed: 0, count: 1, shapes: opts.shapes, values: opts.values });
  if (!plan.ok) return plan;
  return profileNodes(modelPath, plan.value.feeds[0]!, opts);
}
