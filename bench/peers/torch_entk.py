"""torch.func peer for bench/entk.py: `vmap(jacrev)` Jacobians and a per-parameter-tensor
contraction, as ntkgen and the torch.func NTK tutorial do. Same problem file as the
neural-tangents peer; the network is rebuilt functionally with ntklab's weights (NTK
parameterization) and checked against ntklab's logits. Prints one JSON line per measurement.
"""

import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev, vmap  # noqa: F401


def forward(arch, params, x, w_std, b_std):
    """x: NHWC; the layers of ntklab's models, NTK parameterization."""

    def dense(h, w, b):
        return (w_std / math.sqrt(w.shape[0])) * (h @ w) + b_std * b

    def conv(h, w, b):  # w: OIHW
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        return (w_std / math.sqrt(fan_in)) * F.conv2d(h, w, padding="same") + b_std * b[None, :, None, None]

    if arch == "lenet5":
        h = x.permute(0, 3, 1, 2)
        h = F.avg_pool2d(torch.relu(conv(h, params["w0"], params["b0"])), 2)
        h = F.avg_pool2d(torch.relu(conv(h, params["w1"], params["b1"])), 2)
        h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)
        h = torch.relu(dense(h, params["w2"], params["b2"]))
        h = torch.relu(dense(h, params["w3"], params["b3"]))
        return dense(h, params["w4"], params["b4"])
    h = x.reshape(x.shape[0], -1)
    h = torch.relu(dense(h, params["w0"], params["b0"]))
    h = torch.relu(dense(h, params["w1"], params["b1"]))
    return dense(h, params["w2"], params["b2"])


def main(problem_path: str, repeats: int, out_prefix: str, threads: int) -> None:
    torch.set_num_threads(threads)
    problem = np.load(problem_path)
    arch = str(problem["arch"])
    w_std, b_std = float(problem["w_std"]), float(problem["b_std"])
    params = {}
    for i in range(int(problem["layers"])):
        w = torch.from_numpy(problem[f"w{i}"])
        params[f"w{i}"] = w.permute(3, 2, 0, 1).contiguous() if w.ndim == 4 else w
        params[f"b{i}"] = torch.from_numpy(problem[f"b{i}"])
    x1 = torch.from_numpy(problem["x1"])
    x2 = torch.from_numpy(problem["x2"])
    with torch.no_grad():
        logits = forward(arch, params, x1, w_std, b_std).numpy()
    error = float(np.max(np.abs(logits - problem["logits"])) / np.max(np.abs(problem["logits"])))
    print(json.dumps({"check": "logits", "relative_error": error}), flush=True)

    def single(p, x):
        return forward(arch, p, x[None], w_std, b_std)[0]

    def kernel(a, b):
        ja = vmap(jacrev(single), (None, 0))(params, a)
        jb = vmap(jacrev(single), (None, 0))(params, b)
        blocks = [torch.einsum("Naf,Mbf->NMab", ja[k].flatten(2), jb[k].flatten(2)) for k in ja]
        return torch.stack(blocks).sum(0)

    start = time.perf_counter()
    k = kernel(x1, x2)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        k = kernel(x1, x2)
        times.append(time.perf_counter() - start)
    n1, n2, m = k.shape[0], k.shape[1], k.shape[2]
    path = f"{out_prefix}_torch_jacobian.npy"
    np.save(path, k.permute(0, 2, 1, 3).reshape(n1 * m, n2 * m).numpy())
    print(json.dumps({"impl": "jacobian", "compile_s": first, "seconds": min(times), "kernel_file": path}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
