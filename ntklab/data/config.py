"""Dataset configs: one model per dataset, discriminated by `dataset`."""

import math
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from ntklab.configbase import Seed, StrictModel, added_field, non_semantic

Augment = Literal["none", "crop_flip", "rotate_crop"]
AUGMENT_DESCRIPTION = (
    "training-time augmentation, a pure function of (seed, epoch, step): crop_flip pads by 4, "
    "crops back to size at a random offset and flips horizontally with probability 1/2; rotate_crop "
    "rotates by an angle uniform in [-20, 20] degrees, then pads by 4 and crops (ntkgen's MNIST recipe)"
)


class HighFrequencyNoise(StrictModel):
    """Ghorbani et al.'s high-frequency noise, added: each image is centred,
    Gaussian noise on the DCT coefficients within `radius` of the highest-frequency corner is scaled
    to tau times the norm of the image's DCT and added, and the result is rescaled to norm sqrt(d).
    At tau = 0: centring and normalization only."""

    kind: Literal["dct_high"]
    tau: NonNegativeFloat = Field(
        description="noise norm relative to the image's; the paper's grid is linspace(0, 3, 15)"
    )
    radius: PositiveFloat | None = Field(
        None, description="mask radius around the highest-frequency corner (default side - 1: 600 of 784 "
        "coefficients on 28x28, 782 of 1024 on 32x32, 45 of 64 on 8x8)"
    )
    seed: Seed = Field(2048, description="seeds the noise (train and test draw from separate streams)")


class LowFrequencyNoise(StrictModel):
    """Ghorbani et al.'s low-frequency noise, replacing: the top-left
    threshold x threshold block of each channel's DCT is replaced by a draw from a Gaussian with the
    mean and covariance of the training images' DCT coefficients. No renormalization afterwards."""

    kind: Literal["dct_low"]
    threshold: NonNegativeInt = Field(
        description="side of the replaced block; the paper's grids: FMNIST 1, 3, ..., 27; "
        "CIFAR-10 0, 4, 8, 12, 14, 17, 19, 20, 22, 24, 25, 27, 28, 29, 30"
    )
    seed: Seed = Field(2048, description="seeds the noise (train and test draw from separate streams)")
    standardize_after: bool = Field(
        False, description="per-channel standardization with training statistics after the noise (Ghorbani's CIFAR-10)"
    )


Noise = Annotated[HighFrequencyNoise | LowFrequencyNoise, Field(discriminator="kind")]
NOISE_DESCRIPTION = "DCT-domain perturbation applied after normalization (Ghorbani et al. 2020)"
Normalize = Literal["none", "standardize", "per_image"]
NORMALIZE_DESCRIPTION = (
    "before any noise: none (pixels in [0, 1]); standardize (per channel, training statistics); "
    "per_image (centre each image and scale it to Euclidean norm sqrt(d), Ghorbani)"
)
RGB32_DESCRIPTION = (
    "resize to 32x32 (bilinear, 8-bit) and repeat the grey channel 3 times, as ntkgen feeds these "
    "images to CIFAR networks"
)
ROOT_DESCRIPTION = "directory holding <dataset>/ with the official files (default: NTKLAB_DATA, else ~/.ntklab-data)"


class DigitsData(StrictModel):
    """scikit-learn's handwritten digits: 1,797 real 8x8 grey images with pixel values 0..16, 10 classes."""

    dataset: Literal["digits"]
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0, description="share of the samples held out, stratified")
    split_seed: Seed = Field(0, description="seed of the deterministic stratified train/test split")
    n_train: PositiveInt | None = Field(None, description="stratified subsample of the training split")
    n_test: PositiveInt | None = Field(None, description="stratified subsample of the test split")
    standardize: bool = Field(True, description="per-channel standardization with training statistics")
    noise: Noise | None = Field(None, description=NOISE_DESCRIPTION + "; on 8x8 images, an 8x8 DCT")
    augment: Augment = Field("none", description=AUGMENT_DESCRIPTION)
    rgb32: bool = added_field(False, RGB32_DESCRIPTION + " (the 17 grey levels scaled to 8 bits first)")


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
    data_seed: Seed = 0
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


def spike_dimension(d: int, eta: float) -> int:
    """d0 = floor(d^eta), robust to rounding (1024^0.4 evaluates to 16.000000000000004)."""
    return math.floor(d**eta + 1e-9)


class SpikedData(StrictModel):
    """Ghorbani et al.'s synthetic spiked covariates (regression): x ~ N(0, I_d) with its first
    d0 = floor(d^eta) coordinates rescaled to norm d^((eta + kappa)/2) and the rest to norm sqrt(d);
    the target sums, over `degrees`, products of k consecutive spiked coordinates with Exp(1)
    weights, each degree scaled to unit RMS on the training set, plus Gaussian noise of std
    `target_noise` (none in the paper). Labels are float targets and num_classes is 0. Defaults
    are the paper's (n_train = 2^20 is about 4 GiB of inputs)."""

    dataset: Literal["spiked"]
    d: int = Field(1024, ge=2)
    eta: float = Field(0.4, gt=0.0, lt=1.0)
    kappa: NonNegativeFloat = Field(0.0, description="the paper's grid is linspace(0, 1, 10, endpoint=False)")
    n_train: PositiveInt = 1_048_576
    n_test: PositiveInt = 10_000
    degrees: list[Annotated[int, Field(ge=1)]] = Field([2, 3, 4], min_length=1)
    train_seed: Seed = 145
    test_seed: Seed = 2
    coefficient_seed: Seed = 14
    target_noise: NonNegativeFloat = added_field(
        0.0, description="std of Gaussian noise added to train and test targets (the best risk is its square)"
    )

    @model_validator(mode="after")
    def _degrees_fit(self) -> "SpikedData":
        d0 = spike_dimension(self.d, self.eta)
        if not 1 <= d0 < self.d:
            raise ValueError(f"d^eta leaves {d0} spiked coordinates out of d = {self.d}")
        if len(set(self.degrees)) != len(self.degrees) or max(self.degrees) > d0:
            raise ValueError(f"degrees must be distinct and at most d0 = floor(d^eta) = {d0}")
        return self


class _FileImageData(StrictModel):
    """Fields shared by the datasets read from their official files."""

    root: str | None = non_semantic(None, ROOT_DESCRIPTION)
    n_train: PositiveInt | None = Field(None, description="stratified subsample of the training split")
    n_test: PositiveInt | None = Field(None, description="stratified subsample of the test split")
    subsample_seed: Seed = Field(0, description="seed of the stratified subsamples")
    normalize: Normalize = Field("standardize", description=NORMALIZE_DESCRIPTION)
    noise: Noise | None = Field(None, description=NOISE_DESCRIPTION)
    augment: Augment = Field("none", description=AUGMENT_DESCRIPTION)


class MNISTData(_FileImageData):
    """MNIST from its official IDX files (gzipped or not): 60,000 + 10,000 28x28 grey digits."""

    dataset: Literal["mnist"]
    rgb32: bool = Field(False, description=RGB32_DESCRIPTION)


class FashionMNISTData(_FileImageData):
    """Fashion-MNIST from its official IDX files: 60,000 + 10,000 28x28 grey images, 10 classes."""

    dataset: Literal["fashion_mnist"]
    rgb32: bool = Field(False, description=RGB32_DESCRIPTION)


class KMNISTData(_FileImageData):
    """Kuzushiji-MNIST from its official IDX files: 60,000 + 10,000 28x28 grey images, 10 classes."""

    dataset: Literal["kmnist"]
    rgb32: bool = Field(False, description=RGB32_DESCRIPTION)


GRAYSCALE_DESCRIPTION = "convert to one channel with skimage's rgb2gray weights (0.2125, 0.7154, 0.0721)"


class CIFAR10Data(_FileImageData):
    """CIFAR-10 from the official python archive (packed or unpacked): 50,000 + 10,000 32x32 RGB images."""

    dataset: Literal["cifar10"]
    grayscale: bool = Field(False, description=GRAYSCALE_DESCRIPTION)


class CIFAR100Data(_FileImageData):
    """CIFAR-100 from the official python archive (packed or unpacked): 50,000 + 10,000 32x32 RGB images."""

    dataset: Literal["cifar100"]
    labels: Literal["fine", "coarse"] = Field("fine", description="100 fine classes or 20 superclasses")
    grayscale: bool = Field(False, description=GRAYSCALE_DESCRIPTION)


class SVHNData(_FileImageData):
    """SVHN cropped digits from the official .mat files: 73,257 + 26,032 32x32 RGB images."""

    dataset: Literal["svhn"]
    grayscale: bool = Field(False, description=GRAYSCALE_DESCRIPTION)


CIFAR2_VARIANTS = {
    # variant: (classes giving label 0, classes giving label 1, grayscale, normalize)
    "ghorbani": ((3,), (0,), True, "per_image"),
    "ortiz": ((5, 6, 7, 8, 9), (0, 1, 2, 3, 4), False, "standardize"),
}


class CIFAR2Data(_FileImageData):
    """Two-class CIFAR-10, from the CIFAR-10 files.

    ghorbani: cat (3) -> 0 and airplane (0) -> 1, grayscale, each image centred and scaled to norm
    sqrt(1024): all 10,000 training and 2,000 test images of the two classes (Ghorbani et al.).
    ortiz: classes 0-4 (airplane, automobile, bird, cat, deer) -> 1 and 5-9 -> 0, RGB, per-channel
    standardization; set n_train / n_test for stratified subsamples (Ortiz-Jimenez et al.).
    `grayscale` and `normalize` default to the variant's and may be overridden."""

    dataset: Literal["cifar2"]
    variant: Literal["ghorbani", "ortiz"] = "ghorbani"
    grayscale: bool = Field(True, description=GRAYSCALE_DESCRIPTION + " (default: the variant's)")

    @model_validator(mode="before")
    @classmethod
    def _variant_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            _, _, gray, normalize = CIFAR2_VARIANTS.get(data.get("variant", "ghorbani"), CIFAR2_VARIANTS["ghorbani"])
            data = {"grayscale": gray, "normalize": normalize, **data}
        return data


REGRESSION_DATASETS = ("spiked",)  # float targets: models train with the squared loss
FILE_DATASETS = (MNISTData, FashionMNISTData, KMNISTData, CIFAR10Data, CIFAR100Data, SVHNData, CIFAR2Data)

DataConfig = Annotated[
    DigitsData | SyntheticData | SpikedData | MNISTData | FashionMNISTData | KMNISTData | CIFAR10Data
    | CIFAR100Data | SVHNData | CIFAR2Data,
    Field(discriminator="dataset"),
]
