"""A peer's kernel benchmark run in a process of its own, its JSON lines read back as table rows,
each kernel compared with ntklab's float64 reference (bench/entk.py, bench/entk_zoo.py)."""

import json
import os
import subprocess
import sys

import numpy as np


def relative_error(k: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(k, np.float64) - reference)) / np.max(np.abs(reference)))


def run_peer(command: list[str], label: str, reference: np.ndarray, note=None) -> list[dict]:
    """Rows `{side, seconds, compile_s, error[, note]}` of the peer `command`: it prints one JSON
    record per implementation (`impl`, `seconds`, `compile_s`, `kernel_file`, and `note(record)`'s
    fields) and a `check` record of its logits against ntklab's. An empty list when it failed."""
    env = dict(os.environ)
    env.pop("JAX_ENABLE_X64", None)
    env.pop("XLA_FLAGS", None)  # flags for this process's jaxlib may be unknown to the peer's, which aborts on them
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        print(f"{label} failed:\n{result.stderr[-3000:]}", file=sys.stderr)
        return []
    rows = []
    for line in result.stdout.splitlines():
        record = json.loads(line)
        if "check" in record:
            if record["relative_error"] > 1e-4:
                print(f"warning: {label} logits differ from ntklab's by {record['relative_error']:.2e}", file=sys.stderr)
            continue
        row = {"side": f"{label} {record['impl']}", "compile_s": record["compile_s"] - record["seconds"],
               "seconds": record["seconds"], "error": relative_error(np.load(record["kernel_file"]), reference)}
        rows.append(row | ({"note": note(record)} if note is not None else {}))
    return rows
