"""torch.func peers for bench/entk_zoo.py: the empirical NTK of a zoo network, full 10x10 blocks,
two ways.

- `seed`: ntkgen's own method. Batches of B examples, B = 2·memory / (P·10·8·3), ntkgen's batch
  of a float32 kernel (its `ntk_bs32`, twice the float64 batch) sized to the GPU; per block row
  i, `vmap(jacrev)` Jacobians of X_i (one per parameter tensor); per block column j ≥ i the
  Jacobians of X_j computed again; the block is the sum over parameter tensors of per-tensor
  einsums, written at [i, j] and transposed at [j, i].
- `cached`: the same Jacobians computed once per batch and kept, then the same per-tensor einsums.

The network is rebuilt in torch from the problem file bench/entk_zoo.py writes: the layer list
of ntklab's plan (`ntklab.engine.plan.to_layers`, the same ops, shapes and parameter counts) and
ntklab's parameters in the plan's order, each layer's forward multipliers included. SAME padding
follows XLA (with stride 2 on even sizes: none before, one after), as ntklab's layers do. The
logits are checked against ntklab's. Prints one JSON line per measurement.

    python bench/peers/torch_zoo.py PROBLEM.npz seed,cached REPEATS OUT_PREFIX THREADS MEMORY_BYTES
"""

import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import jacrev, vmap


def same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class Network:
    """The forward pass of an ntklab layer list on NCHW tensors, parameters by name p<i>_<field>."""

    def __init__(self, layers: list, arrays: dict):
        self.layers = layers
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.multipliers: dict[int, tuple[float, float]] = {}
        self._count = 0
        self._load(layers, arrays)

    def _load(self, layers, arrays):
        for op in layers:
            if op["op"] in ("sum", "concat"):
                for branch in op["branches"]:
                    self._load(branch, arrays)
                continue
            if op["op"] not in ("conv", "dense", "batch_norm"):
                continue
            i = self._count
            self._count += 1
            if op["op"] == "batch_norm":
                self.params[f"p{i}_scale"] = torch.from_numpy(arrays[f"p{i}_scale"])
                self.params[f"p{i}_offset"] = torch.from_numpy(arrays[f"p{i}_offset"])
                self.buffers[f"p{i}_mean"] = torch.from_numpy(arrays[f"p{i}_mean"])
                self.buffers[f"p{i}_var"] = torch.from_numpy(arrays[f"p{i}_var"])
                continue
            w = torch.from_numpy(arrays[f"p{i}_weight"])
            self.params[f"p{i}_weight"] = w.permute(3, 2, 0, 1).contiguous() if w.ndim == 4 else w
            if f"p{i}_bias" in arrays:
                self.params[f"p{i}_bias"] = torch.from_numpy(arrays[f"p{i}_bias"])
            self.multipliers[i] = (float(arrays[f"p{i}_mult"][0]), float(arrays[f"p{i}_mult"][1]))

    def __call__(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        counter = iter(range(1 << 30))
        return self._run(self.layers, params, x.permute(0, 3, 1, 2), counter)

    def _run(self, layers, params, h, counter):
        for op in layers:
            kind = op["op"]
            if kind in ("sum", "concat"):
                outs = [self._run(branch, params, h, counter) if branch else h for branch in op["branches"]]
                h = sum(outs[1:], outs[0]) if kind == "sum" else torch.cat(outs, dim=1)
            elif kind == "conv":
                i = next(counter)
                w, b = params[f"p{i}_weight"], params.get(f"p{i}_bias")
                cw, cb = self.multipliers[i]
                (kh, kw), (sh, sw) = op["kernel_size"], op["strides"]
                if op["padding"] == "SAME":
                    (t, bo), (le, r) = same_padding(h.shape[2], kh, sh), same_padding(h.shape[3], kw, sw)
                    h = F.pad(h, (le, r, t, bo))
                h = cw * F.conv2d(h, w, None, (sh, sw), 0, 1, op["groups"])
                if b is not None:
                    h = h + cb * b[None, :, None, None]
            elif kind == "dense":
                i = next(counter)
                cw, cb = self.multipliers[i]
                h = cw * (h @ params[f"p{i}_weight"])
                if f"p{i}_bias" in params:
                    h = h + cb * params[f"p{i}_bias"]
            elif kind == "batch_norm":
                i = next(counter)
                mean, var = self.buffers[f"p{i}_mean"], self.buffers[f"p{i}_var"]
                scale = params[f"p{i}_scale"] * torch.rsqrt(var + op["eps"])
                h = (h - mean[None, :, None, None]) * scale[None, :, None, None] + params[f"p{i}_offset"][None, :, None, None]
            elif kind == "act":
                h = torch.relu(h)
            elif kind == "max_pool":
                if op["padding"] != "VALID":
                    raise SystemExit("torch_zoo: only VALID max pooling")
                h = F.max_pool2d(h, op["window"], op["strides"])
            elif kind == "avg_pool":
                h = F.avg_pool2d(h, op["window"], op["strides"])
            elif kind == "global_avg_pool":
                h = h.mean(dim=(2, 3))
            elif kind == "flatten":
                h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # ntklab flattens NHWC
            else:
                raise SystemExit(f"torch_zoo: op {kind!r} is not supported")
        return h


def jacobians(net: Network, params: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per parameter tensor, the Jacobians of the logits of each example: (B·m, p_t)."""
    single = lambda p, xi: net(p, xi[None])[0]
    jac = vmap(jacrev(single), (None, 0))(params, x)
    return {name: j.flatten(2).flatten(0, 1) for name, j in jac.items()}


def block(ja: dict, jb: dict) -> torch.Tensor:
    return torch.stack([torch.einsum("Nf,Mf->NM", ja[t], jb[t]) for t in ja]).sum(0)


def seed_kernel(net, params, x, batch):
    """ntkgen's loop: row Jacobians once per row, column Jacobians again for every block."""
    n, m = x.shape[0], 10
    out = torch.zeros(n * m, n * m)
    starts = range(0, n, batch)
    for i in starts:
        ji = jacobians(net, params, x[i : i + batch])
        for j in starts:
            if j < i:
                continue
            jj = jacobians(net, params, x[j : j + batch])
            k = block(ji, jj)
            out[i * m : i * m + k.shape[0], j * m : j * m + k.shape[1]] = k
            out[j * m : j * m + k.shape[1], i * m : i * m + k.shape[0]] = k.T
    return out


def cached_kernel(net, params, x, batch):
    """The Jacobians of every batch once, then every block."""
    n, m = x.shape[0], 10
    starts = list(range(0, n, batch))
    jac = {i: jacobians(net, params, x[i : i + batch]) for i in starts}
    out = torch.zeros(n * m, n * m)
    for i in starts:
        for j in starts:
            if j < i:
                continue
            k = block(jac[i], jac[j])
            out[i * m : i * m + k.shape[0], j * m : j * m + k.shape[1]] = k
            out[j * m : j * m + k.shape[1], i * m : i * m + k.shape[0]] = k.T
    return out


def main(problem_path: str, methods: str, repeats: int, out_prefix: str, threads: int, memory: int) -> None:
    torch.set_num_threads(threads)
    problem = np.load(problem_path)
    net = Network(json.loads(str(problem["layers"])), {k: problem[k] for k in problem.files})
    x = torch.from_numpy(problem["x"])
    with torch.no_grad():
        logits = net(net.params, x).numpy()
    error = float(np.max(np.abs(logits - problem["logits"])) / np.max(np.abs(problem["logits"])))
    print(json.dumps({"check": "logits", "relative_error": error}), flush=True)
    P = sum(p.numel() for p in net.params.values())
    # ntkgen's float32 batch: 2 * total memory / (P * 10 * 8 * 3), here of the benchmark's budget
    batch = max(1, min(len(x), 2 * memory // (P * 10 * 8 * 3)))
    for method in methods.split(","):
        fn = {"seed": lambda: seed_kernel(net, net.params, x, batch),
              "cached": lambda: cached_kernel(net, net.params, x, batch)}[method]  # fmt: skip
        start = time.perf_counter()
        k = fn()
        first = time.perf_counter() - start
        times = [first]
        for _ in range(repeats - 1):
            start = time.perf_counter()
            k = fn()
            times.append(time.perf_counter() - start)
        path = f"{out_prefix}_torch_{method}.npy"
        np.save(path, k.numpy())
        print(json.dumps({"impl": method, "seconds": min(times), "compile_s": first, "parameters": P,
                          "batch": batch, "kernel_file": path}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
