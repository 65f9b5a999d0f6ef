"""Spectral tools against the seed's calls, side by side in one invocation.

1. Top-k eigenpairs of a float32 kernel (n x n, a Gaussian-feature Gram matrix with a power-law
   spectrum): ntklab's `dense_eigenpairs` (LAPACK evr, top k by index) vs the seed's
   `scipy.sparse.linalg.eigsh(K, k)` and `numpy.linalg.eigh` (all pairs).
2. NADs of the seed's LeNet (GeLU, h x w x 1, one logit, k = D - 1): ntklab's route as `auto`
   picks it (explicit: G = AᵀA from D vectorized JVP/VJP products, then eigh) vs the seed's
   `scipy.sparse.linalg.svds` over a LinearOperator whose products are single JVP/VJP calls.
3. The top-100 eigenpairs of an MLP's (two hidden layers of 100, ReLU, one logit) empirical NTK
   on n points: ntklab's `implicit` (Lanczos over J(Jᵀv), K never formed) vs forming K with
   ntklab's EmpiricalNTK and `numpy.linalg.eigh`. Time and peak resident memory, each in a fresh
   process (ru_maxrss).

    python bench/spectral.py [--n 10000] [--k 1000] [--nad-side 32] [--ntk-n 20000] [--skip ...]
                             [--seed-limit SECONDS]

The issue's sizes are the defaults; on a small machine pass smaller ones. With --seed-limit the seed's
eigsh and the form-K peer are stopped after that many seconds, and the table gives a bound.
"""

import argparse
import multiprocessing
import resource
import time
from queue import Empty

import numpy as np


def power_law_kernel(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, min(n, 2048))) * (np.arange(1, min(n, 2048) + 1) ** -0.6)
    return (features @ features.T).astype(np.float32)


def seconds(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _seed_eigsh(n: int, k: int, queue) -> None:
    import scipy.sparse.linalg

    kernel = power_law_kernel(n)
    t, (values, _) = seconds(lambda: scipy.sparse.linalg.eigsh(kernel, k=k))
    queue.put((t, np.sort(values)[::-1]))


def eigen_rows(n: int, k: int, limit: float | None) -> list[tuple[str, float | None]]:
    from ntklab.engine.eigen import dense_eigenpairs

    kernel = power_law_kernel(n)
    t_ntklab, ours = seconds(lambda: dense_eigenpairs(kernel, k))
    t_numpy, _ = seconds(lambda: np.linalg.eigh(kernel))
    del kernel
    seed = in_fresh_process(_seed_eigsh, (n, k), limit)
    if seed is not None:
        assert np.allclose(ours.values, seed[1], rtol=1e-3), "ntklab and eigsh disagree"
    return [("ntklab dense (top k)", t_ntklab), ("seed: scipy eigsh(k)", None if seed is None else seed[0]),
            ("numpy eigh (all)", t_numpy)]


def nad_rows(side: int) -> list[tuple[str, float]]:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import scipy.sparse.linalg
    from jax.flatten_util import ravel_pytree

    from ntklab.engine.config import LeNet5Model
    from ntklab.engine.models import build_model, parameter_count, partition_parameters
    from ntklab.engine.nads import choose_route, neural_anisotropy_directions

    shape = (side, side, 1)
    d = side * side
    model = build_model(LeNet5Model(arch="lenet5", activation="gelu"), shape, 1, jax.random.PRNGKey(42))
    params, rest = partition_parameters(model)
    points = np.zeros((1, *shape), np.float32)
    route = choose_route(d, parameter_count(params), d - 1, 4, 2048 << 20)  # the nads task's defaults
    t_ntklab, ours = seconds(lambda: neural_anisotropy_directions(lambda m, x: m(x), params, rest, points, d - 1,
                                                                  route))

    flat, unravel = ravel_pytree(params)
    x0 = jnp.zeros(shape)

    def f(p, x):
        return eqx.combine(unravel(p), rest)(x[None])[0, 0]

    a = jax.jit(lambda v: jax.grad(lambda p: jax.jvp(lambda x: f(p, x), (x0,), (v.reshape(shape),))[1])(flat))
    at = jax.jit(lambda u: jax.grad(lambda x: jax.jvp(lambda p: f(p, x), (flat,), (u,))[1])(x0).reshape(-1))
    operator = scipy.sparse.linalg.LinearOperator(
        (flat.size, d), matvec=lambda v: np.asarray(a(jnp.asarray(v.reshape(-1), jnp.float32))),
        rmatvec=lambda u: np.asarray(at(jnp.asarray(u.reshape(-1), jnp.float32))), dtype=np.float32)
    t_seed, (_, singular, _) = seconds(lambda: scipy.sparse.linalg.svds(operator, k=d - 1,
                                                                         return_singular_vectors="vh"))
    top = np.sort(singular)[::-1][:10] ** 2
    assert np.allclose(ours.values[:10], top, rtol=1e-2), "ntklab and svds disagree"
    return [(f"ntklab NADs, auto: {route} (D = {d})", t_ntklab), ("seed: svds over JVP/VJP", t_seed)]


def _implicit(n: int, queue) -> None:
    from ntklab.engine.config import MLPModel
    from ntklab.engine.eigen import operator_eigenpairs
    from ntklab.engine.jacobian_products import JacobianOperator
    from ntklab.engine.models import build_model, partition_parameters
    from ntklab.engine.taylor import Network

    import jax

    x = np.random.default_rng(0).standard_normal((n, 784)).astype(np.float32)
    model = build_model(MLPModel(arch="mlp", depth=2, width=100), (784,), 1, jax.random.PRNGKey(42))
    start = time.perf_counter()
    operator = JacobianOperator(Network(), model, x, partition_parameters, batch_size=2048, vector_batch=1)
    spectrum = operator_eigenpairs(lambda v: operator.kernel_apply(v[:, None])[:, 0], n, 100, dtype=np.float32,
                                   tol=1e-6)
    queue.put((time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, spectrum.values[:3]))


def _dense(n: int, queue) -> None:
    from ntklab.engine.config import MLPModel
    from ntklab.engine.entk import EmpiricalNTK
    from ntklab.engine.models import build_model

    import jax

    x = np.random.default_rng(0).standard_normal((n, 784)).astype(np.float32)
    model = build_model(MLPModel(arch="mlp", depth=2, width=100), (784,), 1, jax.random.PRNGKey(42))
    start = time.perf_counter()
    kernel = EmpiricalNTK(model, (784,), batch_size=1000)(x)
    values = np.linalg.eigh(kernel)[0][::-1]
    queue.put((time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, values[:3]))


def in_fresh_process(target, args: tuple, limit: float | None = None):
    """`target(*args, queue)`'s result from a spawned process, or None when it ran past `limit` seconds
    (the process is then killed: a peer too slow to wait for gets a lower bound, not a number)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    try:
        return queue.get(timeout=limit)
    except Empty:
        process.kill()
        return None
    finally:
        process.join()


def ratio(t: float, seed: float | None, limit: float | None) -> str:
    return f"{t / seed:6.2f}x the seed" if seed is not None else f"< {t / limit:.2f}x the seed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--nad-side", type=int, default=32)
    parser.add_argument("--ntk-n", type=int, default=20_000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["eigen", "nads", "implicit"])
    parser.add_argument("--seed-limit", type=float, default=None, metavar="SECONDS",
                        help="stop the seed's eigsh and the form-K peer after this long and report a bound")
    args = parser.parse_args()
    if "eigen" not in args.skip:
        rows = eigen_rows(args.n, args.k, args.seed_limit)
        print(f"\ntop-{args.k} eigenpairs of a float32 {args.n} x {args.n} kernel")
        seed = rows[1][1]
        for name, t in rows:
            if t is None:
                print(f"  {name:34s} > {args.seed_limit:7g} s   (stopped)")
            else:
                print(f"  {name:34s} {t:9.2f} s   {ratio(t, seed, args.seed_limit)}")
    if "nads" not in args.skip:
        rows = nad_rows(args.nad_side)
        print(f"\nNADs of LeNet-5 (GeLU, {args.nad_side}x{args.nad_side}x1), k = D - 1")
        for name, t in rows:
            print(f"  {name:34s} {t:9.2f} s   {t / rows[1][1]:6.2f}x the seed")
    if "implicit" not in args.skip:
        print(f"\ntop-100 eigenpairs of an MLP's eNTK, n = {args.ntk_n}")
        rows = [("ntklab implicit (K never formed)", in_fresh_process(_implicit, (args.ntk_n,))),
                ("form K (EmpiricalNTK) + numpy eigh", in_fresh_process(_dense, (args.ntk_n,), args.seed_limit))]
        for name, result in rows:
            if result is None:
                print(f"  {name:34s} > {args.seed_limit:7g} s   (stopped)")
                continue
            t, rss_kb, top = result
            print(f"  {name:34s} {t:9.2f} s   peak RSS {rss_kb / 2**20:6.2f} GiB   top λ {np.round(top, 2)}")


if __name__ == "__main__":
    main()
