/**
 * Atomic writes: a temp file in the target's folder, fsync, rename. Temp names are tracked
 * so an interrupted process removes its own, and temps of dead processes are found later.
 * Every function takes an optional fs-like object so tests can inject failures.
 */
import * as fs from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import * as path from 'node:path';
import { LrError } from '../errors.js';
import { errCode, errText, nodeFs, writeFully, type FsLike } from './fsio.js';

/** Temp names are short (`.onnx-lr-<pid>-<n>.tmp`), so any legal target name still has a legal temp name. */
const TEMP_PREFIX = '.onnx-lr-';
const TEMP_RE = /^\.onnx-lr-(\d+)-\d+\.tmp(?:\.bak|\.keep)?$/;
/** Temps of earlier versions: `.NAME.tmp-<pid>-<n>`. */
const OLD_TEMP_RE = /^\..*\.tmp-(\d+)-\d+(?:\.bak)?$/;

/**
 * Paths to remove if the process is interrupted or exits while they exist: temp files
 * and output files created but not yet referenced. This is module state because a signal
 * handler is called with nothing but the signal: it cannot be handed the writes in flight.
 * Entries are removed as soon as a write commits or fails.
 */
const live = new Set<string>();

function removeLive(): void {
  for (const p of live) {
    // A file, or a folder of them (a working copy): removed either way.
    try { fs.rmSync(p, { recursive: true, force: true }); } catch { /* already gone */ }
  }
  live.clear();
}

function onSignal(signal: NodeJS.Signals): void {
  removeLive();
  // Alone, the handler dies by the signal as the default action would (exit 130/143 in
  // a shell); when another part of the program also listens, the decision is theirs.
  process.removeListener(signal, onSignal);
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

/**
 * Removes `p` if the process is interrupted (SIGINT, SIGTERM) or exits before the
 * returned function is called. SIGKILL cannot be caught: removeStaleTemps clears up after it.
 */
export function removeOnInterrupt(p: string): () => void {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    if (!process.listeners(sig).includes(onSignal)) process.on(sig, onSignal);
  }
  if (!process.listeners('exit').includes(removeLive)) process.on('exit', removeLive);
  live.add(p);
  return () => { live.delete(p); };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errCode(e) !== 'ESRCH'; // EPERM: alive, owned by someone else
  }
}

/**
 * Calls `remove` on each entry of `dir` whose name `pidOf` reads the pid of a process no
 * longer running from (never this one), when `ours` accepts its lstat; returns the names
 * removed, never throws.
 */
function removeDeadEntries(dir: string, pidOf: (name: string) => number | undefined, ours: (st: fs.Stats) => boolean, remove: (p: string) => void): string[] {
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return []; }
  const removed: string[] = [];
  for (const name of names) {
    const pid = pidOf(name);
    if (pid === undefined || !Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid || processAlive(pid)) continue;
    try {
      if (!ours(fs.lstatSync(path.join(dir, name)))) continue;
      remove(path.join(dir, name));
      removed.push(name);
    } catch { /* gone, or not ours to remove */ }
  }
  return removed;
}

/**
 * Removes the temp files (and commit backups) that processes no longer running left in
 * `dir` (killed with SIGKILL, or by a power cut). Temps of live processes, including this
 * one, are kept. Returns the names removed; never throws.
 */
export function removeStaleTemps(dir: string): string[] {
  const pidOf = (name: string): number | undefined => {
    const m = TEMP_RE.exec(name) ?? OLD_TEMP_RE.exec(name);
    return m ? Number(m[1]) : undefined;
  };
  // Only regular files: a folder or a device that happens to match the pattern is not ours.
  return removeDeadEntries(dir, pidOf, (st) => st.isFile(), (p) => fs.unlinkSync(p));
}

/**
 * Working folders in the temp folder: `onnx-lr-work-<host>-<pid>-XXXXXX`, <host> a hash of
 * this machine's host name (a temp folder can be shared with containers or other machines,
 * whose pids mean nothing here) and <pid> the process using it.
 */
const WORK_PREFIX = 'onnx-lr-work-';
const WORK_RE = /^onnx-lr-work-([0-9a-f]{8})-(\d+)-[A-Za-z0-9]{6}$/;

/** 32-bit FNV-1a of the host name, as 8 hex digits. */
function hostTag(): string {
  let h = 0x811c9dc5;
  for (const c of Buffer.from(hostname(), 'utf8')) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

/**
 * A new working folder in the temp folder (a model copy a run works on), named for this
 * machine and process so that once the process is gone (a SIGKILL: --max-memory, the OOM
 * killer) its supervisor, or the next run that makes one, finds it (removeStaleWorkDirs);
 * the stale ones of dead processes are removed first. Also removed if the process is
 * interrupted or exits; the returned `dispose` removes it now.
 */
export function makeWorkDir(): { dir: string; dispose: () => void } {
  removeStaleWorkDirs();
  const dir = fs.mkdtempSync(path.join(tmpdir(), `${WORK_PREFIX}${hostTag()}-${process.pid}-`));
  const forget = removeOnInterrupt(dir);
  return { dir, dispose: () => { fs.rmSync(dir, { recursive: true, force: true }); forget(); } };
}

/**
 * Removes the working folders (makeWorkDir) in `dir` of processes of this machine no longer
 * running (only `pid`'s when given), owned by this user; returns their names, never throws.
 */
export function removeStaleWorkDirs(dir = tmpdir(), pid?: number): string[] {
  const host = hostTag();
  const pidOf = (name: string): number | undefined => {
    const m = WORK_RE.exec(name);
    return m && m[1] === host && (pid === undefined || Number(m[2]) === pid) ? Number(m[2]) : undefined;
  };
  const uid = process.getuid?.();
  // Only real folders of this user: a link, a file or another user's folder is not ours.
  return removeDeadEntries(dir, pidOf, (st) => st.isDirectory() && (uid === undefined || st.uid === uid), (p) => fs.rmSync(p, { recursive: true, force: true }));
}

/**
 * A file being written under a temp name (`.onnx-lr-<pid>-<n>.tmp` beside NAME) until
 * commitFiles renames it into place. discard() removes it; both are idempotent. Until then
 * it is removed if the process is interrupted; creating one first removes the stale temps
 * of dead processes in its folder.
 */
export class TempFile {
  readonly tmpPath: string;
  bytesWritten = 0;
  private fd: number | undefined;
  private untrack: () => void = () => {};

  constructor(readonly finalPath: string, private readonly fsx: FsLike = nodeFs) {
    const dir = path.dirname(finalPath);
    removeStaleTemps(dir);
    // Exclusive create picks a free name without any shared counter.
    for (let n = 0; ; n++) {
      const candidate = path.join(dir, `${TEMP_PREFIX}${process.pid}-${n}.tmp`);
      // Links derived from an earlier temp of this name (a backup, a kept data file) may outlive it.
      if (n < 1000 && (fs.existsSync(`${candidate}.bak`) || fs.existsSync(`${candidate}.keep`))) continue;
      try {
        this.fd = fsx.openSync(candidate, 'wx', 0o666);
        this.tmpPath = candidate;
        this.untrack = removeOnInterrupt(candidate);
        return;
      } catch (e) {
        if (errCode(e) === 'EEXIST' && n < 1000) continue;
        if (errCode(e) === 'ENOENT') throw new LrError('io', `cannot write ${finalPath}: no such folder ${dir}`);
        throw new LrError('io', `cannot create a temp file beside ${finalPath}: ${errText(e)}`);
      }
    }
  }

  write(data: Uint8Array): void {
    if (this.fd === undefined) throw new Error(`${this.tmpPath} is already closed`);
    try {
      writeFully(this.fd, data, this.fsx);
    } catch (e) {
      throw new LrError('io', `cannot write ${this.finalPath}: ${errText(e)}`);
    }
    this.bytesWritten += data.length;
  }

  /** Flushes to disk and closes (before the rename, so a crash never leaves a short file). */
  finish(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    try {
      this.fsx.fsyncSync(fd);
    } catch (e) {
      try { this.fsx.closeSync(fd); } catch { /* already failing */ }
      throw new LrError('io', `cannot write ${this.finalPath}: ${errText(e)}`);
    }
    this.fsx.closeSync(fd);
  }

  /** Renames the finished temp to `to` (default: its final path); it is no longer a temp after. */
  moveTo(to: string = this.finalPath): void {
    try {
      this.fsx.renameSync(this.tmpPath, to);
    } catch (e) {
      throw new LrError('io', `cannot rename ${this.tmpPath} to ${to}: ${errText(e)}`);
    }
    this.untrack();
  }

  discard(): void {
    if (this.fd !== undefined) {
      try { this.fsx.closeSync(this.fd); } catch { /* best effort */ }
      this.fd = undefined;
    }
    try { this.fsx.unlinkSync(this.tmpPath); } catch { /* already gone */ }
    this.untrack();
  }
}

/**
 * Renames finished temp files into place, the last one last (the model file goes last so
 * that it never points at missing data). If a rename fails, files already moved are put
 * back (earlier contents restored from hard-link backups) and all temps are removed.
 */
export function commitFiles(files: readonly TempFile[], fsx: FsLike = nodeFs): void {
  const moved: { file: TempFile; backup?: string; existed: boolean }[] = [];
  const backups: string[] = [];
  const untrack: (() => void)[] = [];
  try {
    for (const f of files) f.finish();
    for (const f of files) {
      let backup: string | undefined;
      let existed = true;
      const candidate = `${f.tmpPath}.bak`;
      try {
        fsx.linkSync(f.finalPath, candidate);
        backup = candidate;
        backups.push(candidate);
        untrack.push(removeOnInterrupt(candidate));
      } catch (e) {
        if (errCode(e) === 'ENOENT') existed = false; // nothing to restore later
      }
      f.moveTo();
      moved.push({ file: f, backup, existed });
    }
  } catch (e) {
    for (const m of moved.reverse()) {
      try {
        if (m.backup) fsx.renameSync(m.backup, m.file.finalPath);
        else if (!m.existed) fsx.unlinkSync(m.file.finalPath);
      } catch { /* best effort: report the original failure */ }
    }
    for (const f of files) f.discard();
    for (const b of backups) { try { fsx.unlinkSync(b); } catch { /* restored or gone */ } }
    for (const u of untrack) u();
    throw e;
  }
  for (const b of backups) { try { fsx.unlinkSync(b); } catch { /* gone */ } }
  for (const u of untrack) u();
}

export type ChunkProducer = (write: (chunk: Uint8Array) => void) => void;

/**
 * Writes `content` (byte parts, or a producer that calls `write` repeatedly) to `file`
 * atomically. On any failure no temp file is left and an existing `file` is untouched.
 * Returns the number of bytes written.
 */
export function writeFileAtomic(file: string, content: Iterable<Uint8Array> | ChunkProducer, opts: { fs?: FsLike } = {}): number {
  const fsx = opts.fs ?? nodeFs;
  const tmp = new TempFile(file, fsx);
  try {
    if (typeof content === 'function') content((chunk) => tmp.write(chunk));
    else for (const part of content) tmp.write(part);
    commitFiles([tmp], fsx);
  } catch (e) {
    tmp.discard();
    throw e;
  }
  return tmp.bytesWritten;
}
