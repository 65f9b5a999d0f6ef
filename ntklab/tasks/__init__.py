"""Tasks: one module per task kind, each with its config model and its `run(config, ctx)`."""
