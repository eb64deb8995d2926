/**
 * rnn-input-svd — the input weights of an LSTM, GRU or RNN op through rank r: the input is
 * projected to r features by one MatMul before the op, which then reads r inputs.
 *
 * Before: LSTM(X, W, R, B, sequence_lens, initial_h, initial_c, P)
 *         W [dirs, G·H, I] (G gates: LSTM 4, GRU 3, RNN 1), X [seq, batch, I] (layout 1: [batch, seq, I])
 * After:  Z = MatMul(X, P)           P = V_r Σ_r^½ [I, r]
 *         LSTM(Z, W', R, B, …)       W'[d] = (Q_d)ᵀ [G·H, r], Q = Σ_r^½ U_rᵀ [r, dirs·G·H]
 * with Wᵀ stacked over directions, [I, dirs·G·H] ≈ P·Q (truncated SVD). Every gate of every
 * direction computes W[d]·xₜ = Q_dᵀ·Pᵀ·xₜ, which is W'[d]·zₜ: the op's input size becomes r
 * (read from W's last dim) and nothing else changes.
 *
 * Bidirectional ops read one X for both directions, so both share one projection: the SVD
 * is of both directions' weights stacked ([2·G·H, I]); its rank bounds each direction's.
 * (A projection per direction would need two ops or a 2r-wide input the op cannot split.)
 *
 * Untouched: R (the recurrent weights act inside the op's loop on the hidden state, which no
 * node outside the op can reach, so they cannot be factorized here), B (added after W·x),
 * sequence_lens, initial_h/initial_c, peepholes P, and every attribute (direction, layout,
 * hidden_size, activations with their alpha/beta, clip, input_forget, linear_before_reset).
 *
 * Cost per input position (one time step of one sequence): dirs·G·H·I MACs and params →
 * r·(I + dirs·G·H); the recurrent part is the same before and after and is not counted
 * (src/graph/layers.ts counts a recurrent layer's input part only).
 *
 * Data-aware (calibration data): the truncation is fitted to X's second moments C = E[x·xᵀ]
 * over its rows of I (src/calib/stats-plan.ts), minimising ‖(W − W_r)·C^½‖ instead of
 * ‖W − W_r‖, as the MatMul pass does: directions of x the data never takes cost nothing.
 */
import { attrInt, attrString } from '../src/graph/attrs.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { resolveConstant } from '../src/graph/constants.js';
import { fromArray, transpose } from '../src/linalg/matrix.js';
import { newNode } from '../src/onnx/schema.js';
import { makeFloatTensor, readTensorFloat } from '../src/onnx/tensor.js';
import { castAware } from '../src/rewrite/cast-weights.js';
import { docString, FLOAT_TYPES } from '../src/rewrite/emit.js';
import { derivedName, skip, type Applied, type LayerPass, type MatchBase, type PassContext, type Skip } from '../src/rewrite/pass.js';
import { SvdCache, svdPairCost, svdPairFactors, svdPairRank, whiteningFor } from '../src/rewrite/svd-pair.js';

/** Gates per op: rows of W per direction are gates·hidden_size. */
export const RNN_GATES: Readonly<Record<string, number>> = { LSTM: 4, GRU: 3, RNN: 1 };

export interface RnnMatch extends MatchBase {
  dirs: number;
  /** G·H: rows of W per direction. */
  gh: number;
  inputSize: number;
  /** SVD of Wᵀ stacked over directions, [I, dirs·G·H]. */
  svd: SvdCache;
}

/** Shape and attribute checks that need no weight values. */
function shapeProblem(layer: LayerInfo): true | Skip {
  const w = layer.weightShape;
  const gates = RNN_GATES[layer.op];
  if (gates === undefined) return skip(`${layer.op} is not an LSTM, GRU or RNN`);
  if (layer.weightInput !== 1 || w.length !== 3) return skip('needs a constant 3-D input weight W [dirs, gates·hidden, input]');
  const [dirs, gh] = w as [number, number, number];
  const direction = attrString(layer.node, 'direction') ?? 'forward';
  const wantDirs = direction === 'bidirectional' ? 2 : 1;
  if (dirs !== wantDirs) return skip(`W has ${dirs} direction(s) but direction is ${direction}`);
  const hidden = attrInt(layer.node, 'hidden_size');
  if (hidden !== undefined && hidden * gates !== gh) return skip(`W has ${gh} rows per direction, not ${gates}·hidden_size ${hidden}`);
  if (gh % gates !== 0) return skip(`W has ${gh} rows per direction, not a multiple of ${gates} gates`);
  return true;
}

export const rnnInputSvd: LayerPass<RnnMatch, 'svd'> = castAware({
  name: 'rnn-input-svd',
  method: 'svd',
  ops: ['LSTM', 'GRU', 'RNN'],
  benefit: 1,

  accepts: shapeProblem,

  match(layer: LayerInfo, cx: PassContext): RnnMatch | Skip {
    const ok = shapeProblem(layer);
    if (ok !== true) return ok;
    const dataType = layer.weight.tensor.dataType ?? 0;
    if (!FLOAT_TYPES.has(dataType)) return skip(`weight type ${dataType} is not floating point`);
    const x = layer.node.input[0];
    if (!x) return skip(`the ${layer.op} has no input X`);
    if (resolveConstant(layer.graph, x)) return skip('X is a constant: nothing to project');
    const [dirs, gh, inputSize] = layer.weightShape as [number, number, number];
    // W's data is [dirs·G·H, I] row-major; the product X·Wᵀ takes its transpose.
    const stacked = fromArray(dirs * gh, inputSize, readTensorFloat(layer.weight.tensor, cx.external));
    // Data-aware: X's second moments over its rows of I whiten the input side of Wᵀ (as for
    // a MatMul X·W). Anchored statistics would ask for a bias correction the op's B cannot
    // take here, so only the plain second moments are used.
    const stats = cx.stats?.get(layer.name);
    const whiten = whiteningFor(stats && { ...stats, anchor: undefined }, 'rows', inputSize);
    return { layer, node: layer.node, graph: layer.graph, dataType, dirs, gh, inputSize, svd: new SvdCache(transpose(stacked), 0, whiten, cx.gemm) };
  },

  chooseRanks: (m, policy) => svdPairRank(m.svd, policy),

  rankLimits: (m) => [Math.min(m.inputSize, m.dirs * m.gh)],

  cost: (m, ranks) => svdPairCost(m.inputSize, m.dirs * m.gh, ranks[0]!),

  estimate(m, ranks) {
    const f = svdPairFactors(m.svd, ranks[0]!);
    return Number.isFinite(f.relError) ? { relError: f.relError } : skip('factorization produced non-finite values');
  },

  apply(m: RnnMatch, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const r = ranks[0]!;
    const { node: n, graph: g, dirs, gh, inputSize } = m;
    const f = svdPairFactors(m.svd, r);
    if (!Number.isFinite(f.relError)) return skip('factorization produced non-finite values');
    // f.left = P [I, r]; f.right = Q [r, dirs·G·H]; W'[d][j][k] = Q[k][d·G·H + j].
    const cols = dirs * gh;
    const w2 = new Float32Array(dirs * gh * r);
    for (let k = 0; k < r; k++) for (let c = 0; c < cols; c++) w2[c * r + k] = f.right[k * cols + c]!;
    const pName = derivedName(cx, n, 'lr_proj');
    const wName = derivedName(cx, n, 'lr_w');
    g.addInitializer(makeFloatTensor(pName, [inputSize, r], f.left, m.dataType));
    g.addInitializer(makeFloatTensor(wName, [dirs, gh, r], w2, m.dataType));
    const z = derivedName(cx, n, 'lr_z');
    const project = newNode({ opType: 'MatMul', name: derivedName(cx, n, 'lr_a'), input: [n.input[0]!, pName], output: [z] });
    const input = [...n.input];
    input[0] = z;
    input[1] = wName;
    const op = newNode({ ...n, opType: n.opType!, name: derivedName(cx, n, 'lr_b'), input, output: [...n.output], attribute: n.attribute });
    const nodes = [project, op];
    const doc = docString('rnn-input-svd', `input weights rank ${r} of ${dirs}x${gh}x${inputSize}${dirs > 1 ? ' (one projection shared by both directions)' : ''} (weight rel. error ${f.relError.toExponential(2)}); recurrent weights R unchanged`);
    for (const x of nodes) x.docString = doc;
    g.replaceNode(n, nodes);
    // R multiplies the hidden state inside the op's time loop, where no factor can be put.
    return { relError: f.relError, nodes: nodes.map((x) => x.name!), note: 'recurrent weights R kept: they act on the hidden state inside the op\'s loop' };
  },

  /** W[d][j][i] = Σ_k W'[d][j][k]·P[i][k], from the chain's factors P [I, r] and W' [dirs, G·H, r]. */
  compose(_chain, factors, f, ext): Float32Array | string {
    const [p, w2] = factors;
    if (!p || !w2 || p.dims.length !== 2 || w2.dims.length !== 3) return 'an RNN input projection needs a 2-D projection and a 3-D weight';
    const [inputSize, r] = p.dims as [number, number];
    const [dirs, gh, r2] = w2.dims as [number, number, number];
    if (r !== r2 || f.weightDims[2] !== inputSize) return `factor shapes [${p.dims}] and [${w2.dims}] do not chain`;
    const pv = p.read(ext);
    const wv = w2.read(ext);
    const out = new Float32Array(dirs * gh * inputSize);
    for (let row = 0; row < dirs * gh; row++) {
      for (let i = 0; i < inputSize; i++) {
        let s = 0;
        for (let k = 0; k < r; k++) s += wv[row * r + k]! * pv[i * r + k]!;
        out[row * inputSize + i] = s;
      }
    }
    return out;
  },
});
