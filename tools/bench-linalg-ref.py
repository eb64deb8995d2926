"""numpy reference for tools/bench-linalg.ts (not run on its own).

Talks JSON lines: the first line it prints describes the numpy it runs on (version,
the BLAS library it loaded, that library's kernel and thread count, and the measured
speed of an fp32 1024^3 and a larger matmul); then it answers one line per request
read from stdin:
  {"op": "setup", "case": {"name", "kind", "params"}}  -> {"ok": true}
  {"op": "run", "name": N}                             -> {"s": seconds of one run}
  {"op": "check", "name": N}                           -> {"err": rel. error of the last run}
Errors are answered as {"error": "..."}. Threads are pinned by the caller through the
environment (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS, BLIS_NUM_THREADS).

The truncated SVD, Tucker-2 (HOSVD + HOOI) and CP-ALS here follow src/linalg/ step by
step (rsvd.ts, tucker2.ts, cp-als.ts): the same choice between the Gram, exact and
randomized paths, the same warm starts, oversampling and power iterations, the same
per-sweep error evaluation. What differs: orthonormal bases come from Householder QR
(numpy) instead of CholeskyQR, and the random test matrices from numpy's generator.
"""
import ctypes
import json
import os
import sys
import time

import numpy as np


# ---- which BLAS -------------------------------------------------------------------------

def loaded_libraries():
    """Shared libraries mapped into this process whose name says BLAS/LAPACK."""
    keys = ('blas', 'lapack', 'mkl', 'blis', 'accelerate')
    seen = []
    try:
        with open('/proc/self/maps') as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and '.so' in parts[-1]:
                    path = parts[-1]
                    if any(k in os.path.basename(path).lower() for k in keys) and path not in seen:
                        seen.append(path)
    except OSError:
        pass
    return seen


def openblas_runtime(libs):
    """Kernel, threads and config string from an OpenBLAS among `libs` (None if none answers)."""
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (('scipy_openblas_', '64_'), ('scipy_openblas_', ''), ('openblas_', '64_'), ('openblas_', '')):
            try:
                cfg = getattr(lib, prefix + 'get_config' + suffix)
                core = getattr(lib, prefix + 'get_corename' + suffix)
                nthr = getattr(lib, prefix + 'get_num_threads' + suffix)
            except AttributeError:
                continue
            cfg.restype = ctypes.c_char_p
            core.restype = ctypes.c_char_p
            nthr.restype = ctypes.c_int
            return {'library': path, 'config': cfg().decode(), 'kernel': core().decode(), 'threads': nthr()}
    return None


def build_blas():
    try:
        deps = np.show_config(mode='dicts').get('Build Dependencies', {})
        b = deps.get('blas', {})
        return {'name': b.get('name'), 'version': b.get('version'), 'config': b.get('openblas configuration')}
    except Exception as e:  # numpy < 1.26 has no mode='dicts'
        return {'name': None, 'version': None, 'config': None, 'why': str(e)}


def matmul_rate(n, reps, warm=3):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    for _ in range(warm):
        a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    ts.sort()
    return {'n': n, 'median_gflops': 2 * n ** 3 / ts[len(ts) // 2] / 1e9, 'best_gflops': 2 * n ** 3 / ts[0] / 1e9, 'runs': reps}


def probe(peak_n):
    a = np.ones((64, 64), dtype=np.float32)
    a @ a  # loads the BLAS (numpy may load it lazily)
    np.linalg.svd(a)
    libs = loaded_libraries()
    rt = openblas_runtime(libs)
    names = ' '.join(p.lower() for p in libs)
    optimized_lib = rt is not None or any(k in names for k in ('openblas', 'mkl', 'blis', 'accelerate', 'flexiblas'))
    # Debian's reference BLAS is .../blas/libblas.so.3 (and lapack/liblapack.so.3).
    reference = not optimized_lib and any('/blas/libblas' in p or '/lapack/liblapack' in p for p in libs)
    return {
        'python': sys.executable, 'python_version': sys.version.split()[0], 'numpy': np.__version__,
        'build': build_blas(), 'libraries': libs, 'runtime': rt, 'reference_blas': reference,
        'gemm1024': matmul_rate(1024, 11), 'peak': matmul_rate(peak_n, 5, 2),
        'env': {k: os.environ.get(k) for k in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'BLIS_NUM_THREADS', 'OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE')},
    }


# ---- the algorithms, as in src/linalg/ ---------------------------------------------------

def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def row_basis(w):
    """Orthonormal rows spanning the rows of a wide block w (l x p)."""
    q, _ = np.linalg.qr(w.T)
    return q.T


def truncated_svd(a, k, rng, oversample=10, power_iters=2, start=None, method='auto'):
    """rsvd.ts truncatedSvdProgram: exact when small, else HMT with transposed sketches."""
    m, n = a.shape
    k = min(k, m, n)
    small = min(m, n)
    l = min(k + oversample, small)
    if method == 'exact' or (method != 'randomized' and (small <= 2 * l or small <= 64)):
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        return u[:, :k], s[:k], vt[:k]
    omega_t = rng.standard_normal((l, n)).astype(a.dtype)
    if start is not None:
        c = min(start.shape[1], l)
        zt = start[:, :c].T.astype(a.dtype) @ a  # c x n
        nrm = np.linalg.norm(zt, axis=1)
        f = np.where(nrm > 0, np.sqrt(n) / np.where(nrm > 0, nrm, 1), 0)
        keep = f > 0
        omega_t[:c][keep] = zt[keep] * f[keep, None].astype(a.dtype)
    qt = row_basis(omega_t @ a.T)  # l x m
    for _ in range(power_iters):
        zt = row_basis(qt @ a)  # l x n
        qt = row_basis(zt @ a.T)  # l x m
    b = qt @ a  # l x n
    q2t = row_basis(b)
    r = (q2t @ b.T).astype(np.float64)  # l x l
    ur, s, vrt = np.linalg.svd(r)
    u = (qt.T @ vrt.T[:, :k].astype(qt.dtype)).astype(np.float64)
    vt = (ur[:, :k].T.astype(q2t.dtype) @ q2t).astype(np.float64)
    return u, s[:k], vt


def swap(y, a, b, k):
    """[a, b*k] -> [b, a*k] (swapLeadingAxes)."""
    return y.reshape(a, b, k).transpose(1, 0, 2).reshape(b, a * k)


def tucker2(w, T, S, k, r1, r2, iters, seed=1):
    """tucker2.ts tucker2Program with tol < 0 (every sweep runs)."""
    r1, r2 = min(r1, S), min(r2, T)
    r1 = min(r1, r2 * k)
    r2 = min(r2, r1 * k)
    xT = w.reshape(T, S * k)
    xS = swap(xT, T, S, k)
    w_norm = np.linalg.norm(xT)

    def lead(x, r, start=None):
        rows, cols = x.shape
        if rows <= cols and rows <= 2 * min(r + 10, rows):
            u, _, _ = np.linalg.svd(x @ x.T)  # leftVectorsByGram
            return u[:, :min(r, rows)]
        rng = np.random.default_rng(seed)  # svd: { seed }: every call draws from the same seed
        return truncated_svd(x, r, rng, power_iters=1 if start is not None else 2, start=start)[0]

    def core_of(uT, uS):
        yt = uT.T @ xT  # [r2, S*k]
        g = uS.T @ swap(yt, uT.shape[1], S, k)  # [r1, r2*k]
        return swap(g, uS.shape[1], uT.shape[1], k)  # [r2, r1*k]

    uS = lead(xS, r1)
    uT = None
    for _ in range(iters):
        ys = uS.T @ xS
        uT = lead(swap(ys, uS.shape[1], T, k), r2, uT)
        yt = uT.T @ xT
        uS = lead(swap(yt, uT.shape[1], S, k), r1, uS)
        g = core_of(uT, uS)
        _ = np.sqrt(max(0.0, w_norm ** 2 - np.linalg.norm(g) ** 2)) / w_norm  # per-sweep error, as ours
    g = core_of(uT, uS)
    a = uT @ g  # [T, r1*k]
    rec = swap(uS @ swap(a, T, uS.shape[1], k), S, T, k)  # [T, S*k]
    return rel(rec, xT)


def khatri_rao(a, b):
    return (a[:, None, :] * b[None, :, :]).reshape(-1, a.shape[1])


def cp_als(x, T, S, k, R, iters, seed=1, ridge=1e-9, max_norm_ratio=10.0):
    """cp-als.ts cpAlsProgram for a 3-way tensor, tol < 0 (every sweep runs)."""
    rng = np.random.default_rng(seed)
    dims = (T, S, k)
    unf = [x.reshape(T, -1), x.transpose(1, 0, 2).reshape(S, -1), x.transpose(2, 0, 1).reshape(k, -1)]
    x_norm = np.linalg.norm(unf[0])
    bound = max_norm_ratio * x_norm

    def unit_columns(f, w):
        for r in range(f.shape[1]):
            if w[r] > 0:
                f[:, r] /= w[r]
            else:
                v = rng.standard_normal(f.shape[0])
                f[:, r] = v / np.linalg.norm(v)

    fs = []
    for n, d in enumerate(dims):
        u = truncated_svd(unf[n], min(R, d), np.random.default_rng(rng.integers(1 << 31)))[0]
        f = np.zeros((d, R))
        f[:, :u.shape[1]] = u
        unit_columns(f, np.r_[np.ones(u.shape[1]), np.zeros(R - u.shape[1])])
        fs.append(f)
    grams = [f.T @ f for f in fs]
    lam = ridge
    weights = np.ones(R)
    err = np.inf
    for _ in range(iters):
        z = None
        for n in range(3):
            if n == 0:
                mtt = unf[0] @ khatri_rao(fs[1], fs[2])
            else:
                if z is None:
                    z = (fs[0].T @ unf[0]).reshape(R, S, k)
                mtt = np.einsum('rsk,kr->sr', z, fs[2]) if n == 1 else np.einsum('rsk,sr->kr', z, fs[1])
            h = np.ones((R, R))
            for m in range(3):
                if m != n:
                    h *= grams[m]
            for attempt in range(61):
                c = np.linalg.cholesky(h + lam * np.eye(R))
                inv = np.linalg.inv(c.T) @ np.linalg.inv(c)  # (H + lam I)^-1 from its Cholesky factor
                f = mtt @ inv
                w = np.linalg.norm(f, axis=0)
                if w.max() <= bound or attempt >= 60:
                    unit_columns(f, w)
                    fs[n] = f
                    grams[n] = f.T @ f
                    weights = w
                    break
                lam = max(lam * 10, 1e-8)
            last_m = mtt
        h_all = grams[0] * grams[1] * grams[2]
        inner = float(np.sum(weights * np.sum(last_m * fs[2], axis=0)))
        model = float(weights @ h_all @ weights)
        err = np.sqrt(max(0.0, x_norm ** 2 - 2 * inner + model)) / x_norm
        lam = max(ridge, lam / 10)
    xh = (fs[0] * weights) @ khatri_rao(fs[1], fs[2]).T
    return rel(xh, unf[0])


# ---- cases --------------------------------------------------------------------------------

def make_case(c):
    """Returns a function doing one timed run; it returns a function giving the run's error."""
    p = c['params']
    kind = c['kind']
    if kind == 'gemm':
        n = p['n']
        dt = np.dtype(p['dtype'])
        a = np.fromfile(p['a'], dtype=dt).reshape(n, n)
        b = np.fromfile(p['b'], dtype=dt).reshape(n, n)

        def run():
            a @ b
            return lambda: 0.0
        return run
    if kind == 'svd':
        n = p['n']
        a = np.fromfile(p['path'], dtype=np.float64).reshape(n, n)

        def run():
            u, s, vt = np.linalg.svd(a, full_matrices=False)
            return lambda: rel((u * s) @ vt, a)
        return run
    if kind == 'rsvd':
        n, k = p['n'], p['rank']
        a = np.fromfile(p['path'], dtype=np.float32).reshape(n, n)

        def run():
            u, s, vt = truncated_svd(a, k, np.random.default_rng(1), p['p'], p['q'], method='randomized')
            return lambda: rel((u * s) @ vt, a)
        return run
    if kind == 'tucker':
        T, S, k = p['T'], p['S'], p['k']
        w = np.fromfile(p['path'], dtype=np.float64).reshape(T, S, k)

        def run():
            e = tucker2(w, T, S, k, p['r1'], p['r2'], p['iters'])
            return lambda: e
        return run
    if kind == 'cp':
        T, S, k = p['T'], p['S'], p['k']
        x = np.fromfile(p['path'], dtype=np.float64).reshape(T, S, k)

        def run():
            e = cp_als(x, T, S, k, p['R'], p['iters'])
            return lambda: e
        return run
    raise ValueError(f'unknown case kind {kind}')


def main():
    peak_n = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    print(json.dumps(probe(peak_n)), flush=True)
    cases, checks = {}, {}
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            if req['op'] == 'setup':
                cases[req['case']['name']] = make_case(req['case'])
                out = {'ok': True}
            elif req['op'] == 'run':
                fn = cases[req['name']]
                t = time.perf_counter()
                chk = fn()
                out = {'s': time.perf_counter() - t}
                checks[req['name']] = chk
            elif req['op'] == 'check':
                out = {'err': float(checks[req['name']]())}
            else:
                out = {'error': f"unknown op {req['op']}"}
        except Exception as e:  # answered, so the bench can skip the case and go on
            out = {'error': f'{type(e).__name__}: {e}'}
        print(json.dumps(out), flush=True)


if __name__ == '__main__':
    main()
