/**
 * NumPy .npy / .npz reading and writing, so users can hand us real inputs
 * (`--input NAME:file.npy`) and we can hand back tensors numpy reads.
 *
 * .npy (format spec: numpy/lib/format.py): magic "\x93NUMPY", version byte pair, header
 * length (u16 LE in v1, u32 LE in v2/v3), then a Python dict literal
 * `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with spaces and a
 * newline, then the raw C-order data. v3 only differs by allowing UTF-8 in the header.
 *
 * .npz is a zip of `<name>.npy` entries. We read the central directory (the local headers
 * written by numpy carry Zip64 placeholder sizes, so only the central directory is
 * trustworthy), support stored and deflate entries, and check CRC-32. Files are read only
 * when regular, and sizes they declare are bounded before allocation (util/bounds.ts).
 */
import { writeFileSync } from 'node:fs';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { err, ok, type Result } from '../errors.js';
import { DEFAULT_MAX_INPUT_BYTES, limitText, readSideInput, showBytes } from '../util/bounds.js';

export type NpyDtype = 'f2' | 'f4' | 'f8' | 'i1' | 'i2' | 'i4' | 'i8' | 'u1' | 'u2' | 'u4' | 'u8' | 'b1';

/** f2 is stored as raw IEEE half bits (Uint16Array); b1 as 0/1 bytes (Uint8Array). */
export type NpyData =
  | Float32Array | Float64Array | Int8Array | Int16Array | Int32Array | BigInt64Array
  | Uint8Array | Uint16Array | Uint32Array | BigUint64Array;

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  data: NpyData;
}

interface DtypeInfo { size: number; make: (buf: ArrayBuffer) => NpyData }

const DTYPES: Record<NpyDtype, DtypeInfo> = {
  f2: { size: 2, make: (b) => new Uint16Array(b) },
  f4: { size: 4, make: (b) => new Float32Array(b) },
  f8: { size: 8, make: (b) => new Float64Array(b) },
  i1: { size: 1, make: (b) => new Int8Array(b) },
  i2: { size: 2, make: (b) => new Int16Array(b) },
  i4: { size: 4, make: (b) => new Int32Array(b) },
  i8: { size: 8, make: (b) => new BigInt64Array(b) },
  u1: { size: 1, make: (b) => new Uint8Array(b) },
  u2: { size: 2, make: (b) => new Uint16Array(b) },
  u4: { size: 4, make: (b) => new Uint32Array(b) },
  u8: { size: 8, make: (b) => new BigUint64Array(b) },
  b1: { size: 1, make: (b) => new Uint8Array(b) },
};

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

// ---------------------------------------------------------------- .npy reading

/** Parses .npy bytes; `label` (usually the file name) prefixes every error message. */
export function parseNpy(bytes: Uint8Array, label = '<npy>'): Result<NpyArray> {
  const fail = (msg: string) => err('parse', `${label}: ${msg}`);
  if (bytes.length < 10 || MAGIC.some((m, i) => bytes[i] !== m)) return fail('not a .npy file (bad magic)');
  const major = bytes[6]!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number;
  let start: number;
  if (major === 1) { headerLen = view.getUint16(8, true); start = 10; }
  else if (major === 2 || major === 3) {
    if (bytes.length < 12) return fail('truncated header');
    headerLen = view.getUint32(8, true); start = 12;
  } else return fail(`unsupported .npy format version ${major}.${bytes[7]}`);
  if (start + headerLen > bytes.length) return fail('truncated header');
  const headerText = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(start, start + headerLen));
  const header = parseHeader(headerText);
  if (!header.ok) return fail(header.error.message);
  const { descr, fortran, shape } = header.value;
  if (fortran && shape.length > 1) {
    return fail('fortran_order=True is not supported; save with np.ascontiguousarray(a)');
  }
  const dt = parseDescr(descr);
  if (!dt.ok) return fail(dt.error.message);
  const { dtype, bigEndian } = dt.value;
  const info = DTYPES[dtype];
  const count = shape.reduce((a, b) => a * b, 1);
  const dataStart = start + headerLen;
  const nbytes = count * info.size;
  if (!Number.isSafeInteger(nbytes)) return fail(`shape (${shape.join(', ')}) is too large`);
  if (dataStart + nbytes > bytes.length) {
    return fail(`truncated data: shape (${shape.join(', ')}) of ${descr} needs ${nbytes} bytes, file has ${bytes.length - dataStart}`);
  }
  // Copy into a fresh buffer: typed arrays need aligned offsets, callers may keep the data,
  // and Buffer.slice (node) would return a view into a shared pool, not a copy.
  const raw = new Uint8Array(nbytes);
  raw.set(bytes.subarray(dataStart, dataStart + nbytes));
  if (bigEndian && info.size > 1) byteSwap(raw, info.size);
  return ok({ dtype, shape, data: info.make(raw.buffer) });
}

interface Header { descr: string; fortran: boolean; shape: number[] }

/** Parses the header dict literal. Only the three keys numpy writes are accepted. */
function parseHeader(text: string): Result<Header> {
  const bad = (why: string) => err('parse', `bad .npy header (${why}): ${text.trim().slice(0, 120)}`);
  const lit = parsePyLiteral(text.trim());
  if (!lit.ok) return bad(lit.error.message);
  const d = lit.value;
  if (!(d instanceof Map)) return bad('not a dict');
  const descr = d.get('descr');
  const fortran = d.get('fortran_order');
  const shape = d.get('shape');
  if (typeof descr !== 'string') {
    return bad(Array.isArray(descr) ? 'structured dtypes are not supported' : "missing 'descr'");
  }
  if (typeof fortran !== 'boolean') return bad("missing 'fortran_order'");
  if (!Array.isArray(shape) || !shape.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0)) {
    return bad("'shape' is not a tuple of non-negative integers");
  }
  return ok({ descr, fortran, shape: shape as number[] });
}

type PyValue = string | number | boolean | null | PyValue[] | Map<string, PyValue>;

/** A tiny parser for the Python literals that appear in .npy headers (dict, tuple, list, str, int, bool). */
function parsePyLiteral(s: string): Result<PyValue> {
  let i = 0;
  const ws = () => { while (i < s.length && /\s/.test(s[i]!)) i++; };
  const value = (): PyValue => {
    ws();
    const c = s[i];
    if (c === '{' || c === '(' || c === '[') {
      const close = c === '{' ? '}' : c === '(' ? ')' : ']';
      i++;
      const items: PyValue[] = [];
      const map = new Map<string, PyValue>();
      for (;;) {
        ws();
        if (s[i] === close) { i++; break; }
        const v = value();
        if (c === '{') {
          ws();
          if (s[i] !== ':') throw new Error(`expected ':' at ${i}`);
          i++;
          if (typeof v !== 'string') throw new Error('dict key is not a string');
          map.set(v, value());
        } else items.push(v);
        ws();
        if (s[i] === ',') { i++; continue; }
        if (s[i] === close) { i++; break; }
        throw new Error(`expected ',' or '${close}' at ${i}`);
      }
      return c === '{' ? map : items;
    }
    if (c === "'" || c === '"') {
      const end = s.indexOf(c, i + 1);
      if (end < 0) throw new Error('unterminated string');
      const str = s.slice(i + 1, end);
      i = end + 1;
      return str;
    }
    const m = /^(True|False|None|-?\d+L?)/.exec(s.slice(i));
    if (!m) throw new Error(`unexpected character at ${i}`);
    i += m[0].length;
    if (m[0] === 'True') return true;
    if (m[0] === 'False') return false;
    if (m[0] === 'None') return null;
    return Number.parseInt(m[0], 10);
  };
  try {
    const v = value();
    ws();
    if (i !== s.length) return err('parse', `trailing text at ${i}`);
    return ok(v);
  } catch (e) {
    return err('parse', (e as Error).message);
  }
}

function parseDescr(descr: string): Result<{ dtype: NpyDtype; bigEndian: boolean }> {
  const m = /^([<>|=]?)([a-zA-Z])(\d+)$/.exec(descr);
  const unsupported = () => err('parse', `unsupported dtype '${descr}' (supported: f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1)`);
  if (!m) return unsupported();
  const [, order, kind, size] = m;
  const key = `${kind}${size}`;
  if (!(key in DTYPES)) return unsupported();
  // '=' is native order; every platform ORT runs on here is little-endian.
  return ok({ dtype: key as NpyDtype, bigEndian: order === '>' });
}

function byteSwap(b: Uint8Array, size: number): void {
  for (let o = 0; o < b.length; o += size) {
    for (let x = 0, y = size - 1; x < y; x++, y--) { const t = b[o + x]!; b[o + x] = b[o + y]!; b[o + y] = t; }
  }
}

// ---------------------------------------------------------------- .npy writing

/** Encodes an array as .npy (v1 header unless it is too long, then v2), little-endian, C order. */
export function encodeNpy(arr: NpyArray): Uint8Array {
  const info = DTYPES[arr.dtype];
  const count = arr.shape.reduce((a, b) => a * b, 1);
  if (arr.data.length !== count) {
    throw new Error(`encodeNpy: data has ${arr.data.length} elements, shape (${arr.shape.join(', ')}) needs ${count}`);
  }
  const order = info.size === 1 ? '|' : '<';
  const shapeText = arr.shape.length === 1 ? `(${arr.shape[0]},)` : `(${arr.shape.join(', ')})`;
  const dict = `{'descr': '${order}${arr.dtype}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // numpy pads so that magic + length field + header is a multiple of 64 and ends in '\n'.
  let major = 1;
  let pre = 10;
  let total = Math.ceil((pre + dict.length + 1) / 64) * 64;
  if (total - pre > 0xffff) { major = 2; pre = 12; total = Math.ceil((pre + dict.length + 1) / 64) * 64; }
  const headerLen = total - pre;
  const header = dict.padEnd(headerLen - 1, ' ') + '\n';
  const nbytes = count * info.size;
  const out = new Uint8Array(total + nbytes);
  out.set(MAGIC, 0);
  out[6] = major; out[7] = 0;
  const view = new DataView(out.buffer);
  if (major === 1) view.setUint16(8, headerLen, true); else view.setUint32(8, headerLen, true);
  for (let k = 0; k < header.length; k++) out[pre + k] = header.charCodeAt(k);
  out.set(new Uint8Array(arr.data.buffer, arr.data.byteOffset, nbytes), total);
  return out;
}

// ---------------------------------------------------------------- .npz (zip)

const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOC = 0x07064b50;
const SIG_CDIR = 0x02014b50;
const SIG_LOCAL = 0x04034b50;

export interface NpzOptions {
  /** Bound on the archive's decoded bytes (all entries), checked before inflating; default 1 GiB. */
  maxBytes?: number;
}

/**
 * Parses .npz bytes into arrays keyed by entry name without the `.npy` suffix. Every offset
 * and length the archive declares is checked against the bytes before it is used, and the
 * declared uncompressed sizes against `maxBytes` before anything is inflated; inflating
 * stops at the declared size (a deflate stream may expand a thousandfold).
 */
export function parseNpz(bytes: Uint8Array, label = '<npz>', opts: NpzOptions = {}): Result<Map<string, NpyArray>> {
  const fail = (msg: string) => err('parse', `${label}: ${msg}`);
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_INPUT_BYTES;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = bytes.length;
  // The end-of-central-directory record sits within the last 22 + 65535 (comment) bytes.
  let eocd = -1;
  for (let p = len - 22; p >= Math.max(0, len - 22 - 0xffff); p--) {
    if (view.getUint32(p, true) === SIG_EOCD) { eocd = p; break; }
  }
  if (eocd < 0) return fail('not a zip/.npz file (no end of central directory)');
  let entries = view.getUint16(eocd + 10, true);
  let cdOffset = view.getUint32(eocd + 16, true);
  if ((entries === 0xffff || cdOffset === 0xffffffff) && eocd >= 20 && view.getUint32(eocd - 20, true) === SIG_EOCD64_LOC) {
    const rec = Number(view.getBigUint64(eocd - 20 + 8, true));
    if (rec + 56 > len || view.getUint32(rec, true) !== SIG_EOCD64) return fail('bad Zip64 end record');
    entries = Number(view.getBigUint64(rec + 32, true));
    cdOffset = Number(view.getBigUint64(rec + 48, true));
  }
  const out = new Map<string, NpyArray>();
  let decoded = 0;
  let p = cdOffset;
  for (let e = 0; e < entries; e++) {
    if (p + 46 > len || view.getUint32(p, true) !== SIG_CDIR) return fail('corrupt central directory');
    const flags = view.getUint16(p + 8, true);
    const method = view.getUint16(p + 10, true);
    const crc = view.getUint32(p + 16, true);
    let csize = view.getUint32(p + 20, true);
    let usize = view.getUint32(p + 24, true);
    const nameLen = view.getUint16(p + 28, true);
    const extraLen = view.getUint16(p + 30, true);
    const commentLen = view.getUint16(p + 32, true);
    let local = view.getUint32(p + 42, true);
    const extraEnd = p + 46 + nameLen + extraLen;
    if (extraEnd + commentLen > len) return fail(`central directory entry ${e + 1} runs past the end of the file`);
    const name = new TextDecoder().decode(bytes.subarray(p + 46, p + 46 + nameLen));
    // Zip64 extra field (id 1): present values replace the 0xffffffff placeholders, in this order.
    for (let x = p + 46 + nameLen; x + 4 <= extraEnd;) {
      const id = view.getUint16(x, true);
      const fieldEnd = x + 4 + view.getUint16(x + 2, true);
      if (fieldEnd > extraEnd) return fail(`entry ${name}: extra field runs past its entry`);
      if (id === 1) {
        let q = x + 4;
        const next = (): number | undefined => {
          if (q + 8 > fieldEnd) return undefined;
          const v = Number(view.getBigUint64(q, true));
          q += 8;
          return v;
        };
        if (usize === 0xffffffff) usize = next() ?? -1;
        if (csize === 0xffffffff) csize = next() ?? -1;
        if (local === 0xffffffff) local = next() ?? -1;
        if (usize < 0 || csize < 0 || local < 0) return fail(`entry ${name}: Zip64 extra field is too short`);
      }
      x = fieldEnd;
    }
    p = extraEnd + commentLen;
    if (flags & 1) return fail(`entry ${name} is encrypted`);
    if (local + 30 > len || view.getUint32(local, true) !== SIG_LOCAL) return fail(`entry ${name}: bad local header`);
    const dataStart = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    if (dataStart + csize > len) return fail(`entry ${name}: truncated`);
    // Refuse on the declared size, before a byte is inflated.
    if (usize > maxBytes - decoded) {
      return err('unsupported', `${label}: entry ${name} declares ${showBytes(usize)} uncompressed${decoded > 0 ? ` (after ${showBytes(decoded)} in earlier entries)` : ''}, over the ${limitText(maxBytes)}`);
    }
    decoded += usize;
    const comp = bytes.subarray(dataStart, dataStart + csize);
    let raw: Uint8Array;
    if (method === 0) raw = comp;
    else if (method === 8) {
      try {
        raw = inflateRawSync(comp, { maxOutputLength: Math.max(usize, 1) });
      } catch (x) {
        const code = (x as NodeJS.ErrnoException).code;
        if (code === 'ERR_BUFFER_TOO_LARGE') return fail(`entry ${name} inflates past its declared size of ${usize} bytes`);
        return fail(`entry ${name}: ${(x as Error).message}`);
      }
    } else return fail(`entry ${name}: unsupported compression method ${method} (only stored and deflate)`);
    if (raw.length !== usize) return fail(`entry ${name}: size ${raw.length} != ${usize}`);
    if (crc32(raw) !== crc) return fail(`entry ${name}: CRC mismatch`);
    const arr = parseNpy(raw, `${label}:${name}`);
    if (!arr.ok) return arr;
    out.set(name.endsWith('.npy') ? name.slice(0, -4) : name, arr.value);
  }
  return ok(out);
}

/** Encodes arrays as .npz; `compress` uses deflate (np.savez_compressed), otherwise stored (np.savez). */
export function encodeNpz(arrays: Record<string, NpyArray> | Map<string, NpyArray>, opts: { compress?: boolean } = {}): Uint8Array {
  const list = arrays instanceof Map ? [...arrays] : Object.entries(arrays);
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (const [key, arr] of list) {
    const name = new TextEncoder().encode(`${key}.npy`);
    const raw = encodeNpy(arr);
    const data = opts.compress ? deflateRawSync(raw) : raw;
    const crc = crc32(raw);
    if (offset + 30 + name.length + data.length > 0xffffffff) throw new Error('encodeNpz: archives over 4 GiB are not supported');
    const method = opts.compress ? 8 : 0;
    const lh = new Uint8Array(30 + name.length);
    const lv = new DataView(lh.buffer);
    lv.setUint32(0, SIG_LOCAL, true); lv.setUint16(4, 20, true); lv.setUint16(8, method, true);
    lv.setUint16(12, 0x21, true); // DOS date 1980-01-01: fixed so output bytes are deterministic
    lv.setUint32(14, crc, true); lv.setUint32(18, data.length, true); lv.setUint32(22, raw.length, true);
    lv.setUint16(26, name.length, true); lh.set(name, 30);
    const ch = new Uint8Array(46 + name.length);
    const cv = new DataView(ch.buffer);
    cv.setUint32(0, SIG_CDIR, true); cv.setUint16(4, 20, true); cv.setUint16(6, 20, true); cv.setUint16(10, method, true);
    cv.setUint16(14, 0x21, true);
    cv.setUint32(16, crc, true); cv.setUint32(20, data.length, true); cv.setUint32(24, raw.length, true);
    cv.setUint16(28, name.length, true); cv.setUint32(42, offset, true); ch.set(name, 46);
    locals.push(lh, data);
    centrals.push(ch);
    offset += lh.length + data.length;
  }
  const cdSize = centrals.reduce((a, c) => a + c.length, 0);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, SIG_EOCD, true); ev.setUint16(8, list.length, true); ev.setUint16(10, list.length, true);
  ev.setUint32(12, cdSize, true); ev.setUint32(16, offset, true);
  return concat([...locals, ...centrals, end]);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

let crcTable: Uint32Array | undefined;

export function crc32(b: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = crcTable[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------- files

function writeBytes(path: string, bytes: Uint8Array): Result<void> {
  try { writeFileSync(path, bytes); return ok(undefined); } catch (e) {
    return err('io', `cannot write ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Reads a .npy file: a regular file of at most `maxBytes` (default 1 GiB). */
export function readNpy(path: string, opts: { maxBytes?: number } = {}): Result<NpyArray> {
  const b = readSideInput(path, 'array file', opts.maxBytes);
  return b.ok ? parseNpy(b.value, path) : b;
}

/** Reads a .npz file: a regular file of at most `maxBytes`, decoding to at most as many bytes. */
export function readNpz(path: string, opts: NpzOptions = {}): Result<Map<string, NpyArray>> {
  const b = readSideInput(path, 'array file', opts.maxBytes);
  return b.ok ? parseNpz(b.value, path, opts) : b;
}

export function writeNpy(path: string, arr: NpyArray): Result<void> {
  return writeBytes(path, encodeNpy(arr));
}

export function writeNpz(path: string, arrays: Record<string, NpyArray> | Map<string, NpyArray>, opts: { compress?: boolean } = {}): Result<void> {
  return writeBytes(path, encodeNpz(arrays, opts));
}
