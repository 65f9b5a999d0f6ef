"""KRR over a regularization sweep: ntklab's sweep against a per-λ
Cholesky loop, in the same process, one after the other (and interleaved over repeats).

n = 4000 training points, float64, 10 outputs, 50 λ in 10^linspace(-6, 1, 50), m = 1000 test
points. The kernel is the two-layer ReLU NTK (Ghorbani et al.'s NTK2 formula) of Gaussian inputs
in d = 3072. The peer factors K + λI by `scipy.linalg.cho_factor` and solves for each λ, and
predicts the test points (Ghorbani's Kernel_Fit.py does this with `scipy.linalg.solve`); it
computes no leave-one-out or GCV error. ntklab's `solve_ridge_sweep` (solver auto) also returns
train predictions, exact leave-one-out residuals and GCV for every λ.

    python bench/krr.py [--n 4000] [--ridges 50] [--threads N] [--repeats 1]

--threads limits the BLAS threads of both sides (threadpoolctl); on a loaded machine the
multithreaded LAPACK tridiagonalization of an eigendecomposition is several times slower.
"""

import argparse
import os
import time

import numpy as np
import scipy.linalg


def ntk2(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    nx, nz = np.linalg.norm(x, axis=1), np.linalg.norm(z, axis=1)
    u = np.clip((x @ z.T) / np.outer(nx, nz), -1.0, 1.0)
    return np.outer(nx, nz) * (u * (1 - np.arccos(u) / np.pi) + np.sqrt(1 - u**2) / (2 * np.pi))


def cholesky_loop(k, y, k_test, ridges):
    alphas, tests = [], []
    shifted = np.array(k)
    diagonal = np.diag_indices(len(k))
    base = k[diagonal].copy()
    for ridge in ridges:
        shifted[diagonal] = base + ridge
        factor = scipy.linalg.cho_factor(shifted, lower=True, check_finite=False)
        alpha = scipy.linalg.cho_solve(factor, y, check_finite=False)
        alphas.append(alpha)
        tests.append(k_test @ alpha)
    return np.stack(alphas), np.stack(tests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--m", type=int, default=1000)
    parser.add_argument("--ridges", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    from ntklab.engine.krr import solve_ridge_sweep

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n + args.m, 3072))
    k_all = ntk2(x, x[: args.n])
    k, k_test = k_all[: args.n], k_all[args.n :]
    y = np.eye(10)[rng.integers(0, 10, args.n)] - 0.1
    ridges = np.logspace(-6, 1, args.ridges)
    times = {"peer": [], "ours": [], "ours_noloo": []}
    limit = threadpool_limits(args.threads) if args.threads else None
    try:
        for _ in range(args.repeats):
            start = time.perf_counter()
            alphas, tests = cholesky_loop(k, y, k_test, ridges)
            times["peer"].append(time.perf_counter() - start)
            start = time.perf_counter()
            ours = solve_ridge_sweep(k, y, ridges, k_test=k_test, loo=True)
            times["ours"].append(time.perf_counter() - start)
    finally:
        if limit is not None:
            limit.unregister()
    alpha_error = float(np.max(np.abs(ours.alpha - alphas) / np.max(np.abs(alphas), axis=(1, 2), keepdims=True)))
    test_error = float(np.max(np.abs(ours.test_predictions - tests)) / np.max(np.abs(tests)))
    peer, mine = min(times["peer"]), min(times["ours"])
    threads = args.threads or f"default ({os.cpu_count()} cores)"
    print(f"# KRR sweep: n={args.n} float64, 10 outputs, {args.ridges} ridges, m={args.m} test points, "
          f"BLAS threads {threads}\n")
    print("| side | time (s) | per λ (s) | returns | time / Cholesky loop |")
    print("|---|---|---|---|---|")
    print(f"| scipy Cholesky per λ (peer) | {peer:.2f} | {peer / args.ridges:.3f} | α, test predictions | 1.00 |")
    print(f"| ntklab solve_ridge_sweep ({ours.solver}) | {mine:.2f} | {mine / args.ridges:.3f} | α, train/test "
          f"predictions, LOO, GCV | {mine / peer:.2f} |")
    print(f"\nmax relative difference of α: {alpha_error:.1e}; of test predictions: {test_error:.1e}")
    verdict = "met" if mine / peer <= 0.4 else "NOT met"
    print(f"target: at most 0.4x the Cholesky loop: {mine / peer:.2f}x, {verdict}")


if __name__ == "__main__":
    main()
