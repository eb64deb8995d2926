/**
 * Images as calibration samples: decode PNG (pngjs) or JPEG (jpeg-js) to RGB, resize
 * bilinearly, scale to [0, 1], normalise per channel and lay out as NCHW or NHWC.
 *
 * Conventions (documented, relied on by tests):
 * - the format is taken from the file's magic bytes, not its extension;
 * - alpha is dropped (no compositing); 16-bit PNGs are rescaled to 8 bits by pngjs;
 * - bilinear resize uses half-pixel centres without antialiasing: source coordinate
 *   `(dst + 0.5)·in/out − 0.5`, clamped to the image (OpenCV INTER_LINEAR,
 *   torch `interpolate(mode='bilinear', align_corners=False)`);
 * - a one-channel input gets luminance 0.299·R + 0.587·G + 0.114·B (after scaling);
 * - value = (pixel/255 − mean[c]) / std[c];
 * - the size a header declares is bounded before decoding (a 74-byte PNG can declare
 *   60000×60000 pixels).
 */
import { inflateSync } from 'node:zlib';
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import { err, ok, type Result } from '../errors.js';
import { DEFAULT_MAX_INPUT_BYTES, limitText, showBytes } from '../util/bounds.js';

export interface RgbaImage {
  width: number;
  height: number;
  /** 4 bytes per pixel, row-major. */
  data: Uint8Array;
}

export type Layout = 'nchw' | 'nhwc';

export interface ImageTransform {
  height: number;
  width: number;
  /** 3 (RGB) or 1 (luminance). */
  channels: number;
  /** One value per channel (or one for all); default 0. */
  mean?: readonly number[];
  /** One value per channel (or one for all); default 1. */
  std?: readonly number[];
  layout?: Layout;
}

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export function imageKind(bytes: Uint8Array): 'png' | 'jpeg' | undefined {
  if (bytes.length >= 8 && PNG_MAGIC.every((b, i) => bytes[i] === b)) return 'png';
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpeg';
  return undefined;
}

const oneLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split('\n')[0]!.trim();

/** Bytes one pixel takes once decoded: planar RGB float32 (the largest copy made of it). */
export const DECODED_BYTES_PER_PIXEL = 12;

/** Width and height from a PNG's IHDR, or undefined when the header is not there. */
function pngDims(b: Uint8Array): { width: number; height: number; interlaced: boolean } | undefined {
  // Signature (8), then the IHDR chunk: length (4), "IHDR", width, height (big-endian), depth, colour, compression, filter, interlace.
  if (b.length < 29 || b[12] !== 0x49 || b[13] !== 0x48 || b[14] !== 0x44 || b[15] !== 0x52) return undefined;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { width: v.getUint32(16), height: v.getUint32(20), interlaced: b[28] !== 0 };
}

/** Width and height from a JPEG's first SOF marker, or undefined when none comes before the scan. */
function jpegDims(b: Uint8Array): { width: number; height: number } | undefined {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let p = 2;
  while (p + 4 <= b.length) {
    if (b[p] !== 0xff) return undefined;
    const m = b[p + 1]!;
    if (m === 0xff) { p++; continue; } // fill byte
    if (m === 0x01 || (m >= 0xd0 && m <= 0xd8)) { p += 2; continue; } // markers without a length
    if (m === 0xda || m === 0xd9) return undefined; // scan data or end before any frame header
    const len = v.getUint16(p + 2);
    const sof = m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;
    if (sof) return p + 9 <= b.length ? { height: v.getUint16(p + 5), width: v.getUint16(p + 7) } : undefined;
    p += 2 + len;
  }
  return undefined;
}

/** The IDAT payload of a PNG (for the inflate bound of interlaced images, which pngjs inflates without one). */
function pngIdat(b: Uint8Array): Uint8Array {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const parts: Uint8Array[] = [];
  for (let p = 8; p + 12 <= b.length;) {
    const len = v.getUint32(p);
    const type = String.fromCharCode(b[p + 4]!, b[p + 5]!, b[p + 6]!, b[p + 7]!);
    if (p + 12 + len > b.length) break;
    if (type === 'IDAT') parts.push(b.subarray(p + 8, p + 8 + len));
    if (type === 'IEND') break;
    p += 12 + len;
  }
  return Buffer.concat(parts);
}

/**
 * Refuses an image whose header declares more pixels than `maxBytes` allows decoded
 * (DECODED_BYTES_PER_PIXEL each), before any pixel is decoded.
 */
function checkDeclaredSize(bytes: Uint8Array, kind: 'png' | 'jpeg', label: string, maxBytes: number): Result<void> {
  const dims = kind === 'png' ? pngDims(bytes) : jpegDims(bytes);
  if (!dims) return ok(undefined); // the decoder reports the broken header
  const pixels = dims.width * dims.height;
  if (pixels * DECODED_BYTES_PER_PIXEL > maxBytes) {
    const mp = (x: number): string => (x / 1e6).toFixed(1);
    return err('unsupported', `${label}: image is ${dims.width}x${dims.height} (${mp(pixels)} Mpixel, ${showBytes(pixels * DECODED_BYTES_PER_PIXEL)} decoded), over the ${limitText(maxBytes)}: at most ${mp(Math.floor(maxBytes / DECODED_BYTES_PER_PIXEL))} Mpixel`);
  }
  if (kind === 'png' && 'interlaced' in dims && dims.interlaced) {
    // Interlaced rows hold at most 8 bytes per pixel plus a filter byte per row of each pass.
    const bound = Math.max(1, Math.min(maxBytes, pixels * 8 + 15 * (dims.height + 8)));
    try {
      inflateSync(pngIdat(bytes), { maxOutputLength: bound });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') return err('parse', `${label}: cannot decode PNG: its image data inflates past ${dims.width}x${dims.height} pixels`);
      // Other inflate errors: pngjs reports them.
    }
  }
  return ok(undefined);
}

/**
 * Decodes PNG or JPEG bytes; `label` (the file name) prefixes every error. The size the
 * header declares is checked against `maxBytes` (default 1 GiB) before decoding.
 */
export function decodeImage(bytes: Uint8Array, label: string, maxBytes: number = DEFAULT_MAX_INPUT_BYTES): Result<RgbaImage> {
  const kind = imageKind(bytes);
  if (!kind) return err('parse', `${label}: not a PNG or JPEG image`);
  const size = checkDeclaredSize(bytes, kind, label, maxBytes);
  if (!size.ok) return size;
  try {
    if (kind === 'png') {
      const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const png = pngjs.PNG.sync.read(buf);
      return ok({ width: png.width, height: png.height, data: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.byteLength) });
    }
    const img = jpeg.decode(bytes, {
      useTArray: true, formatAsRGBA: true,
      // Also bounded here, in case the frame header was not found before the decoder's.
      maxResolutionInMP: maxBytes / DECODED_BYTES_PER_PIXEL / 1e6, maxMemoryUsageInMB: Math.ceil(maxBytes / 2 ** 20),
    });
    return ok({ width: img.width, height: img.height, data: img.data });
  } catch (e) {
    return err('parse', `${label}: cannot decode ${kind === 'png' ? 'PNG' : 'JPEG'}: ${oneLine(e)}`);
  }
}

/** Planar [3, h, w] RGB in [0, 1] from an RGBA image. */
function toPlanar(img: RgbaImage): Float32Array {
  const n = img.width * img.height;
  const out = new Float32Array(3 * n);
  for (let p = 0; p < n; p++) {
    out[p] = img.data[4 * p]! / 255;
    out[n + p] = img.data[4 * p + 1]! / 255;
    out[2 * n + p] = img.data[4 * p + 2]! / 255;
  }
  return out;
}

/** Source index pairs and weights of a half-pixel bilinear resize along one axis. */
function axisTaps(inSize: number, outSize: number): { i0: Int32Array; i1: Int32Array; w: Float64Array } {
  const i0 = new Int32Array(outSize), i1 = new Int32Array(outSize), w = new Float64Array(outSize);
  const scale = inSize / outSize;
  for (let o = 0; o < outSize; o++) {
    const s = Math.min(Math.max((o + 0.5) * scale - 0.5, 0), inSize - 1);
    const a = Math.floor(s);
    i0[o] = a;
    i1[o] = Math.min(a + 1, inSize - 1);
    w[o] = s - a;
  }
  return { i0, i1, w };
}

/**
 * Bilinear resize of planar data [c, h, w] to [c, outH, outW] (half-pixel centres, see
 * the file comment). Returns the input unchanged when the size already matches.
 */
export function resizeBilinear(src: Float32Array, c: number, h: number, w: number, outH: number, outW: number): Float32Array {
  if (h === outH && w === outW) return src;
  const ty = axisTaps(h, outH);
  const tx = axisTaps(w, outW);
  const out = new Float32Array(c * outH * outW);
  for (let ch = 0; ch < c; ch++) {
    const base = ch * h * w;
    const obase = ch * outH * outW;
    for (let y = 0; y < outH; y++) {
      const r0 = base + ty.i0[y]! * w, r1 = base + ty.i1[y]! * w, wy = ty.w[y]!;
      for (let x = 0; x < outW; x++) {
        const x0 = tx.i0[x]!, x1 = tx.i1[x]!, wx = tx.w[x]!;
        const top = src[r0 + x0]! + (src[r0 + x1]! - src[r0 + x0]!) * wx;
        const bot = src[r1 + x0]! + (src[r1 + x1]! - src[r1 + x0]!) * wx;
        out[obase + y * outW + x] = top + (bot - top) * wy;
      }
    }
  }
  return out;
}

/** Per-channel values of mean/std: one per channel, or one for all. */
function perChannel(v: readonly number[] | undefined, channels: number, dflt: number): number[] {
  if (!v || v.length === 0) return new Array<number>(channels).fill(dflt);
  return v.length === 1 ? new Array<number>(channels).fill(v[0]!) : [...v];
}

/** Checks mean/std against a channel count; returns a reason when they do not fit. */
export function checkNormalisation(channels: number, mean?: readonly number[], std?: readonly number[]): string | undefined {
  for (const [what, v] of [['mean', mean], ['std', std]] as const) {
    if (v && v.length !== 0 && v.length !== 1 && v.length !== channels) {
      return `${what} has ${v.length} values, the input has ${channels} channel${channels === 1 ? '' : 's'}`;
    }
    if (v && v.some((x) => !Number.isFinite(x))) return `${what} values must be finite numbers`;
  }
  if (std && std.some((x) => x === 0)) return 'std values must be non-zero';
  return undefined;
}

/**
 * The sample tensor data of one image: [channels, height, width] (nchw) or
 * [height, width, channels] (nhwc), resized, scaled and normalised. The caller adds
 * the batch axis.
 */
export function imageToTensor(img: RgbaImage, t: ImageTransform): Float32Array {
  const { height: H, width: W, channels: C } = t;
  if (C !== 1 && C !== 3) throw new Error(`imageToTensor: ${C} channels (only 1 or 3)`);
  let planar = resizeBilinear(toPlanar(img), 3, img.height, img.width, H, W);
  const n = H * W;
  if (C === 1) {
    const gray = new Float32Array(n);
    for (let p = 0; p < n; p++) gray[p] = 0.299 * planar[p]! + 0.587 * planar[n + p]! + 0.114 * planar[2 * n + p]!;
    planar = gray;
  }
  const mean = perChannel(t.mean, C, 0);
  const std = perChannel(t.std, C, 1);
  const out = new Float32Array(C * n);
  const nhwc = t.layout === 'nhwc';
  for (let c = 0; c < C; c++) {
    const m = mean[c]!, s = std[c]!;
    for (let p = 0; p < n; p++) {
      const v = (planar[c * n + p]! - m) / s;
      if (nhwc) out[p * C + c] = v; else out[c * n + p] = v;
    }
  }
  return out;
}
