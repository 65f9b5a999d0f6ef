"""An in-memory run context for driving tasks without the runner (tests only)."""

from pathlib import Path


class FakeContext:
    def __init__(self, root: Path, run_key: str = "run0", upstream_dirs=None, upstream_bytes=None, stop_after=None):
        self.root = Path(root)
        self.run_key = run_key
        self.metrics: dict[tuple[str, int], float] = {}
        self.artifacts: dict[str, tuple[bytes, str, dict]] = {}
        self.recorded_dirs: dict[str, dict] = {}
        self.checkpoint: bytes | None = None
        self.checkpoint_step: int | None = None
        self.progress_calls = 0
        self.upstream_dirs = upstream_dirs or {}
        self.upstream_bytes = upstream_bytes or {}
        self.stop_after = stop_after  # should_stop() turns True after this many progress calls

    def log_metrics(self, step, values):
        for name, value in values.items():
            self.metrics[(name, int(step))] = float(value)

    def series(self, name):
        return [v for (n, _), v in sorted(self.metrics.items(), key=lambda kv: kv[0][1]) if n == name]

    def save_artifact(self, name, data, kind, metadata=None):
        self.artifacts[name] = (data, kind, dict(metadata or {}))

    def load_checkpoint(self):
        return self.checkpoint

    def save_checkpoint(self, step, payload):
        self.checkpoint_step, self.checkpoint = step, payload

    def progress(self, step, total):
        self.progress_calls += 1

    def should_stop(self):
        return self.stop_after is not None and self.progress_calls > self.stop_after

    def artifact_dir(self, name):
        path = self.root / self.run_key / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def record_artifact_dir(self, name, kind, metadata=None):
        self.recorded_dirs[name] = {"kind": kind, **dict(metadata or {})}

    def upstream_artifact(self, name, artifact):
        return self.upstream_bytes[(name, artifact)]

    def upstream_artifact_dir(self, name, artifact):
        return self.upstream_dirs[(name, artifact)]

    def cached(self, namespace, key, compute):
        return compute()


def fast_compile(monkeypatch) -> None:
    """Compile the kernel functions at XLA's lowest optimization level: the kernels of these tests
    are tiny, and compiling them dominates their time (half of it at the default level)."""
    from ntklab.engine import entk

    monkeypatch.setattr(entk, "COMPILER_OPTIONS", {"xla_backend_optimization_level": 0})
