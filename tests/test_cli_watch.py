"""`ntklab watch` and `ntklab logs --follow` through the real CLI on both databases, against a run
that is running in another process; and the sparkline."""

import json
import signal
import time

from conftest import ntklab, start_ntklab
from ntklab.reports.live import sparkline

SLOW = "name: slow\ngroups:\n  s: {task: probe, steps: 24, step_seconds: 0.25, checkpoint_every_steps: 2}\n"


def test_sparkline_spans_lowest_to_highest():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([7, 0]) == "█▁"
    assert sparkline([2.0, None, 2.0]) == "▁ ▁", "NaN shows as a gap"
    assert sparkline(list(range(100)), width=4) == "▁▃▆█", "averaged down to the width"
    assert sparkline([]) == ""


def test_watch_and_follow_a_running_run(home, db_url):
    (home / "slow.yaml").write_text(SLOW)
    process = start_ntklab("run", "slow.yaml", "--lease-seconds", "5", home=home, db=db_url)
    try:
        deadline, row = time.monotonic() + 60, ""
        while time.monotonic() < deadline:
            shown = ntklab("watch", "slow", "--once", home=home, db=db_url)
            row = next((line for line in shown.stdout.splitlines() if "slow/s" in line), "")
            if "running" in row and "loss" in row and any(c in row for c in "▁▂▃▄▅▆▇█"):
                break
            time.sleep(0.5)
        assert "running" in row and "ETA" in row and "loss" in row, shown.stdout + shown.stderr
        key = json.loads(ntklab("query", "-e", "slow", "-c", "key", "-f", "json", home=home, db=db_url,
                                check=True).stdout)[0]["key"]
        followed = ntklab("logs", key[:10], "--follow", home=home, db=db_url, timeout=120)
        assert followed.returncode == 0, followed.stderr
        lines = followed.stdout.splitlines()
        assert "from scratch" in lines[0] and "done after" in lines[-1], "from the first line to the run's end"
        assert followed.stdout.count("checkpoint at step") == 11, "every line once, as it was appended"
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.terminate()
        process.communicate(timeout=60)
    finished = ntklab("watch", "--once", home=home, db=db_url, check=True).stdout
    assert any("done" in line and "slow/s" in line and "24/24" in line for line in finished.splitlines()), finished

    live = start_ntklab("watch", "slow", "--interval", "0.2", home=home, db=db_url)
    time.sleep(10)  # started and refreshing; off a terminal, rich Live prints its last frame when it stops
    live.send_signal(signal.SIGINT)
    stdout, _ = live.communicate(timeout=30)
    assert live.returncode == 130 and "slow/s" in stdout


def test_watch_and_follow_usage_errors(home):
    (home / "slow.yaml").write_text(SLOW.replace("24", "2").replace("0.25", "0"))
    ntklab("run", "slow.yaml", home=home, check=True)
    assert "no experiment named 'nope'" in ntklab("watch", "nope", "--once", home=home).stderr
    key = json.loads(ntklab("query", "-c", "key", "-f", "json", home=home, check=True).stdout)[0]["key"]
    finished = ntklab("logs", key, "--follow", home=home, timeout=30, check=True).stdout
    assert "done after" in finished.splitlines()[-1], "a finished run's log is printed and the command ends"
