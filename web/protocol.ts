/** Messages between the page (main.ts) and its worker (worker.ts). */
import type { Report } from '../src/report/report.js';

/** What the user asked for, as the form gives it: numbers already parsed, the shape as typed. */
export interface RunRequest {
  type: 'run';
  name: string;
  bytes: ArrayBuffer;
  method: string;
  goal: 'energy' | 'rankRatio' | 'rank';
  value: number;
  seed: number;
  /** `NAME:1x3x48x192`, space- or comma-separated for several inputs; '' for none. */
  shapes: string;
  latency: boolean;
}

export type WorkerMessage =
  | { type: 'ready'; methods: readonly string[]; maxBytes: number }
  | { type: 'stage'; stage: string }
  | { type: 'progress'; done: number; total: number; layer: string }
  /** `text` is what the CLI prints, `html` the page `--html` writes. */
  | { type: 'done'; bytes: ArrayBuffer; report: Report; text: string; html: string; pass: boolean; seconds: number }
  | { type: 'error'; message: string };
