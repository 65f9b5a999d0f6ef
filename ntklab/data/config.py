"""Dataset configs: one model per dataset, discriminated by `dataset`."""

from typing import Annotated, Literal, Union

from pydantic import Field, PositiveInt, model_validator

from ntklab.configbase import StrictModel

Augment = Literal["none", "crop_flip"]
AUGMENT_DESCRIPTION = (
    "training-time augmentation, a pure function of (seed, epoch, step): crop_flip pads by 4, "
    "crops back to size at a random offset and flips horizontally with probability 1/2"
)


class DigitsData(StrictModel):
    """scikit-learn's handwritten digits: 1,797 real 8x8 grey images with pixel values 0..16, 10 classes."""

    dataset: Literal["digits"]
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0, description="share of the samples held out, stratified")
    split_seed: int = Field(0, description="seed of the deterministic stratified train/test split")
    n_train: PositiveInt | None = Field(None, description="stratified subsample of the training split")
    n_test: PositiveInt | None = Field(None, description="stratified subsample of the test split")
    standardize: bool = Field(True, description="per-channel standardization with training statistics")
    augment: Augment = Field("none", description=AUGMENT_DESCRIPTION)


class SyntheticData(StrictModel):
    """Gaussian inputs labelled by a random linear teacher (argmax of K random directions)."""

    dataset: Literal["synthetic"]
    n_train: PositiveInt = 512
    n_test: PositiveInt = 256
    dim: PositiveInt = 16
    image_shape: tuple[PositiveInt, PositiveInt, PositiveInt] | None = Field(
        None, description="reshape inputs to (height, width, channels); its product must equal dim"
    )
    num_classes: int = Field(2, ge=2)
    label_noise: float = Field(0.0, ge=0.0, le=1.0, description="share of labels replaced by uniform ones")
    data_seed: int = 0
    augment: Augment = Field("none", description=AUGMENT_DESCRIPTION)

    @model_validator(mode="after")
    def _shape_matches_dim(self) -> "SyntheticData":
        if self.image_shape is not None:
            h, w, c = self.image_shape
            if h * w * c != self.dim:
                raise ValueError(f"image_shape {list(self.image_shape)} has {h * w * c} values, dim is {self.dim}")
        elif self.augment != "none":
            raise ValueError("augment needs image inputs: set image_shape")
        return self


DataConfig = Annotated[Union[DigitsData, SyntheticData], Field(discriminator="dataset")]
