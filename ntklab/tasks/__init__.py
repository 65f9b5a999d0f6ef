"""Tasks: one module per task kind, each with its config model and its `run(config, ctx)`.

Importing the package imports the registry, which defines every task config and resolves the
config types that refer to each other by name (a train run's `data` may derive from an eigen run,
ntklab/tasks/derived_data.py): whichever task module is imported first, its configs are complete.
"""

from ntklab.tasks import registry  # noqa: F401
