/**
 * Progress on stderr. On a terminal: one line rewritten in place. Otherwise (logs, CI,
 * pipes): plain lines, at most one per `everyMs`, and none in the first `everyMs`, so
 * short runs stay quiet while a long one shows it is alive and where it is.
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

export function createProgress(write: (s: string) => void, tty: boolean, everyMs = 10_000, now = () => Date.now()): Progress {
  let stageText = '';
  let last = now();
  const line = (text: string): void => {
    if (tty) { write(`\r\x1b[K${text}`); return; }
    const t = now();
    if (t - last < everyMs) return;
    last = t;
    write(`onnx-lr: ${text}\n`);
  };
  return {
    stage(text) { stageText = text; line(`${text}…`); },
    layer(done, total, name) {
      if (done >= total) { if (tty) write('\r\x1b[K'); return; }
      line(`${stageText ? `${stageText}: ` : ''}[${done + 1}/${total}] ${name.slice(0, 60)}`);
    },
    end() { if (tty) write('\r\x1b[K'); },
  };
}
