"""Resolves the configs `TrainRunConfig` names but cannot import: its `data` (`TrainData`, which
includes datasets derived from eigen runs) and its `alignment` (which holds an eigen run). Both
nest a kernel run, which may be taken at the end of a train run, so the config types form a cycle
that is closed here, once, when the registry imports this module (ntklab/tasks/__init__.py imports
the registry, so a task config is complete whichever task module is imported first).
"""

from ntklab.tasks.alignment import AlignmentConfig
from ntklab.tasks.derived_data import TrainData
from ntklab.tasks.train import TrainRunConfig

TrainRunConfig.model_rebuild(_types_namespace={"TrainData": TrainData, "AlignmentConfig": AlignmentConfig})
