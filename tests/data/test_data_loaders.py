"""Loaders of the official formats: generated IDX, CIFAR pickles and SVHN .mat files are read back
as the arrays they hold; missing, truncated and corrupted files are refused with a message naming
the file, the directory and the fix."""

import os

import numpy as np
import pytest
from official_formats import (
    write_cifar10,
    write_cifar100,
    write_idx_dataset,
    write_svhn,
)
from pydantic import TypeAdapter

from ntklab.data import files as datafiles
from ntklab.data.config import DataConfig
from ntklab.data.files import DataError
from ntklab.data.sources import check_dataset, load_dataset

parse = TypeAdapter(DataConfig).validate_python


@pytest.fixture
def registry(monkeypatch):
    """Install generated datasets' checksums in place of the official ones."""
    def install(files):
        monkeypatch.setitem(datafiles.REGISTRY, files.name, files)
    return install


def load(name, root, **fields):
    return load_dataset(parse({"dataset": name, "root": str(root), "normalize": "none", **fields}))


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist"])
@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "unpacked"])
def test_idx_datasets_read_back_their_pixels_and_labels(tmp_path, registry, name, gz):
    (x_train, y_train, x_test, y_test), files = write_idx_dataset(tmp_path, name, gz=gz)
    registry(files)
    assert check_dataset(parse({"dataset": name, "root": str(tmp_path)})) == []
    data = load(name, tmp_path)
    assert data.x_train.shape == (30, 28, 28, 1) and data.x_test.shape == (20, 28, 28, 1)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32 and data.num_classes == 10
    np.testing.assert_array_equal(data.x_train[..., 0], x_train.astype(np.float32) / 255)
    np.testing.assert_array_equal(data.x_test[..., 0], x_test.astype(np.float32) / 255)
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_test, y_test)


def test_mnist_to_32x32x3_repeats_one_resized_channel(tmp_path, registry):
    _, files = write_idx_dataset(tmp_path, "mnist")
    registry(files)
    data = load("mnist", tmp_path, rgb32=True)
    assert data.x_train.shape == (30, 32, 32, 3)
    np.testing.assert_array_equal(data.x_train[..., 0], data.x_train[..., 2])
    values = np.unique(data.x_train * 255)
    np.testing.assert_allclose(values, np.round(values), atol=1e-3)  # 8-bit, as PIL resizes


@pytest.mark.parametrize("packed", [True, False], ids=["archive", "unpacked"])
def test_cifar10_reads_the_python_batches_as_nhwc(tmp_path, registry, packed):
    (x_train, y_train, x_test, y_test), files = write_cifar10(tmp_path, packed=packed)
    registry(files)
    data = load("cifar10", tmp_path)
    assert data.x_train.shape == (30, 32, 32, 3) and data.x_test.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(data.x_train, x_train.astype(np.float32) / 255)
    np.testing.assert_array_equal(data.x_test, x_test.astype(np.float32) / 255)
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_test, y_test)
    assert data.y_train.dtype == np.int32 and data.num_classes == 10


@pytest.mark.parametrize("packed", [True, False], ids=["archive", "unpacked"])
def test_cifar100_fine_and_coarse_labels(tmp_path, registry, packed):
    (_, fine_train, coarse_train, x_test, fine_test, _), files = write_cifar100(tmp_path, packed=packed)
    registry(files)
    fine = load("cifar100", tmp_path)
    coarse = load("cifar100", tmp_path, labels="coarse")
    np.testing.assert_array_equal(fine.x_test, x_test.astype(np.float32) / 255)
    np.testing.assert_array_equal(fine.y_train, fine_train)
    np.testing.assert_array_equal(fine.y_test, fine_test)
    np.testing.assert_array_equal(coarse.y_train, coarse_train)
    assert fine.num_classes == 100 and coarse.num_classes == 20


def test_svhn_mat_files_with_label_ten_for_zero(tmp_path, registry):
    (x_train, y_train, _, y_test), files = write_svhn(tmp_path)
    registry(files)
    data = load("svhn", tmp_path)
    assert data.x_train.shape == (12, 32, 32, 3) and data.x_test.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(data.x_train, x_train.astype(np.float32) / 255)
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_test, y_test)
    assert 0 in data.y_train.tolist() and data.y_train.max() == 9


def test_grayscale_and_standardization_of_rgb_data(tmp_path, registry):
    (x_train, _, _, _), files = write_cifar10(tmp_path)
    registry(files)
    gray = load("cifar10", tmp_path, grayscale=True)
    expected = (x_train / 255.0) @ np.array([0.2125, 0.7154, 0.0721])
    np.testing.assert_allclose(gray.x_train[..., 0], expected, rtol=1e-6)
    standardized = load("cifar10", tmp_path, normalize="standardize")
    np.testing.assert_allclose(standardized.x_train.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(standardized.x_train.std(axis=(0, 1, 2)), 1, atol=1e-5)


def cifar_labels(per_batch=20, n_test=40):
    return np.arange(5 * per_batch) % 10, np.arange(n_test) % 10


def test_cifar2_ghorbani_is_cat_versus_airplane_in_gray_with_norm_32(tmp_path, registry):
    (x_train, y_train, _, _), files = write_cifar10(tmp_path, per_batch=20, n_test=40, labels=cifar_labels())
    registry(files)
    data = load_dataset(parse({"dataset": "cifar2", "root": str(tmp_path)}))
    chosen = np.isin(y_train, [0, 3])
    assert data.x_train.shape == (chosen.sum(), 32, 32, 1) and data.num_classes == 2
    np.testing.assert_array_equal(data.y_train, (y_train[chosen] == 0).astype(int))  # airplane -> 1, cat -> 0
    np.testing.assert_allclose(np.linalg.norm(data.x_train.reshape(len(data.x_train), -1), axis=1), 32, rtol=1e-5)
    gray = (x_train[chosen] / 255.0) @ np.array([0.2125, 0.7154, 0.0721])
    centred = gray - gray.mean(axis=(1, 2), keepdims=True)
    expected = centred * 32 / np.linalg.norm(centred.reshape(len(centred), -1), axis=1)[:, None, None]
    np.testing.assert_allclose(data.x_train[..., 0], expected, rtol=1e-4, atol=1e-5)


def test_cifar2_ortiz_is_classes_0_to_4_versus_5_to_9_stratified(tmp_path, registry):
    (_, y_train, _, _), files = write_cifar10(tmp_path, per_batch=20, n_test=40, labels=cifar_labels())
    registry(files)
    config = parse({"dataset": "cifar2", "variant": "ortiz", "root": str(tmp_path), "n_train": 50, "n_test": 10,
                    "subsample_seed": 3})
    data = load_dataset(config)
    assert data.x_train.shape == (50, 32, 32, 3) and data.x_test.shape == (10, 32, 32, 3)
    assert np.bincount(data.y_train).tolist() == [25, 25] and np.bincount(data.y_test).tolist() == [5, 5]
    full = load_dataset(parse({"dataset": "cifar2", "variant": "ortiz", "root": str(tmp_path)}))
    np.testing.assert_array_equal(full.y_train, (y_train <= 4).astype(int))
    np.testing.assert_array_equal(load_dataset(config).x_train, data.x_train)
    other = load_dataset(parse({**config.model_dump(), "subsample_seed": 4}))
    assert not np.array_equal(other.x_train, data.x_train)


def test_missing_files_name_the_file_the_directory_and_the_fetch_command(tmp_path):
    problems = check_dataset(parse({"dataset": "fashion_mnist", "root": str(tmp_path)}))
    assert len(problems) == 1
    message = problems[0]
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert str(tmp_path / "fashion_mnist") in message
    assert f"ntklab data fetch fashion_mnist --root {tmp_path}" in message
    with pytest.raises(DataError, match="ntklab data fetch fashion_mnist"):
        load_dataset(parse({"dataset": "fashion_mnist", "root": str(tmp_path)}))
    cifar2 = check_dataset(parse({"dataset": "cifar2", "root": str(tmp_path)}))
    assert "cifar-10-python.tar.gz" in cifar2[0] and "ntklab data fetch cifar10" in cifar2[0]


def test_data_root_falls_back_to_the_environment(tmp_path, registry, monkeypatch):
    _, files = write_idx_dataset(tmp_path, "kmnist")
    registry(files)
    monkeypatch.setenv("NTKLAB_DATA", str(tmp_path))
    assert check_dataset(parse({"dataset": "kmnist"})) == []
    monkeypatch.setenv("NTKLAB_DATA", str(tmp_path / "elsewhere"))
    assert str(tmp_path / "elsewhere" / "kmnist") in check_dataset(parse({"dataset": "kmnist"}))[0]


def test_official_table_rejects_a_generated_file_by_its_checksum(tmp_path):
    write_idx_dataset(tmp_path, "mnist")  # right names, wrong bytes: the official table refuses them
    problems = check_dataset(parse({"dataset": "mnist", "root": str(tmp_path)}))
    assert len(problems) == 4
    assert all("corrupt" in p and "ntklab data fetch mnist" in p for p in problems)
    assert "9,912,422" in " ".join(problems)  # the official size of the training images


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_truncated_or_corrupted_gzip_is_refused_with_the_checksum_message(tmp_path, registry, damage):
    _, files = write_idx_dataset(tmp_path, "mnist")
    registry(files)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        del data[len(data) // 2:]
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = check_dataset(parse({"dataset": "mnist", "root": str(tmp_path)}))
    assert len(problems) == 1 and str(path) in problems[0] and "corrupt" in problems[0]
    assert ("bytes, the official file has" if damage == "truncate" else "sha256") in problems[0]
    assert "delete it and run `ntklab data fetch mnist" in problems[0]
    with pytest.raises(DataError, match="corrupt"):
        load("mnist", tmp_path)


def test_truncated_unpacked_idx_and_corrupted_cifar_batch_are_refused(tmp_path, registry):
    _, files = write_idx_dataset(tmp_path, "kmnist", gz=False)
    registry(files)
    raw = tmp_path / "kmnist" / "t10k-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:-1])
    assert "bytes, the official file has" in check_dataset(parse({"dataset": "kmnist", "root": str(tmp_path)}))[0]

    _, cifar = write_cifar10(tmp_path, packed=False)
    registry(cifar)
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    data = bytearray(batch.read_bytes())
    data[-100] ^= 1
    batch.write_bytes(bytes(data))
    problems = check_dataset(parse({"dataset": "cifar10", "root": str(tmp_path)}))
    assert any("data_batch_3" in p and "md5" in p for p in problems)


def test_a_file_is_hashed_once_until_it_changes(tmp_path, registry, monkeypatch):
    _, files = write_idx_dataset(tmp_path, "fashion_mnist")
    registry(files)
    calls = []
    original = datafiles.file_digests
    monkeypatch.setattr(datafiles, "file_digests", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    config = parse({"dataset": "fashion_mnist", "root": str(tmp_path)})
    for _ in range(3):
        assert check_dataset(config) == []
    assert len(calls) == 4, "each of the four files hashed once"
    path = tmp_path / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))  # same size: only a new hash can tell
    os.utime(path, ns=(1, 1))
    assert "sha256" in check_dataset(config)[0]
    assert len(calls) == 5 and calls[-1] == path


def test_run_refuses_a_spec_whose_dataset_files_are_missing_before_any_run(tmp_path):
    from conftest import ntklab

    home = tmp_path / "home"
    home.mkdir()
    empty = tmp_path / "empty"
    (home / "spec.yaml").write_text(f"""\
name: needs_files
defaults:
  data: {{dataset: fashion_mnist, root: {empty}, noise: {{kind: dct_high, tau: 1.0}}}}
  train: {{optimizer: {{name: sgd, lr: 0.1}}, epochs: 1}}
groups:
  nn: {{task: train, model: {{arch: mlp, depth: 1, width: 8}}}}
""")
    result = ntklab("run", "spec.yaml", home=home)
    assert result.returncode == 2, result.stderr
    assert "train-images-idx3-ubyte.gz" in result.stderr and str(empty / "fashion_mnist") in result.stderr
    assert f"ntklab data fetch fashion_mnist --root {empty}" in result.stderr
    assert "nothing was run" in result.stderr
    assert not (home / "ntklab.db").exists() or "needs_files" not in ntklab("status", home=home).stdout
