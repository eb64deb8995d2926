/** The CLI's output channels: lines to stdout and stderr, and the live progress line. */
import { escapeControls, type TextSink } from './supervise.js';

export interface Io {
  out(s: string): void;
  err(s: string): void;
  /** Raw writes for a live progress line; set only when stderr is a terminal. */
  live?(s: string): void;
}

/** Lines to stdout and `err`; the live progress line only when `err` is a terminal. */
export function stdio(err: TextSink = process.stderr): Io {
  return {
    out: (s) => { process.stdout.write(`${s}\n`); },
    err: (s) => { err.write(`${s}\n`); },
    ...(err.isTTY === true && { live: (s: string) => { err.write(s); } }),
  };
}

/** The progress line's own "to column 0, clear the line"; all other control characters are escaped. */
const CLEAR_LINE = '\r\x1b[K';

/**
 * Model, layer and file names reach the output: escaped here, once for every command, so
 * a name cannot move the cursor, retitle the terminal or hide text.
 */
export function escaping(io: Io): Io {
  const live = io.live;
  return {
    out: (s) => { io.out(escapeControls(s)); },
    err: (s) => { io.err(escapeControls(s)); },
    ...(live && { live: (s: string) => { live(s.split(CLEAR_LINE).map(escapeControls).join(CLEAR_LINE)); } }),
  };
}
