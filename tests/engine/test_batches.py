import numpy as np
import pytest

from ntklab.data.batches import batch_indices, epoch_permutation, steps_per_epoch


def test_steps_per_epoch():
    assert steps_per_epoch(100, 32, drop_last=False) == 4
    assert steps_per_epoch(100, 32, drop_last=True) == 3
    assert steps_per_epoch(96, 32, drop_last=False) == 3
    with pytest.raises(ValueError, match="drop_last"):
        steps_per_epoch(10, 32, drop_last=True)


def test_permutation_is_a_pure_function_of_seed_and_epoch():
    first = epoch_permutation(7, 3, 50).copy()
    epoch_permutation.cache_clear()
    np.testing.assert_array_equal(epoch_permutation(7, 3, 50), first)
    assert not np.array_equal(epoch_permutation(7, 4, 50), first)
    assert not np.array_equal(epoch_permutation(8, 3, 50), first)
    np.testing.assert_array_equal(np.sort(first), np.arange(50))


@pytest.mark.parametrize("drop_last", [False, True])
def test_each_epoch_visits_each_sample_once(drop_last):
    n, batch_size = 50, 16
    per_epoch = steps_per_epoch(n, batch_size, drop_last)
    for epoch in range(3):
        batches = [batch_indices(1, epoch * per_epoch + i, n, batch_size, drop_last) for i in range(per_epoch)]
        seen = np.concatenate(batches)
        assert len(seen) == len(set(seen.tolist()))
        if drop_last:
            assert [len(b) for b in batches] == [16, 16, 16]
        else:
            assert [len(b) for b in batches] == [16, 16, 16, 2]
            np.testing.assert_array_equal(seen, epoch_permutation(1, epoch, n))


def test_batches_of_consecutive_epochs_differ():
    assert not np.array_equal(batch_indices(0, 0, 40, 8, False), batch_indices(0, 5, 40, 8, False))
