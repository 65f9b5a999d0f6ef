"""The runner: plan, claim, execute, heartbeat, resume. It owns every side effect of a run."""
