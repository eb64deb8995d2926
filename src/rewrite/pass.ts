/**
 * The contract every rewrite in passes/ follows. A pass is a pattern over one layer:
 * `match` is pure and says why when it declines (a Skip), `chooseRanks` turns a rank
 * policy into ranks, `cost` prices a choice and `pays` judges it, and `apply` factorizes
 * the weight and rewrites the graph through the Graph API (the only mutation path).
 * Registered in passes/index.ts, a pass also says which layers it takes (`ops`,
 * `accepts`), how much it is preferred (`benefit`), and how --stages undoes it (`compose`);
 * dispatch (registry.ts) reads only these, so a new pass needs no change elsewhere.
 */
import type { Graph, Model } from '../graph/graph.js';
import type { LayerInfo } from '../graph/layers.js';
import type { SyncGemm } from '../linalg/engine.js';
import type { ExternalReader } from '../onnx/external.js';
import type { NodeProto, TensorProto } from '../onnx/schema.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import type { Rng } from '../util/rng.js';
import type { FitCache } from './fit-cache.js';
import type { RankPolicy } from './rank-policy.js';

import type { Skip } from './skip.js';

export { isSkip, skip, type Skip } from './skip.js';

export interface PassContext {
  model: Model;
  rng: Rng;
  /** Reads weights stored as external data (absent for self-contained models). */
  external?: ExternalReader;
  /** Input statistics per layer name, from calibration data (data-aware decomposition). */
  stats?: ReadonlyMap<string, LayerInputStats>;
  /** Where the factorizations' large products run (e.g. ORT in a worker); default the JS kernel. */
  gemm?: SyncGemm;
  /**
   * --output-aware: per layer name, how much the judged outputs move per unit of each of
   * the layer's output channels (optimize/output-sensitivity.ts); SVD pairs weight their fit by it.
   */
  outputSensitivity?: ReadonlyMap<string, Float64Array>;
  /** Factor initializers already made for a shared weight, keyed by weight name + pass + ranks. */
  shared: Map<string, { names: string[]; relError: number; dataError?: number }>;
  /** Data-aware factorizations of the run, reused at the same ranks and statistics (fit-cache.ts). */
  fits?: FitCache;
  /**
   * What the run saves (--save): under auto, where latency counts a rival measured slower in
   * ORT at equal params and MACs (TT, CP-4) notes that its win is timed (challenge.ts). Absent: latency counts.
   */
  saves?: 'params' | 'macs' | 'latency';
  /**
   * Quick iterative fits (sensitivity's rungs of other methods, sensitivity.ts): CP and CP-4
   * skip their refit under the sensitivity bound, which took 3/4 of their time and lowers
   * their error by 0.3–2%, so what is measured on them is a little above what the plan's fit gives.
   */
  quickFits?: boolean;
  /**
   * Flops (LayerRewrite.fitWork) a fit made only to compare methods may cost: auto's
   * comparisons, sensitivity's rival rungs. Default COMPARE_WORK (challenge.ts); --compare-limit.
   */
  compareWork?: number;
}

/** Parameters and multiply-accumulates of a layer, before or after a rewrite. */
export interface Cost {
  params: number;
  /** MACs per output position (exact up to the spatial factor, which is common to both sides). */
  macsPerPosition: number;
}

/**
 * Second moments of a layer's input over the calibration data. `gram` is [dim, dim]
 * row-major: XᵀX over rows for Y = X·W, X·Xᵀ over columns for Y = W·X, the input-channel
 * covariance (per group) for a Conv; `patchGram` is the im2col patch covariance of a k×k conv.
 */
export interface LayerInputStats {
  kind: 'matrix' | 'conv';
  /** [dim, dim]; for a grouped conv [groups, dim, dim] with dim = S/g; for a batched MatMul weight [slices, K, K] (groups = slices). */
  gram: Float64Array;
  dim: number;
  groups?: number;
  count: number;
  /** E[x] per input channel (or row dim), [groups·dim]. */
  mean?: Float64Array;
  patchGram?: Float64Array;
  patchDim?: number;
  /** E[p] per group, [groups·patchDim]. */
  patchMean?: Float64Array;
  /** Patches behind patchGram per group (batch × output positions, or a sample of them). */
  patchCount?: number;
  /** Patches the inputs had, when patchGram is over a sample of them (calib/sample-blocks.ts samplePairs). */
  patchTotal?: number;
  /**
   * A Gather's table [V, D]: how many times the calibration inputs looked up each row, [V]
   * (the Gram of one-hot rows is diag(rowCounts); `gram` is then empty). passes/gather-svd.ts.
   */
  rowCounts?: Float64Array;
  /** Calibration lookups outside the table's [−V, V) (not in rowCounts; `count` is the others). */
  indexOutOfRange?: number;
  /**
   * Anchored fitting (src/optimize/anchored.ts): the same layer's input x̂ in the model whose
   * earlier layers are already compressed, on the same calibration inputs, so a rewrite can
   * fit what the original layer computes from x (the fields above) given what it is fed (x̂).
   */
  anchor?: AnchorStats;
}

/** Sums over the same vectors (and patches) as LayerInputStats, for x̂; `cross` pairs x̂ with x. */
export interface AnchorStats {
  /** Σ x̂·x̂ᵀ, laid out like LayerInputStats.gram. */
  gram: Float64Array;
  /** Σ x̂·xᵀ (rows index x̂, columns x), laid out like gram (per group for a conv). */
  cross: Float64Array;
  /** E[x̂], like LayerInputStats.mean. */
  mean: Float64Array;
  patchGram?: Float64Array;
  /** Σ p̂·pᵀ per group [groups, patchDim, patchDim]. */
  patchCross?: Float64Array;
  patchMean?: Float64Array;
}

/** A layer's cost before a rewrite and after it at some ranks. */
export interface CostPair { before: Cost; after: Cost }

/**
 * The default rule for whether a choice pays: parameters and MACs per output position
 * both drop. A pass whose layers run no MACs (a Gather) declares its own `pays`.
 */
export const paysInParamsAndMacs = (c: CostPair): boolean =>
  !(c.after.params >= c.before.params || c.after.macsPerPosition >= c.before.macsPerPosition);

export interface Applied {
  /** Relative Frobenius error of the reconstructed weight. */
  relError: number;
  /** Relative output error on the calibration statistics (data-aware rewrites only). */
  dataError?: number;
  /** Names of the new nodes, first to last. */
  nodes: string[];
  /** What the layer's report should say about the fit (e.g. a CP's sensitivity). */
  note?: string;
}

/**
 * What a pass does to a layer it matched. Methods (not function properties) on purpose:
 * any `LayerRewrite<M>` is then a `LayerRewrite<unknown>`, so the registry can hold passes
 * of different match types, and `bind` (registry.ts) closes each over its own match.
 */
export interface LayerRewrite<M> {
  /** Kebab-case id: file name, report name and --passes id. */
  readonly name: string;
  /** The --method value that selects this pass (several passes may share one). */
  readonly method: string;
  /** Op types the pass rewrites (ORT's TargetOpTypes, MLIR's root op). */
  readonly ops: readonly string[];
  /** Pure: checks attributes and reads the weight; declines with a reason. */
  match(layer: LayerInfo, cx: PassContext): M | Skip;
  /** Ranks under a policy, or a Skip (e.g. rank 0: leave the layer alone). */
  chooseRanks(m: M, policy: RankPolicy): number[] | Skip;
  /** Original cost and cost at the given ranks. */
  cost(m: M, ranks: readonly number[]): CostPair;
  /** Whether a choice at this cost is worth making; default paysInParamsAndMacs. */
  pays?(c: CostPair): boolean;
  /** Factorizes and rewrites; the graph is untouched when it returns a Skip. */
  apply(m: M, ranks: readonly number[], cx: PassContext): Applied | Skip;
  /**
   * Optional: the errors apply would report at these ranks, without touching the graph
   * (the factors are cached on the match, so a following apply reuses them).
   */
  estimate?(m: M, ranks: readonly number[], cx: PassContext): { relError: number; dataError?: number } | Skip;
  /**
   * Optional: about how many flops one fit at these ranks costs (its dominant products; a
   * count, not a timing): what bounds the fits made only to compare methods (challenge.ts).
   * Absent: cheap at any size.
   */
  fitWork?(m: M, ranks: readonly number[]): number;
  /** The largest rank of each factor this layer takes (beyond it the numerics clamp or fail): how plans are checked. */
  rankLimits(m: M): number[];
  /** Names of the ranks in messages, one per limit; default "rank" (one) or "rank i". */
  readonly rankNames?: readonly string[];
  /** Constraints between the ranks beyond each one's range (a plan is refused when this says why). */
  checkRanks?(m: M, ranks: readonly number[]): string | undefined;
}

/** A constant factor of an emitted chain (a chain node's weight), read on demand. */
export interface ChainFactor { name: string; dims: number[]; dataType: number; read: (ext: ExternalBytes | undefined) => Float32Array }

/** A layer as it was before its rewrite, and the chain that replaced it (merge.ts). */
export interface FactoredLayer {
  name: string;
  /** A copy of the node before the rewrite. */
  original: NodeProto;
  weightInput: number;
  /** The original weight's dims. */
  weightDims: number[];
  /** The chain's node names, in order. */
  nodes: string[];
}

/** A pass's answer when it competes with the preferred pass (`challenge`). */
export interface Challenge {
  /** For the layer's report: what was compared. */
  note: string;
  /** The challenger, bound to the layer, and its ranks: use it instead. */
  use?: { bound: BoundPass; ranks: number[] };
}

export interface LayerPass<M, Meth extends string = string> extends LayerRewrite<M> {
  readonly method: Meth;
  /** Preference among the passes that accept a layer (higher first; ties keep PASSES order): MLIR's PatternBenefit. */
  readonly benefit: number;
  /**
   * Cheap check on attributes and shapes only (no weight read): whether dispatch routes
   * the layer to this pass. The Skip's reason reads after "--method M " (e.g. "applies to
   * 1x1 convs only"). Absent: every layer of `ops`. `match` may still decline.
   */
  accepts?(layer: LayerInfo): true | Skip;
  /**
   * The inverse for --stages: the weight the chain this pass emitted computes, in the
   * original weight's layout, from the chain's nodes and their constant factors.
   */
  compose(chain: readonly NodeProto[], factors: readonly ChainFactor[], f: FactoredLayer, ext: ExternalBytes | undefined): Float32Array | string;
  /**
   * Optional, under --method auto: compete with the choice so far (already bound, at its
   * ranks; `policy`: the run's rank policy) on a layer this pass also accepts; undefined
   * when there is nothing to compare.
   */
  challenge?(layer: LayerInfo, preferred: BoundPass, ranks: readonly number[], cx: PassContext, policy?: RankPolicy): Challenge | undefined;
}

/**
 * A pass closed over its match of one layer (registry.ts `bind`): callers choose ranks,
 * price, judge and apply without ever holding the match.
 */
export interface BoundPass {
  readonly name: string;
  readonly method: string;
  chooseRanks(policy: RankPolicy): number[] | Skip;
  cost(ranks: readonly number[]): CostPair;
  pays(c: CostPair): boolean;
  apply(ranks: readonly number[], cx: PassContext): Applied | Skip;
  /** Undefined when the pass cannot estimate without applying. */
  readonly estimate?: (ranks: readonly number[], cx: PassContext) => { relError: number; dataError?: number } | Skip;
  /** The pass's fitWork at these ranks (0 when it has none). */
  fitWork(ranks: readonly number[]): number;
  /** Why these ranks do not fit the layer (count, integers, range, the pass's own constraints), or undefined. */
  rankProblem(ranks: readonly number[]): string | undefined;
}

/** What every match carries about its layer. */
export interface MatchBase {
  layer: LayerInfo;
  node: NodeProto;
  graph: Graph;
  /** Element type of the weight (factors are stored back in the same type). */
  dataType: number;
}

/** Unique initializer name derived from the node, e.g. `conv1/lr_a`. */
export function derivedName(cx: PassContext, node: NodeProto, suffix: string): string {
  return cx.model.uniqueName(`${node.name || node.output[0] || node.opType}/${suffix}`);
}

export type TensorFactory = (name: string, dims: number[], data: Float32Array, dataType: number) => TensorProto;
