"""The `nads` task: neural anisotropy directions of a network at initialization
(ntklab/engine/nads.py; Ortiz-Jiménez et al. 2021's compute_nads).

The network is `model` with one logit, drawn from `seed`, in evaluation mode (frozen BatchNorm
statistics). The points are `points` draws of `sigma`·N(0, I) of shape `shape` (sigma 0: one
all-zero image, the seed's default). The seed's NAD configs use GeLU networks on 32x32x1.

Metrics: `nad_value` (σ², the eigenvalue of AᵀA) at step i, 0 the largest; `seconds`, and
`route` (0 explicit, 1 krylov) at step 0. Artifacts: `nads` (k x D, rows flattened in (h, w, c)
order, unit norm; its metadata's `image_shape` is (h, w, c), so `kind: images` figures draw it) and
`values` (k).
"""

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveInt, model_validator

from ntklab.configbase import StrictModel, non_semantic
from ntklab.engine.config import ModelConfig
from ntklab.tasks.context import RunContext

ROUTES = ("explicit", "krylov")


class NADsRunConfig(StrictModel):
    task: Literal["nads"]
    seed: int = Field(0, description="seeds the network's initialization and the points")
    model: ModelConfig
    shape: tuple[PositiveInt, PositiveInt, PositiveInt] = Field((32, 32, 1),
                                                                description="input (height, width, channels)")
    sigma: NonNegativeFloat = Field(0.0, description="the points are sigma·N(0, I); 0: one all-zero image")
    points: PositiveInt = Field(1, description="how many points the mixed derivative is averaged over")
    k: PositiveInt | None = Field(None, description="NADs kept, largest σ first (default: D - 1, as the seed)")
    dtype: Literal["float32", "float64"] = Field("float32", description="compute precision")
    route: Literal["auto", "explicit", "krylov"] = non_semantic(
        "auto", "explicit: the D x D Gram matrix AᵀA from D vectorized JVP/VJP products, then eigh; krylov: "
        "Lanczos over the products one at a time; auto: explicit when it fits in memory_mb and k is not small "
        "(both exact)"
    )
    memory_mb: PositiveInt = non_semantic(2048, "memory the explicit route may use")

    @model_validator(mode="after")
    def _fields_fit(self) -> "NADsRunConfig":
        d = self.shape[0] * self.shape[1] * self.shape[2]
        if self.k is not None and self.k > d:
            raise ValueError(f"k = {self.k} exceeds the input dimension D = {d}")
        if self.sigma == 0 and self.points > 1:
            raise ValueError("sigma 0 gives one all-zero image: use points: 1")
        return self

    def input_dimension(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]


def run(config: NADsRunConfig, ctx: RunContext) -> None:
    import contextlib
    import io
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    from ntklab.engine.entk import cast_floats, parameter_count
    from ntklab.engine.models import build_model, partition_parameters
    from ntklab.engine.nads import choose_route, neural_anisotropy_directions

    d = config.input_dimension()
    k = config.k or d - 1
    x64 = jax.enable_x64(True) if config.dtype == "float64" else contextlib.nullcontext()
    with x64:
        dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
        model = build_model(config.model, config.shape, 1, jax.random.PRNGKey(config.seed))
        params, rest = partition_parameters(cast_floats(model, dtype))
        rng = np.random.default_rng(config.seed)
        points = config.sigma * rng.standard_normal((config.points, *config.shape))
        route = config.route
        if route == "auto":
            route = choose_route(d, parameter_count(params), k, np.dtype(config.dtype).itemsize,
                                 config.memory_mb << 20)
        if route == "krylov" and k >= d:
            raise ValueError(f"the krylov route finds at most D - 1 = {d - 1} NADs; use route: explicit for all {d}")
        start = time.perf_counter()
        spectrum = neural_anisotropy_directions(lambda m, x: m(x), params, rest, points, k, route, seed=config.seed)
        seconds = time.perf_counter() - start
    for i, value in enumerate(spectrum.values):
        ctx.log_metrics(i, {"nad_value": float(value)})
    ctx.log_metrics(0, {"seconds": seconds, "route": float(ROUTES.index(route))})

    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    vectors = spectrum.vectors.astype(np.float32)
    ctx.save_artifact("nads", npy(vectors), kind="npy", metadata={
        "shape": list(vectors.shape), "image_shape": list(config.shape), "layout": "hwc", "route": route})
    ctx.save_artifact("values", npy(spectrum.values.astype(np.float64)), kind="npy",
                      metadata={"shape": [len(spectrum.values)], "route": route})
