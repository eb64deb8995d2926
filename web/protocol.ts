/** Messages between the page (main.ts) and its worker (worker.ts). */
import type { Report } from '../src/report/report.js';

/** What the user asked for, as the form gives it: numbers already parsed, the shape as typed. */
export interface RunRequest {
  type: 'run';
  name: string;
  bytes: ArrayBuffer;
  method: string;
  /** A per-layer policy, or an error budget: rel. L2 (`--max-error E`), `cosine:C` or `top1:P`. */
  goal: 'energy' | 'rankRatio' | 'rank' | 'maxError' | 'maxCosine' | 'maxTop1';
  value: number;
  /** Calibration images (`--calib DIR`): an error budget needs them. */
  calib?: CalibRequest;
  /** false: `--no-data-aware` (the budget measures on the images, the layers are fitted without their statistics). */
  dataAware: boolean;
  seed: number;
  /** `NAME:1x3x48x192`, space- or comma-separated for several inputs; '' for none. */
  shapes: string;
  latency: boolean;
}

/** The page's first message: ORT Web's threads (`?threads=N` in the page's address; default pageThreads()'s). */
export interface InitRequest { type: 'init'; threads?: number }

export interface CalibRequest {
  /** The folder's name (or "N images"), for the report. */
  label: string;
  images: { name: string; bytes: ArrayBuffer }[];
  /** `--mean`, `--std`: one value or one per channel; [] for the defaults (0 and 1). */
  mean: number[];
  std: number[];
  /** `--calib-samples`; undefined for the CLI's default. */
  samples?: number;
}

export type WorkerMessage =
  /** `threads`: ORT Web's (more than one when the page is cross-origin isolated). */
  | { type: 'ready'; methods: readonly string[]; maxBytes: number; threads: number }
  | { type: 'stage'; stage: string }
  | { type: 'progress'; done: number; total: number; layer: string }
  /** `text` is what the CLI prints, `html` the page `--html` writes. */
  | { type: 'done'; bytes: ArrayBuffer; report: Report; text: string; html: string; pass: boolean; seconds: number }
  | { type: 'error'; message: string };
