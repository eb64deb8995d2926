/**
 * The per-layer records that reports carry and plans reuse: what happened to each layer,
 * and each layer's measured sensitivity. Owned here, below the optimizer that fills them,
 * so the report and plan modules share them without importing the optimizer.
 */
import type { Cost } from '../rewrite/pass.js';

export interface LayerRecord {
  name: string;
  op: string;
  weightShape: number[];
  /** Where the weight lives: initializer, Constant node, outer scope of a subgraph. */
  where: string;
  pass?: string;
  method?: string;
  ranks?: number[];
  paramsBefore: number;
  paramsAfter: number;
  /** MACs for one run at the shapes used, when known. */
  macsBefore?: number;
  macsAfter?: number;
  /** Relative Frobenius error of the reconstructed weight. */
  relError?: number;
  /** Relative output error on the calibration statistics (data-aware rewrites). */
  dataError?: number;
  /** Time spent on this layer (factorization and rewrite), ms. */
  ms: number;
  skipped?: boolean;
  reason?: string;
  /** The reason as a code (report/kinds.ts skipCodeOf): set on skipped layers in reports. */
  skipCode?: string;
  /** The nodes that replaced the layer, first to last. */
  nodes?: string[];
  /** How the method was chosen, when more than one was tried (--method auto on k×k convs). */
  note?: string;
}

export interface Candidate {
  pass: string;
  ranks: number[];
  after: Cost;
  /** Weight relative error. */
  relError: number;
  /** Model output error with only this layer compressed: the worst output's Σ‖Δy‖² / Σ‖y‖² over the inputs (outputErr2). */
  outErr2: number;
  /** Measured median ms of the chain alone, when per-layer latency was measured. */
  ms?: number;
  /** The layer's own relative output error (optimize/predict-sensitivity.ts): what a predicted outErr2 is scaled from. */
  layerError?: number;
  /** Whether outErr2 was measured in ORT (true) or predicted from layerError (false). */
  measured?: boolean;
  /** The prediction beside a measured outErr2, when every rung was measured (--measure-all-rungs). */
  predictedErr2?: number;
}

export interface LayerSensitivity {
  name: string;
  op: string;
  before: Cost;
  /** MACs of the layer at the known shapes (scales per-position costs), if known. */
  macs?: number;
  candidates: Candidate[];
  /** Measured median ms of the original layer alone, when per-layer latency was measured. */
  ms?: number;
  /** Why the layer has no candidates. */
  reason?: string;
  /** The multiple the candidate ranks were rounded up to (absent: none). */
  align?: number;
}
