"""The Ortiz-Jiménez specs through the real CLI: the small eigenfunction study shows the paper's
trends, an eigendecomposition killed mid-run re-runs without recomputing its kernel, and one whose
kernel store has lost its files fails naming the kernel run."""

import json
import shutil
import sqlite3
import time

from conftest import SPECS, ntklab, start_ntklab


def runs_by_task(home) -> dict[str, list[tuple]]:
    with sqlite3.connect(home / "ntklab.db") as conn:
        rows = conn.execute("select task, status, attempts from runs").fetchall()
    grouped: dict[str, list[tuple]] = {}
    for task, status, attempts in rows:
        grouped.setdefault(task, []).append((status, attempts))
    return grouped


def test_the_small_study_shows_the_papers_trends(home):
    """specs/ortiz_small.yaml as shipped: one kernel and one eigendecomposition serve every task;
    test accuracy of the network and of its linearization falls as the eigen index ℓ grows; and
    the trained network's kernel grew most along the eigenvector it was trained on (a_i / λ_i
    peaks at i = ℓ); on tasks along
    NAD ℓ both models learn the first NADs and fall to chance on the last ones."""
    ntklab("run", str(SPECS / "ortiz_small.yaml"), home=home, check=True)
    runs = runs_by_task(home)
    assert runs["kernel"] == [("done", 1)] and runs["eigen"] == [("done", 1)], runs
    assert runs["nads"] == [("done", 1)], runs
    assert len(runs["train"]) == 16 and all(status == "done" for status, _ in runs["train"])

    rows = json.loads(ntklab("query", "--paper", "ortiz_small:accuracy", "--format", "json",
                             home=home, check=True).stdout)
    accuracy = {(row["train.expansion_order"], row["data.index"]): row["mean"] for row in rows}
    for order in (0, 1):
        curve = [accuracy[(order, index)] for index in (1, 4, 16, 64)]
        assert all(later <= earlier + 0.01 for earlier, later in zip(curve, curve[1:])), (order, curve)
        assert curve[0] - curve[-1] > 0.08, (order, curve)

    rows = json.loads(ntklab("query", "--paper", "ortiz_small:alignment_gain", "--format", "json",
                             home=home, check=True).stdout)
    for index in (1, 4, 16, 64):
        gains = {row["step"]: row["mean"] for row in rows if row["data.index"] == index}
        assert len(gains) == 128
        ranking = sorted(gains, key=gains.get, reverse=True)
        # the spike at ℓ: first of 128 (at ℓ = 1 the kernel also grows along v_37, which can edge it out)
        assert ranking.index(index) <= (1 if index == 1 else 0), (index, ranking[:5])

    rows = json.loads(ntklab("query", "--paper", "ortiz_small:nad_accuracy", "--format", "json",
                             home=home, check=True).stdout)
    accuracy = {(row["train.expansion_order"], row["data.index"]): row["mean"] for row in rows}
    for order in (0, 1):
        first, second, late, last = (accuracy[(order, index)] for index in (0, 4, 16, 62))
        assert first > 0.8 and first > second > late - 0.02, (order, first, second, late, last)
        assert abs(late - 0.5) < 0.06 and abs(last - 0.5) < 0.06, (order, late, last)


SPEC = """\
name: killed_eigen
groups:
  spectrum:
    task: eigen
    kernel:
      task: kernel
      data: {dataset: synthetic, n_train: 500, n_test: 100, dim: 64}
      kernel: {kind: empirical, model: {arch: mlp, depth: 1, width: 32}}
      points: train+test
      outputs: 1
    method: lanczos
    k: 60
    cache_mb: 0  # every product reads the store: seconds to kill the run in
"""


def test_a_killed_eigen_run_reruns_without_recomputing_its_kernel(home):
    (home / "spec.yaml").write_text(SPEC)
    process = start_ntklab("run", "spec.yaml", home=home)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the eigen run ended before it could be killed: {process.communicate()}"
        try:
            if ("running", 1) in runs_by_task(home).get("eigen", []):
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    else:
        raise AssertionError("the eigen run did not start in time")
    process.kill()
    process.wait()
    assert runs_by_task(home)["kernel"] == [("done", 1)]
    ntklab("run", "spec.yaml", home=home, check=True)
    runs = runs_by_task(home)
    assert runs["eigen"] == [("done", 2)] and runs["kernel"] == [("done", 1)], runs
    with sqlite3.connect(home / "ntklab.db") as conn:
        (values,) = conn.execute("select count(*) from metrics where name = 'eigenvalue'").fetchone()
    assert values == 60


MISSING = """\
name: missing_kernel
groups:
  spectrum:
    task: eigen
    kernel:
      task: kernel
      data: {dataset: synthetic, n_train: 24, n_test: 8, dim: 16, image_shape: [4, 4, 1]}
      kernel: {kind: empirical, model: {arch: mlp, depth: 1, width: 16}}
      outputs: 1
    k: 4
"""


def test_an_eigen_run_on_a_kernel_store_that_lost_its_files_names_the_kernel_run(home):
    """The kernel run is done and reused by a new eigendecomposition, but its store lost a file, then
    all of them: the eigen run fails, naming the kernel run and how to recompute it, and the
    kernel run's record is untouched."""
    (home / "spec.yaml").write_text(MISSING)
    ntklab("run", "spec.yaml", home=home, check=True)
    with sqlite3.connect(home / "ntklab.db") as conn:
        (kernel,) = conn.execute("select key from runs where task = 'kernel'").fetchone()
    for k, damage in ((5, "a file"), (6, "the whole store")):
        store = home / "runs" / kernel / "kernel"
        if damage == "a file":
            next(p for p in store.rglob("*") if p.is_file() and "train" in p.parts).unlink()
        else:
            shutil.rmtree(store)
        result = ntklab("run", "spec.yaml", "--set", f"k={k}", home=home)
        assert result.returncode == 1, (damage, result.stderr[-2000:])
        with sqlite3.connect(home / "ntklab.db") as conn:
            (message,) = conn.execute("select error_message from runs where task = 'eigen' and status = 'failed' "
                                      "order by id desc").fetchone()
            assert runs_by_task(home)["kernel"] == [("done", 1)]
        assert f"upstream kernel run: directory artifact 'kernel' of upstream run kernel ({kernel[:12]})" in message
        assert f"`ntklab reset {kernel[:12]}`" in message, message
        assert kernel[:12] in result.stderr and "Traceback" not in result.stderr
