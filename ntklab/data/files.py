"""The official dataset files: where they live on disk, where to download them, how to verify them.

Each file-based dataset has a directory `<root>/<name>/` under the data root (`data.root` in a
spec, else the NTKLAB_DATA environment variable, else `~/.ntklab-data`). A dataset is made of
parts (the training images, the test labels, ...); each part can be held in one of several forms
(a gzipped IDX file or the same file unpacked; the CIFAR archive or its unpacked directory). A
form is used when all of its files are present and verify: by size and sha256 (or md5) against
the checksums in OFFICIAL below, recorded with their source.

The table is plain data: tests build a registry of their own (same shape, their own files and
checksums) and pass it, or put it in REGISTRY, so nothing here depends on the network.
"""

import hashlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ntklab.errors import UsageError

DATA_ENV = "NTKLAB_DATA"
DEFAULT_DATA_ROOT = "~/.ntklab-data"
HASH_CHUNK = 1 << 20


class DataError(UsageError):
    """A dataset file is missing or corrupt, or a download failed. The message says what to do."""


@dataclass(frozen=True)
class FileEntry:
    """One official file: its path inside the dataset directory and what it must hash to.

    `size`, `sha256` and `md5` are checked where known (None: not published for this file).
    `urls` are the official locations, tried in order; empty for a file that comes out of an
    archive rather than from a download."""

    path: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Form:
    """One way to hold a part on disk: all of `files` present and verified."""

    label: str
    files: tuple[FileEntry, ...]


@dataclass(frozen=True)
class Part:
    """A piece of a dataset that any one of `forms` provides; the first form is what fetch downloads."""

    name: str
    forms: tuple[Form, ...]

    @property
    def download(self) -> Form:
        return self.forms[0]


@dataclass(frozen=True)
class DatasetFiles:
    name: str
    title: str
    homepage: str
    parts: tuple[Part, ...]
    checksum_source: str


def data_root(root: str | os.PathLike | None = None) -> Path:
    """`root`, else NTKLAB_DATA, else ~/.ntklab-data (user directory expanded, made absolute)."""
    chosen = root or os.environ.get(DATA_ENV) or DEFAULT_DATA_ROOT
    return Path(chosen).expanduser().absolute()


# ---- the official table --------------------------------------------------------------------

_MNIST_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_KMNIST = ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",)

# Unpacked IDX sizes follow from the format: a 4-byte magic, 4 bytes per dimension, then the bytes.
_IDX_UNPACKED_SIZES = {
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}


def _idx_dataset(name: str, title: str, homepage: str, mirrors: tuple[str, ...],
                 gz: Mapping[str, tuple[int, str]], source: str) -> DatasetFiles:
    parts = []
    for stem, part in (("train-images-idx3-ubyte", "train images"), ("train-labels-idx1-ubyte", "train labels"),
                       ("t10k-images-idx3-ubyte", "test images"), ("t10k-labels-idx1-ubyte", "test labels")):
        size, sha256 = gz[stem]
        packed = FileEntry(f"{stem}.gz", size=size, sha256=sha256, urls=tuple(m + f"{stem}.gz" for m in mirrors))
        unpacked = FileEntry(stem, size=_IDX_UNPACKED_SIZES[stem])
        parts.append(Part(part, (Form("gzip", (packed,)), Form("unpacked", (unpacked,)))))
    return DatasetFiles(name, title, homepage, tuple(parts), source)


_TFDS = "size and sha256 of the downloads as tensorflow/datasets records them (url_checksums/{})"
_TORCHVISION_CIFAR = "md5 of the unpacked files as torchvision records them (torchvision/datasets/cifar.py)"

OFFICIAL: dict[str, DatasetFiles] = {
    "mnist": _idx_dataset(
        "mnist", "MNIST", "http://yann.lecun.com/exdb/mnist/", _MNIST_MIRRORS,
        {
            "train-images-idx3-ubyte": (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            "train-labels-idx1-ubyte": (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            "t10k-images-idx3-ubyte": (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            "t10k-labels-idx1-ubyte": (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        },
        _TFDS.format("mnist.txt") + "; unpacked files by their exact size",
    ),
    "fashion_mnist": _idx_dataset(
        "fashion_mnist", "Fashion-MNIST", "https://github.com/zalandoresearch/fashion-mnist", _FASHION,
        {
            "train-images-idx3-ubyte": (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
            "train-labels-idx1-ubyte": (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
            "t10k-images-idx3-ubyte": (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
            "t10k-labels-idx1-ubyte": (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        },
        _TFDS.format("fashion_mnist.txt") + "; unpacked files by their exact size",
    ),
    "kmnist": _idx_dataset(
        "kmnist", "Kuzushiji-MNIST", "https://github.com/rois-codh/kmnist", _KMNIST,
        {
            "train-images-idx3-ubyte": (18165135, "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"),
            "train-labels-idx1-ubyte": (29497, "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"),
            "t10k-images-idx3-ubyte": (3041136, "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"),
            "t10k-labels-idx1-ubyte": (5120, "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"),
        },
        _TFDS.format("kmnist.txt") + "; unpacked files by their exact size",
    ),
    "cifar10": DatasetFiles(
        "cifar10", "CIFAR-10 (python version)", "https://www.cs.toronto.edu/~kriz/cifar.html",
        (Part("train and test", (
            Form("archive", (FileEntry(
                "cifar-10-python.tar.gz", size=170498071,
                sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                md5="c58f30108f718f92721af3b95e74349a",
                urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)),)),
            Form("unpacked", tuple(FileEntry(f"cifar-10-batches-py/{n}", md5=m) for n, m in (
                ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
                ("test_batch", "40351d587109b95175f43aff81a1287e"),
                ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
            ))),
        )),),
        "archive: sha256 as Keras records it (keras/datasets/cifar10.py), md5 from the CIFAR page and "
        "torchvision; " + _TORCHVISION_CIFAR,
    ),
    "cifar100": DatasetFiles(
        "cifar100", "CIFAR-100 (python version)", "https://www.cs.toronto.edu/~kriz/cifar.html",
        (Part("train and test", (
            Form("archive", (FileEntry(
                "cifar-100-python.tar.gz", size=169001437,
                sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                md5="eb9058c3a382ffc7106e4002c42a8d85",
                urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",)),)),
            Form("unpacked", tuple(FileEntry(f"cifar-100-python/{n}", md5=m) for n, m in (
                ("train", "16019d7e3df5f24257cddd939b257f8d"),
                ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
                ("meta", "7973b15100ade9c7d40fb424638fde48"),
            ))),
        )),),
        "archive: sha256 as Keras records it (keras/datasets/cifar100.py), md5 from the CIFAR page and "
        "torchvision; " + _TORCHVISION_CIFAR,
    ),
    "svhn": DatasetFiles(
        "svhn", "SVHN (cropped digits, format 2)", "http://ufldl.stanford.edu/housenumbers/",
        (
            Part("train", (Form("mat", (FileEntry(
                "train_32x32.mat", size=182040794,
                sha256="435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
                md5="e26dedcc434d2e4c54c9b2d4a06d8373",
                urls=("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",)),)),)),
            Part("test", (Form("mat", (FileEntry(
                "test_32x32.mat", size=64275384,
                sha256="cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
                md5="eb5a983be6a315427106f1b164d9cef3",
                urls=("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",)),)),)),
        ),
        _TFDS.format("svhn_cropped.txt") + "; md5 as torchvision records it (torchvision/datasets/svhn.py)",
    ),
}

REGISTRY: dict[str, DatasetFiles] = dict(OFFICIAL)
"""The table loaders and `ntklab data` consult; tests replace entries with their own."""

ALIASES = {"cifar2": "cifar10"}
"""Datasets derived from another one's files."""


def dataset_files(name: str, registry: Mapping[str, DatasetFiles] | None = None) -> DatasetFiles:
    table = REGISTRY if registry is None else registry
    name = ALIASES.get(name, name)
    if name not in table:
        raise DataError(f"unknown dataset {name!r}: the file-based datasets are {', '.join(sorted(table))}")
    return table[name]


# ---- verification --------------------------------------------------------------------------

_verified: dict[tuple, str | None] = {}
_verified_lock = threading.Lock()


def file_digests(path: Path, sha256: bool = True, md5: bool = False) -> tuple[str | None, str | None]:
    """(sha256, md5) hex digests of a file, each only where asked for, in one pass."""
    hashers = [hashlib.sha256() if sha256 else None, hashlib.md5(usedforsecurity=False) if md5 else None]
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            for h in hashers:
                if h is not None:
                    h.update(chunk)
    return tuple(h.hexdigest() if h is not None else None for h in hashers)  # type: ignore[return-value]


def file_problem(path: Path, entry: FileEntry) -> str | None:
    """Why the file at `path` does not match `entry` (None when it does, or when nothing is known).

    A verdict is remembered for (path, size, mtime, inode), so a file is hashed once per process
    however many runs need it; any change to the file makes it verified again."""
    stat = path.stat()
    memo_key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, entry)
    with _verified_lock:
        if memo_key in _verified:
            return _verified[memo_key]
    problem = None
    if entry.size is not None and stat.st_size != entry.size:
        problem = f"it has {stat.st_size:,} bytes, the official file has {entry.size:,}"
    elif entry.sha256 is not None or entry.md5 is not None:
        sha256, md5 = file_digests(path, sha256=entry.sha256 is not None, md5=entry.md5 is not None)
        if entry.sha256 is not None and sha256 != entry.sha256:
            problem = f"its sha256 is {sha256}, the official checksum is {entry.sha256}"
        elif entry.md5 is not None and md5 != entry.md5:
            problem = f"its md5 is {md5}, the official checksum is {entry.md5}"
    with _verified_lock:
        _verified[memo_key] = problem
    return problem


@dataclass(frozen=True)
class PartStatus:
    part: Part
    form: Form | None               # the form in use, when one is complete and verified
    paths: tuple[Path, ...]         # its files
    corrupt: tuple[str, ...] = ()   # why the files present are unusable

    @property
    def missing(self) -> bool:
        return self.form is None and not self.corrupt


@dataclass(frozen=True)
class DatasetStatus:
    files: DatasetFiles
    root: Path
    directory: Path
    parts: tuple[PartStatus, ...]

    @property
    def problems(self) -> list[str]:
        """One message per corrupt file, and one naming every missing file, with the fix."""
        problems = [p for part in self.parts for p in part.corrupt]
        missing = [part.part for part in self.parts if part.missing]
        if missing:
            names = ", ".join(f.path for part in missing for f in part.download.files)
            others = {form.label for part in missing for form in part.forms[1:]}
            alternative = f" (or the {' or '.join(sorted(others))} form)" if others else ""
            problems.append(
                f"{self.files.title}: missing {names}{alternative} in {self.directory}; "
                f"{fetch_hint(self.files.name, self.root)} from {self.files.homepage}, or set {DATA_ENV} "
                f"or data.root to the directory that holds {self.files.name}/"
            )
        return problems

    @property
    def ok(self) -> bool:
        return all(part.form is not None for part in self.parts)

    def paths(self, part_name: str) -> tuple[Form, tuple[Path, ...]]:
        """The verified form and files of a part; DataError with the reasons when it has none."""
        for status in self.parts:
            if status.part.name == part_name:
                if status.form is None:
                    raise DataError("\n".join(self.problems))
                return status.form, status.paths
        raise KeyError(part_name)


def fetch_hint(name: str, root: Path) -> str:
    return f"`ntklab data fetch {name} --root {root}` downloads the official files"


def dataset_status(name: str, root: str | os.PathLike | None = None,
                   registry: Mapping[str, DatasetFiles] | None = None) -> DatasetStatus:
    """Which form of each part of dataset `name` is present and verified under the data root."""
    files = dataset_files(name, registry)
    base = data_root(root)
    directory = base / files.name
    parts = []
    for part in files.parts:
        corrupt: list[str] = []
        chosen = None
        for form in part.forms:
            paths = tuple(directory / f.path for f in form.files)
            bad = _corrupt_messages(files, base, form, paths)
            corrupt.extend(bad)
            if not bad and all(p.is_file() for p in paths):
                chosen = PartStatus(part, form, paths)
                break
        parts.append(chosen or PartStatus(part, None, (), tuple(corrupt)))
    return DatasetStatus(files, base, directory, tuple(parts))


def _corrupt_messages(files: DatasetFiles, base: Path, form: Form, paths: tuple[Path, ...]) -> list[str]:
    messages = []
    for entry, path in zip(form.files, paths):
        if not path.is_file():
            continue
        problem = file_problem(path, entry)
        if problem:
            messages.append(f"{files.title}: {path} is corrupt or incomplete: {problem} ({files.checksum_source}); "
                            f"delete it and run `ntklab data fetch {files.name} --root {base}`")
    return messages
