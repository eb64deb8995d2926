/**
 * Progress on stderr. On a terminal: one line rewritten in place. Otherwise (logs, CI,
 * pipes): plain lines, at most one per `everyMs`, and none in the first `everyMs`, so
 * short runs stay quiet while a long one shows it is alive and where it is.
 *
 * A layer line says how long the run has taken and, once a layer of the current stage is
 * done, about how long the stage has left: `factorizing: [12/41] conv — 3m10s elapsed,
 * ~7m left`, the rate measured over this stage's layers only (stages differ by orders of
 * magnitude: a sensitivity trial is not a factorization).
 */
export interface Progress {
  stage(text: string): void;
  layer(done: number, total: number, name: string): void;
  /** Clear the terminal line (no-op for logs). */
  end(): void;
}

/** The log form of a progress line (as `createProgress` writes it when not on a terminal). */
const LOG_LINE = /^onnx-lr: (?:[^\n]*…|(?:[^\n]*: )?\[\d+\/\d+\] [^\n]*)$/;

/**
 * Whether one stderr line (without its newline) is a progress line of a log: a stage
 * (`onnx-lr: verifying…`) or a layer (`onnx-lr: factorizing: [2/3] conv_b`). Whether such
 * a line appears depends on how long a run takes, so callers checking stderr for warnings
 * or errors leave these out.
 */
export function isProgressLine(line: string): boolean {
  return LOG_LINE.test(line);
}

/** A duration for people: `42s`, `3m10s`, `1h05m`. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** An estimate, rounded as coarsely as it deserves: `~40s` under a minute, whole minutes (up) past it. */
export function formatEstimate(ms: number): string {
  const s = Math.max(1, Math.round(ms / 1000));
  if (s < 60) return `~${s}s`;
  const m = Math.ceil(s / 60);
  return m < 60 ? `~${m}m` : `~${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

export function createProgress(write: (s: string) => void, tty: boolean, everyMs = 10_000, now = () => Date.now()): Progress {
  let stageText = '';
  const started = now();
  let last = started;
  // When the current run of layer updates began, at which count, and its total: the rate is over these.
  let layersFrom: number | undefined;
  let layersTotal = -1;
  let doneFrom = 0;
  let lastDone = -1;
  const line = (text: string): void => {
    if (tty) { write(`\r\x1b[K${text}`); return; }
    const t = now();
    if (t - last < everyMs) return;
    last = t;
    write(`onnx-lr: ${text}\n`);
  };
  return {
    stage(text) { stageText = text; layersFrom = undefined; line(`${text}…`); },
    layer(done, total, name) {
      const t = now();
      // A new run of layers: a new stage, another total, or the count starting over.
      if (layersFrom === undefined || total !== layersTotal || done < lastDone) { layersFrom = t; layersTotal = total; doneFrom = done; }
      lastDone = done;
      if (done >= total) { if (tty) write('\r\x1b[K'); return; }
      const left = done > doneFrom ? `, ${formatEstimate(((t - layersFrom) / (done - doneFrom)) * (total - done))} left` : '';
      line(`${stageText ? `${stageText}: ` : ''}[${done + 1}/${total}] ${name.slice(0, 60)} — ${formatDuration(t - started)} elapsed${left}`);
    },
    end() { if (tty) write('\r\x1b[K'); },
  };
}
