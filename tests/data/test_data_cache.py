"""Derived datasets go through the run context's cache, keyed by the data config's hash: a sweep
computes each perturbed dataset once and every run that needs it reads it back."""

import numpy as np
from official_formats import write_idx_dataset
from pydantic import TypeAdapter

from ntklab.data import files as datafiles
from ntklab.data import sources
from ntklab.data.config import DataConfig
from ntklab.data.sources import dataset_key, load_dataset

parse = TypeAdapter(DataConfig).validate_python


class Cache:
    """The `ctx.cached` contract: bytes under (namespace, key), computed on the first request."""

    def __init__(self):
        self.store: dict[tuple[str, str], bytes] = {}
        self.computed: list[str] = []

    def __call__(self, namespace, key, compute):
        if (namespace, key) not in self.store:
            self.computed.append(key)
            self.store[namespace, key] = compute()
        return self.store[namespace, key]


def test_a_noise_sweep_computes_each_perturbed_dataset_once(monkeypatch):
    cache = Cache()
    loads = []
    original = sources.DigitsSource.load
    monkeypatch.setattr(sources.DigitsSource, "load", lambda self, c: loads.append(c) or original(self, c))
    taus = [0.0, 0.5, 1.0]
    noisy = [parse({"dataset": "digits", "noise": {"kind": "dct_high", "tau": t}}) for t in taus]
    first = {t: load_dataset(config, cache) for t, config in zip(taus, noisy)}
    for _ in range(3):  # more runs at the same noise levels, e.g. other models or seeds
        for t in taus:
            again = load_dataset(parse({"dataset": "digits", "noise": {"kind": "dct_high", "tau": t},
                                        "augment": "crop_flip"}), cache)
            for field in ("x_train", "y_train", "x_test", "y_test"):
                np.testing.assert_array_equal(getattr(again, field), getattr(first[t], field))
            assert again.x_train.dtype == np.float32 and again.y_train.dtype == np.int32 and again.num_classes == 10
    assert len(loads) == 3 and len(cache.computed) == 3 and len(set(cache.computed)) == 3
    assert all(namespace == "datasets" for namespace, _ in cache.store)
    direct = load_dataset(parse({"dataset": "digits", "noise": {"kind": "dct_high", "tau": 0.5}}))
    np.testing.assert_array_equal(direct.x_test, first[0.5].x_test)


def test_plain_digits_are_not_cached_and_keys_ignore_root_and_augment():
    cache = Cache()
    load_dataset(parse({"dataset": "digits"}), cache)
    assert cache.store == {}
    base = {"dataset": "fashion_mnist", "noise": {"kind": "dct_high", "tau": 1.0}}
    key = dataset_key(parse(base))
    assert key == dataset_key(parse({**base, "root": "/elsewhere", "augment": "crop_flip"}))
    assert key != dataset_key(parse({**base, "noise": {"kind": "dct_high", "tau": 1.5}}))
    assert key != dataset_key(parse({**base, "noise": {"kind": "dct_high", "tau": 1.0, "seed": 1}}))
    assert key != dataset_key(parse({**base, "n_train": 100}))


def test_file_datasets_are_cached_by_config(tmp_path, monkeypatch):
    _, files = write_idx_dataset(tmp_path, "kmnist")
    monkeypatch.setitem(datafiles.REGISTRY, "kmnist", files)
    cache = Cache()
    config = parse({"dataset": "kmnist", "root": str(tmp_path), "noise": {"kind": "dct_high", "tau": 2.0},
                    "n_train": 20})
    first = load_dataset(config, cache)
    second = load_dataset(config, cache)
    assert len(cache.computed) == 1
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.x_train, load_dataset(config).x_train)
