/**
 * The defaults of `onnx-lr optimize` and `plan`, in one place: the command line and the
 * library both resolve their options through src/api/config.ts, so a default cannot differ
 * between them.
 */
import type { MethodChoice } from '../optimize/driver.js';

export { DEFAULT_MIN_PARAMS } from '../optimize/driver.js';

/** Rank policy without --energy, --rank-ratio, --vbmf or --rank: keep 99.9% of each weight's energy. */
export const DEFAULT_ENERGY = 0.999;
/** The cosine verification passes at, unless --min-cosine or --max-error cosine:C says otherwise. */
export const DEFAULT_MIN_COSINE = 0.99;
/** With a budget and no --heaviest: the layers carrying this share of the MACs. */
export const DEFAULT_HEAVIEST_SHARE = 0.95;
export const DEFAULT_METHOD: MethodChoice = 'auto';
export const DEFAULT_SEED = 0;
/** ORT intra-op threads for verification, latency and the latency screen. */
export const DEFAULT_THREADS = 1;
/**
 * Verification without --atol/--rtol: only the cosine decides (a lossy rewrite never meets
 * elementwise float tolerances). optimize/write-verify.ts applies the same values.
 */
export const DEFAULT_VERIFY_ATOL = Infinity;
export const DEFAULT_VERIFY_RTOL = 0;
/** Verification runs both models once per held-out sample: enough to judge, bounded in time. */
export const DEFAULT_VERIFY_SAMPLES = 16;
