/** The help texts of `onnx-lr optimize` and `onnx-lr plan` (kept apart from the parsing they describe). */
import { DEFAULT_MIN_PARAMS, METHOD_CHOICES } from '../optimize/driver.js';

const RANK_OPTIONS = `Rank choice (one of; default --energy ${0.999}):
  --energy E          smallest rank keeping fraction E of the weight's energy (Σσ²); a
                      CP (cp, cp4) the smallest CP rank (within 1/16) whose fit keeps E,
                      else the layer is left with the reason; TT each of its unfoldings
  --rank-ratio R      keep about fraction R of each layer's parameters
  --vbmf              EVBMF estimate (Nakajima et al. 2013), no setting needed
  --rank N            the same rank N everywhere (clamped to each layer): Tucker-2 N,N,
                      CP, CP-4 and spatial SVD N (N,N on a 3-D conv), TT N at each of
                      its ranks (N,N,N on a 2-D conv)
  --align N           round ranks up to a multiple of N (e.g. 8); default when a budget
                      times candidates in ORT (--max-error, which saves latency unless
                      --save or --no-latency, --target-latency, --layer-latency): the channel block of
                      ORT's blocked conv kernels on this CPU, 16 with AVX-512, 8 on other
                      x86-64 CPUs (none elsewhere), as they need channel counts on that
                      grid; --align 1 for none
Layer selection:
  --method M          ${METHOD_CHOICES.join(' | ')} (default auto: SVD for Gemm/MatMul/1x1
                      conv and 1x1 ConvTranspose, Tucker-2 for kxk conv and ConvTranspose;
                      on a kxk conv CP and spatial SVD compete with it at no more params
                      and MACs, the lower error wins; TT, CP-4 and CP on grouped convs
                      compete too, but where latency counts (their chains ran slower
                      than Tucker-2's in ORT) only a lower error wins, not an equal
                      one; where latency is measured, a rival that won (spatial SVD on
                      grouped and 3-D convs too) is timed in ORT
                      against Tucker-2 and the faster kept; a CP whose terms cancel (high
                      sensitivity) is refitted to a stable one, or that rank declined
                      when the refit cannot meet the bound)
  --exclude REGEX     leave layers whose node or weight name matches
  --min-params N      leave layers with fewer weight parameters (default ${DEFAULT_MIN_PARAMS})
  --heaviest N        of the layers left, consider only the N with the most MACs (params
                      when shapes are unknown): on a large model, budgets measure only
                      where the time goes; default with a budget that saves MACs or
                      latency: the layers carrying 95% of the MACs (the report's notes
                      say how many); budgets that save params consider every layer
  --seed N            seed for randomized numerics and verification inputs (default 0)
Whole-model budgets (measure each layer's sensitivity on calibration inputs, then
allocate ranks globally, greedy on output error per saved unit):
  --target-params F   keep at most fraction F of the parameters (e.g. 0.5)
  --target-macs F     keep at most fraction F of the decomposable layers' MACs
  --target-latency F  aim at fraction F of the original latency: each candidate's chain
                      is timed against its layer in ORT, only faster ones are kept, and
                      the result is re-measured (the report says whether it was met)
  --layer-latency     with any budget: keep only candidates measured faster in ORT
  --measure-all-rungs with any budget: run every candidate rank of every layer through
                      the model in ORT (slower; the reference) instead of one or two per
                      layer with the rest predicted from the layer's own error
  --all-methods       under --method auto with a budget, sensitivity also fits and
                      measures the rungs of every other method that competes for each
                      layer (CP, spatial SVD, TT, CP-4; timed where latency counts).
                      Off by default: on PP-OCRv4 rec, det and cls it saved nothing
                      more, at 1.5-5.8x the run time (without a budget every method
                      is compared anyway, within --compare-limit)
  --compare-limit F   largest fit, in flops, that auto makes only to compare methods
                      (and --all-methods to offer a rung); a method past it is noted
                      "not compared" with its cost (default 5e10, about half a minute
                      on 2 cores: CP and CP-4 on 256-channel 3x3 convs and up are past
                      it; a CP of a 512x512x3x3 conv at Tucker-2's size is ~1.7e12,
                      some 15 minutes)
  --stages K          reach the budget in K steps (MUSCO-style): after each stage the
                      factored layers are merged back, statistics and sensitivity are
                      measured again, and ranks can only go down (default 1, at most 10)
  --max-error E       compress as much as the output error allows: relative L2 E
                      (e.g. 0.05), cosine:C (e.g. cosine:0.995), or top1:P (top-1
                      agreement over each output's last axis on the calibration inputs,
                      e.g. top1:0.99 or top1:99%), checked in ORT; an error (L2 or
                      cosine) is judged with a margin for inputs the fits never saw: at
                      the 95% upper bound from its spread over the calibration feeds
                      (Student's t; give three or more), for the --verify-data feeds
                      when given (the verdict's), widened by how much better a fit
                      does on the data it saw than on a part of the calibration data
                      left out of it (the independent fits: each allocation fitted
                      once more without that part, only the first on models past 5e10
                      MACs; the anchored fit: fitted without it)
  --save U            what to save: params, macs or latency. With --max-error, the unit
                      the allocation saves; latency times each candidate's chain against
                      its layer in ORT (as --layer-latency) and keeps only faster ones.
                      Without a budget, latency keeps only rewrites measured at least 5%
                      faster than their layer in ORT (each cut out alone at its real
                      input shape, on --threads threads); params or macs keeps every
                      rewrite that lowers both params and MACs, faster or not. Default
                      latency, or params with --no-latency or --no-verify
  --outputs A,B       only these outputs count: error budgets, sensitivity and the
                      verification verdict judge them alone (the others are still
                      computed, and reported as not checked); default all outputs
Calibration data (data-aware decomposition is on when --calib is given):
  --calib PATH        .npy (samples on the first axis), .npz (one array per input),
                      a folder of them, or a folder of .png/.jpg images
  --calib-samples N   use at most N samples (default 64)
  --resize HxW        image size (default: the input's static H, W); these image options
                      also apply to --verify-data
  --mean R,G,B --std R,G,B   image normalisation after scaling to [0,1]
  --layout nchw|nhwc  image tensor layout (default nchw)
  --no-data-aware     use calibration data for budgets only, decompose weight-only
  --no-anchor         fit each layer to the original model's inputs alone, instead of
                      anchored: by default, with --calib, layers are fitted in
                      topological waves to what the original computes from what the
                      already compressed layers feed them (anchored fits add a bias to
                      layers that had none)
  --activation-fit    refit convs read by a Relu or Clip alone through the activation
                      (the entries it clamps need not be exact), kept when its error
                      after the activation is lower on patches held back; the anchored
                      fits, or with --no-anchor the independent ones; slower (ISNet's
                      44 heaviest convs: 12 → 27 min, held-out error 9% lower than the
                      linear anchored fit)
  --no-output-aware   fit without output weights. By default, with calibration data,
                      each output channel of 1x1 convs, Gemms and MatMuls is weighted
                      by how much the judged outputs move with it, so their rank goes
                      where the outputs are sensitive; measured from a few backward runs
                      in ORT (gradients built from ONNX operators; PP-OCRv4 rec: seconds)
  --output-aware      also weight the layers those gradients cannot reach (behind an
                      operator without a product), by one run per channel of the
                      layer's downstream part, within a work bound (slower: minutes)
  --refine N          after the layer-wise fits, refit every new factor to the
                      original's judged outputs by N evaluations of L-BFGS, gradients
                      from backward runs in ORT (each evaluation runs the model forward
                      and back on the calibration data). A part of the data is left out
                      (the last feed, or a feed's last quarter of samples) and the
                      evaluation best there is kept, the fit as it was when none
                      helps. Needs --calib (and a float16 model --compute float32); a
                      layer behind an operator without a product keeps its fit
Shapes and inputs:
  --shape NAME:DIMS   concrete dims for a dynamic input, e.g. x:1x3x640x640 (repeatable)
  --input NAME:FILE   a .npy value for an input (repeatable)
  --max-input-mb N    largest data file, plan, decoded array or image, in MiB (default 1024)`;

export const OPTIMIZE_HELP = `Usage: onnx-lr optimize IN OUT [options]

Rewrites Gemm/MatMul layers with a constant weight (batched MatMul weights slice by
slice), embedding tables (Gather) and the input weights of LSTM/GRU/RNN into SVD pairs,
and Conv and ConvTranspose layers into Tucker-2, CP, spatial-SVD, Tensor-Train, CP-4 or
SVD chains (--method), keeping each rewrite only when it lowers both parameters and
MACs and, unless --no-latency, runs at least 5% faster than the layer in ONNX Runtime
(--save). Writes OUT atomically (IN is never modified), then loads IN and OUT in ONNX Runtime
with seeded random inputs (or --verify-data), compares the outputs, measures latency
and prints a before/after table. Exit code 0 when the check passes, 1 when it fails (OUT is still
written), 2 for bad input.

${RANK_OPTIONS}
  --plan FILE         apply the decisions of a plan (from 'onnx-lr plan') exactly; with a
                      budget, reuse the plan's cached sensitivity measurements instead
                      (a budgeted run's --report carries them too); layers the plan
                      lacks are measured, those the filters now leave out dropped
Verification:
  --verify-data PATH  compare on these held-out inputs instead of 3 seeded random ones
                      (read like --calib, with the same image options; keep it apart
                      from the calibration data)
  --verify-samples N  use at most N of them (default 16)
  --min-cosine C      pass when every checked output's cosine similarity is at least C
                      (default: C of --max-error cosine:C, else 0.99)
  --atol A --rtol R   also require |opt - orig| <= A + R*|orig| elementwise (Polygraphy style)
  --no-verify         skip the ORT comparison and latency
  --no-latency        compare outputs but do not measure latency
  --threads N         ORT intra-op threads for verification, latency and the per-layer
                      timings (default 1)
  --work-threads N    ORT intra-op threads of the runs that only compute values: statistics,
                      sensitivity and error checks (default: the machine's cores, at most 8)
  --bench-web         also measure latency in onnxruntime-web's wasm backend
  --no-narrow-reorder keep narrow conv outputs in ORT's blocked layout. By default, when
                      the run saves latency (the default where latency is measured; not
                      with --save params|macs or a params or MACs budget, whose OUT never
                      depends on a timing), a conv to at most half ORT's channel block
                      (e.g. a 1-channel segmentation head, which ORT pads to 8 or 16
                      channels, and so every Resize or Sigmoid after it) has its output
                      reordered before its readers by a same-shape Reshape (exact); the
                      original is timed with and without, and OUT gets it only when the
                      original runs at least 2% faster with it (the report says by how much;
                      x86-64 only: elsewhere ORT has no blocked layout)
  --compute float32   make a float16 graph compute in float32 before anything else, as
                      convert --compute float32 does (constants stay float16, each read
                      through a Cast): ORT's CPU and wasm builds have no float16 conv
                      kernels and wrap each conv in Casts and layout reorders, more of
                      them around low-rank chains. OUT is verified and timed against IN
                      itself (ISNet: 1.09x from this alone). Not for runtimes with
                      float16 kernels (GPUs, NPUs)
Output:
  --report FILE       write the full report as JSON
  --html FILE         write the report as one self-contained HTML page (no network):
                      before/after table, each rewritten layer's singular-value spectra
                      with the rank kept, error-vs-rank curves (budgets), per-layer
                      latency (--layer-latency), allocation, verification per output
  --json              print the JSON report instead of the table
  --all-layers        list skipped layers with their reasons in the table
  --weights fp16|int8 store the new factors as fp16 (Cast) or int8 with per-channel
                      scales (DequantizeLinear; may raise the opset to 13); default fp32
  --external-data     store OUT's large tensors in OUT.<hash>.data beside OUT (named
                      by its content; the previous OUT's data file is removed)
  --force             allow OUT to be IN and replace it (never one of IN's data files,
                      nor the --report or --html file)
  -h, --help          this help`;

export const PLAN_HELP = `Usage: onnx-lr plan IN [options] > plan.json

Prints the per-layer decisions optimize would make (pass, method, ranks, expected params
and MACs, weight error) as JSON, without writing a model. Edit it and apply it exactly
with 'onnx-lr optimize IN OUT --plan plan.json'. Without a budget, the rewrites are not
timed in ORT unless --save latency is given (a plan is applied as written, on any machine;
optimize without --plan times them and keeps only the faster ones).

${RANK_OPTIONS}
  --plan FILE         reuse a plan's (or a budgeted optimize --report's) cached
                      sensitivity measurements (with a budget); layers it lacks are
                      measured
  --compute float32   plan for the float16 graph computed in float32, as optimize
                      --compute float32 runs it (calibration and shape options: see
                      optimize --help)
  -h, --help          this help`;
