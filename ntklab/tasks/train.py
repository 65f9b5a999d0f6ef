"""The `train` task: mini-batch training of a network, with metrics, checkpoints and resume."""

from typing import Literal

from pydantic import Field

from ntklab.configbase import StrictModel
from ntklab.data.config import DataConfig
from ntklab.engine.config import ModelConfig, TrainConfig


class TrainRunConfig(StrictModel):
    task: Literal["train"]
    seed: int = Field(0, description="seeds the initialization and the batch order")
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
