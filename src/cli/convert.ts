/** `onnx-lr convert IN OUT`: load and save (normalises the encoding, moves data in or out). */
import { LrError } from '../errors.js';
import { loadModel, saveModel } from '../onnx/file.js';
import { DEFAULT_EXTERNAL_THRESHOLD } from '../onnx/save-options.js';
import { bytes } from '../report/format.js';
import { expectPositionals, flag, num, parse } from './args.js';

export const CONVERT_HELP = `Usage: onnx-lr convert IN OUT [--external-data [--threshold BYTES]] [--force]

Loads IN and writes it to OUT: every field survives, including ones this tool does not
know. OUT is written to a temporary file and renamed, so a failure never leaves a
half-written file; IN is never modified. OUT must be a regular file or absent.

Options:
  --external-data     store initializers of at least --threshold bytes in OUT.<hash>.data
                      beside OUT (4096-byte aligned, named by its content, so OUT can
                      only ever name the data written with it; the previous OUT's data
                      file is removed once the new OUT is in place). Chosen
                      automatically past 2 GiB.
  --threshold BYTES   size threshold for --external-data (default 1024); empty tensors,
                      1-D integer tensors under 64 KiB (shapes, axes, pads) and other
                      integer tensors under 1024 bytes always stay inline: ORT reads
                      those during shape inference
  --inline            keep every tensor inside OUT, even when the input used external data
  --force             allow OUT to be the same file as IN (never one of IN's data files)
  -h, --help          this help`;

export function convert(argv: readonly string[], out: (s: string) => void): number {
  const p = parse(argv, {
    'external-data': { type: 'boolean' }, threshold: { type: 'string' }, inline: { type: 'boolean' },
    force: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  }, 'convert');
  if (flag(p, 'help')) { out(CONVERT_HELP); return 0; }
  const [inPath, outPath] = expectPositionals(p, 2, 'convert', 'IN OUT');
  const threshold = num(p, 'threshold', { min: 0, integer: true });
  if (threshold !== undefined && !flag(p, 'external-data')) throw new LrError('usage', '--threshold needs --external-data');
  const loaded = loadModel(inPath);
  try {
    const ext = flag(p, 'external-data') ? { threshold } : flag(p, 'inline') ? false : undefined;
    const r = saveModel(loaded, outPath, { externalData: ext, force: flag(p, 'force') });
    out(`wrote ${r.path} (${bytes(r.bytes)})${r.externalPath ? ` + ${r.externalPath} (${bytes(r.externalBytes ?? 0)}, ${r.externalTensors} tensors)` : ''}`);
    // Asked to move data out and none went: say so, and why it can be (not a failure: OUT is valid).
    if (ext && !r.externalPath) {
      out(`--external-data moved nothing: no initializer of at least ${threshold ?? DEFAULT_EXTERNAL_THRESHOLD} bytes can leave OUT ` +
        '(weights in Constant nodes, empty tensors and small integer tensors stay inline), so OUT holds every tensor');
    }
    return 0;
  } finally {
    loaded.external.close();
  }
}
