/**
 * Calibration images in the page: the files the user picked (or the images of a folder),
 * made into the CalibSet `onnx-lr optimize --calib DIR` makes of the same folder, by the
 * library's own code (calib/samples.ts planImages, calib/image.ts imageToTensor,
 * calib/feeds.ts assemble). Only the decoding differs:
 * - JPEG: the library's decoder (jpeg-js), as the CLI;
 * - PNG: the browser's (the CLI's pngjs needs Node streams and zlib). For 8-bit PNGs
 *   without transparency both give the same pixels (colour management is off); a
 *   translucent pixel may differ by a level (the canvas stores premultiplied alpha), and
 *   16-bit PNGs are cut to 8 bits by each decoder in its own way.
 */
import { describeCalibration } from '../calib/load.js';
import type { CalibOptions, CalibSet } from '../calib/calib-set.js';
import { assemble } from '../calib/feeds.js';
import { decodeImage, DECODED_BYTES_PER_PIXEL, imageKind, imageToTensor, type RgbaImage } from '../calib/image.js';
import { IMAGE_EXT, extOf, planImages, type Sample } from '../calib/samples.js';
import { DEFAULT_CALIB_SAMPLES } from '../calib/calib-set.js';
import { LrError } from '../errors.js';
import { DEFAULT_MAX_INPUT_BYTES } from '../util/bounds.js';
import { fromNumbers, type ElemType, type HostTensor } from '../verify/tensor.js';
import type { ValueInfo } from '../verify/session.js';

export interface PageImage { name: string; bytes: Uint8Array }

/** The image options of --calib (calib-set.ts), and where the images came from. */
export interface PageImageOptions extends Pick<CalibOptions, 'samples' | 'resize' | 'mean' | 'std' | 'layout' | 'shapes' | 'values' | 'seed'> {
  /** For the report (the folder's name). */
  label: string;
}

/**
 * The images the CLI would read from a folder holding these files: image extensions only,
 * dot files skipped, in name order (code-unit order, as the CLI sorts), at most `samples`.
 */
export function calibrationImages(files: readonly PageImage[], samples = DEFAULT_CALIB_SAMPLES): PageImage[] {
  return files.filter((f) => !f.name.startsWith('.') && IMAGE_EXT.has(extOf(f.name)))
    .sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0))
    .slice(0, samples);
}

/** The browser's image decoding, as far as it is used here (the library is type-checked without the DOM's types). */
interface Bitmap { width: number; height: number; close(): void }
interface Imaging {
  createImageBitmap(b: Blob, o: { colorSpaceConversion: 'none'; premultiplyAlpha: 'none' }): Promise<Bitmap>;
  OffscreenCanvas: new (w: number, h: number) => {
    getContext(kind: '2d', o: { colorSpace: 'srgb' }): { drawImage(b: Bitmap, x: number, y: number): void; getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } } | null;
  };
}

/** PNG pixels as the browser decodes them, straight RGBA, no colour conversion. */
async function browserDecode(bytes: Uint8Array, name: string, maxBytes: number): Promise<RgbaImage> {
  const web = globalThis as unknown as Imaging;
  if (typeof web.createImageBitmap !== 'function') throw new LrError('unsupported', `${name}: PNG calibration images are decoded by the browser's decoder, which is not here`);
  let bitmap: Bitmap;
  try {
    bitmap = await web.createImageBitmap(new Blob([bytes as Uint8Array<ArrayBuffer>]), { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch {
    throw new LrError('parse', `${name}: cannot decode PNG`);
  }
  const { width, height } = bitmap;
  if (width * height * DECODED_BYTES_PER_PIXEL > maxBytes) {
    bitmap.close();
    throw new LrError('unsupported', `${name}: image is ${width}x${height}, too large to decode here`);
  }
  const ctx = new web.OffscreenCanvas(width, height).getContext('2d', { colorSpace: 'srgb' });
  if (!ctx) throw new LrError('unsupported', `${name}: this browser has no 2D canvas to decode images with`);
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const data = ctx.getImageData(0, 0, width, height).data;
  return { width, height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

async function decode(f: PageImage, maxBytes: number): Promise<RgbaImage> {
  const kind = imageKind(f.bytes);
  if (kind === 'png') return browserDecode(f.bytes, f.name, maxBytes);
  const r = decodeImage(f.bytes, f.name, maxBytes);
  if (!r.ok) throw r.error;
  return r.value;
}

/** The calibration set of `files` for the model's `inputs` (one 4-D float input takes the images). */
export async function imageCalibration(files: readonly PageImage[], inputs: readonly ValueInfo[], o: PageImageOptions): Promise<{ set: CalibSet; description: string }> {
  const images = calibrationImages(files, o.samples);
  if (images.length === 0) throw new LrError('usage', `calibration images: none of the ${files.length} file(s) is a .png, .jpg or .jpeg`);
  const values = o.values ?? {};
  const open = inputs.filter((i) => !(i.name in values));
  if (open.length !== 1) throw new LrError('usage', `calibration images feed a single input, but the model has ${open.length === 0 ? 'none without a fixed value' : `${open.length}: ${open.map((i) => i.name).join(', ')}`}`);
  const input = open[0]!;
  const opts = { inputs, samples: o.samples, resize: o.resize, mean: o.mean, std: o.std, layout: o.layout, shapes: o.shapes, values, seed: o.seed, maxBytes: DEFAULT_MAX_INPUT_BYTES };
  const plan = planImages(input, opts, o.label);
  if (!plan.ok) throw plan.error;
  const p = plan.value;
  const dims = p.layout === 'nchw' ? [1, p.channels, p.height, p.width] : [1, p.height, p.width, p.channels];
  const samples: Sample[] = [];
  for (const f of images) {
    const img = await decode(f, p.maxBytes);
    if (img.width < 1 || img.height < 1) throw new LrError('usage', `${f.name}: the image is empty`);
    const data = imageToTensor(img, p);
    const t: HostTensor = input.type === 'float32' ? { type: 'float32', dims, data } : fromNumbers(input.type as ElemType, dims, data);
    samples.push({ tensors: { [input.name]: t } });
  }
  const { maxBytes: _, purpose: __, ...shown } = p;
  const set = assemble({
    source: { kind: 'images', path: o.label, files: images.length, ...shown }, inputs, calibrated: [input.name],
    collected: { samples, modes: new Map([[input.name, 'batch']]), files: images.length }, opts,
  });
  if (!set.ok) throw set.error;
  return { set: set.value, description: describeCalibration(set.value) };
}
