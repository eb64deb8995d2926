import { describe, expect, it } from 'vitest';
import { buildFeeds } from '../../src/verify/inputs.js';
import { fetchTensors, openFetcher } from '../../src/verify/intermediate.js';
import { createSession } from '../../src/verify/session.js';
import { fromNumbers } from '../../src/verify/tensor.js';
import { SILERO } from './models.js';

// Silero has two graph outputs (`output`, `stateN`): fetching one must return just that one,
// with the same values a full run gives.
describe('intermediate tensors', () => {
  it('fetches only the named outputs, equal to a full run', async () => {
    const s = await createSession({ path: SILERO });
    if (!s.ok) throw s.error;
    const plan = buildFeeds(s.value.inputs, { shapes: { input: [1, 512] }, values: { sr: fromNumbers('int64', [], [16000]) } });
    if (!plan.ok) throw plan.error;
    const feed = plan.value.feeds[0]!;
    const full = await s.value.run(feed);
    await s.value.release();
    if (!full.ok) throw full.error;

    const got = await fetchTensors({ path: SILERO }, feed, ['stateN']);
    expect(got.ok).toBe(true);
    if (!got.ok) return;
    expect(Object.keys(got.value)).toEqual(['stateN']);
    expect(got.value.stateN!.dims).toEqual([2, 1, 128]);
    expect([...got.value.stateN!.data]).toEqual([...full.value.stateN!.data]);

    // A reusable fetcher gives the same values on repeated runs.
    const f = await openFetcher({ path: SILERO }, ['output', 'stateN']);
    if (!f.ok) throw f.error;
    const a = await f.value.run(feed);
    const b = await f.value.run(feed);
    await f.value.release();
    expect(a.ok && b.ok && [...a.value.output!.data]).toEqual(b.ok && [...b.value.output!.data]);
    expect(a.ok && [...a.value.output!.data]).toEqual([...full.value.output!.data]);
  });

  it('names that are not graph outputs are a usage error listing them', async () => {
    const r = await openFetcher({ path: SILERO }, ['stateN', 'conv_1_out', 'x']);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.kind).toBe('usage');
    expect(r.error.message).toMatch(/not graph outputs .*: conv_1_out, x$/);
  });
});
