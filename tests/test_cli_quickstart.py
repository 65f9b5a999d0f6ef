"""The quickstart end to end through the real CLI: run it into a fresh home, query it, run it
again and see every run skipped."""

import csv
import io
import json

from conftest import SPECS, ntklab


def test_quickstart_runs_queries_and_skips_on_rerun(home):
    spec = str(SPECS / "quickstart.yaml")
    first = ntklab("run", spec, home=home, check=True)
    assert "8 runs to execute" in first.stderr

    table = ntklab("query", "-e", "quickstart", "-f", "csv", home=home, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(table)))
    assert len(rows) == 8 and {r["status"] for r in rows} == {"done"}
    assert {r["group"] for r in rows} == {"mlp", "cnn"}
    accuracies = [float(r["test_accuracy"]) for r in rows]
    assert min(accuracies) > 0.9, f"the quickstart networks should learn digits: {accuracies}"

    best = ntklab("query", "-e", "quickstart", "-w", "model.arch == 'mlp' and train.optimizer.lr > 1", "-c",
                  "key,seed,test_accuracy.max", "-f", "json", home=home, check=True).stdout
    records = json.loads(best)
    assert len(records) == 2 and sorted(r["seed"] for r in records) == [0, 1]

    key = rows[0]["key"]
    shown = ntklab("show", key[:8], home=home, check=True).stdout
    assert key in shown and "test_accuracy" in shown and "params" in shown and "jaxlib" in shown

    second = ntklab("run", spec, home=home, check=True)
    assert "0 runs to execute" in second.stderr
    attempts = ntklab("query", "-e", "quickstart", "-c", "key,attempts", "-f", "json", home=home, check=True)
    assert {r["attempts"] for r in json.loads(attempts.stdout)} == {1}
