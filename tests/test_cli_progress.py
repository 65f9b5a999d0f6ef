"""Progress reaches the database within seconds, not with the lease renewal: `ntklab status`
of a running run shows its step on SQLite and PostgreSQL."""

import re
import time

from conftest import ntklab, start_ntklab


def test_status_shows_the_step_of_a_running_run_within_seconds(home, db_url):
    (home / "slow.yaml").write_text("name: slow\ngroups:\n  g: {task: probe, steps: 3000, step_seconds: 0.1}\n")
    process = start_ntklab("run", "slow.yaml", "--lease-seconds", "600", home=home, db=db_url)
    try:
        steps, deadline = [], time.monotonic() + 120
        while len(steps) < 2 and time.monotonic() < deadline:
            time.sleep(3)
            status = ntklab("status", home=home, db=db_url)
            found = re.search(r"step (\d+)/3000", status.stdout)
            if found:
                steps.append(int(found.group(1)))
        assert len(steps) == 2 and steps[1] > steps[0] > 0, f"status steps seen: {steps}"
    finally:
        process.kill()
        process.communicate()
