import pickle

import numpy as np
import pytest
import torch
from conftest import write_batch

from diffedu import data, env
from diffedu.errors import DataError


@pytest.fixture
def sized_cifar(tmp_path):
    """Five training files of 4 to 8 rows and a test file of 4, with what was written."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [write_batch(folder, f"data_batch_{i}", 3 + i, seed=i) for i in range(1, 6)]
    write_batch(folder, "test_batch", 4, seed=9)
    return tmp_path, batches


def test_reader_takes_any_number_of_rows(sized_cifar, monkeypatch):
    root, batches = sized_cifar
    monkeypatch.delenv("DIFFEDU_DATA", raising=False)
    train = data.load_cifar10(root)
    assert train.images.shape == (4 + 5 + 6 + 7 + 8, 3, 32, 32) and train.images.dtype == torch.uint8
    first = batches[0]["data"][0].reshape(3, 32, 32)  # the original layout: 1024 red, 1024 green, 1024 blue
    assert np.array_equal(train.images[0].numpy(), first)
    assert train.labels.tolist()[:4] == batches[0]["labels"]
    assert train.classes == data.CLASSES  # no batches.meta here: the built-in names
    assert len(data.load_cifar10(root / "cifar-10-batches-py", train=False)) == 4


def test_reader_uses_the_environment_variable(sized_cifar, monkeypatch):
    root, _ = sized_cifar
    monkeypatch.setenv("DIFFEDU_DATA", str(root))
    assert len(data.load_cifar10()) == 30


def test_missing_data_names_both_ways_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFEDU_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as error:
        data.load_cifar10()
    message = str(error.value)
    assert "nowhere" in message and "download" in message and "DIFFEDU_DATA" in message


def test_reader_refuses_pickles_that_would_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    (folder / "test_batch").write_bytes(b"")
    with pytest.raises(DataError, match="data_batch_1 could not be read .*refusing to load builtins.print"):
        data.load_cifar10(tmp_path)


def test_the_shared_cifar10_sample(cifar_root):
    train, test = data.load_cifar10(cifar_root), data.load_cifar10(cifar_root, train=False)
    assert (len(train), len(test)) == (5170, 1017)
    assert train.classes[:2] == ["airplane", "automobile"]
    assert set(train.labels.tolist()) == set(range(10))
    assert 100 < train.images.float().mean() < 150  # real photographs, not noise or zeros


def test_scaling_round_trips_and_flip_mirrors():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)  # every byte value
    assert data.to_float(x).min() == -1 and data.to_float(x).max() == 1
    assert torch.equal(data.to_uint8(data.to_float(x)), x)
    images = torch.randn(64, 3, 4, 4)
    flipped = data.random_hflip(images, torch.Generator().manual_seed(0))
    same = (flipped == images).flatten(1).all(1)
    mirrored = (flipped == images.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and 10 < mirrored.sum() < 54


def test_batches_are_shuffled_scaled_and_full():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    stream = data.batches(images, 4, flip=False, seed=1)
    seen = torch.cat([next(stream) for _ in range(2)])
    assert seen.shape == (8, 3, 2, 2) and seen.min() >= -1 and seen.max() <= 1
    assert len(set(seen[:, 0, 0, 0].tolist())) == 8  # one epoch: no image twice
    for bad in (11, 0, -4):  # checked at the call: a negative size used to hang at the first next()
        with pytest.raises(DataError, match="between 1 and the size of the data set"):
            data.batches(images, bad)


def test_cached_tensor_computes_once_and_again_when_the_file_is_damaged(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(6.0).reshape(2, 3)

    path = tmp_path / "cache" / "x.safetensors"
    first, again = env.cached_tensor(path, compute), env.cached_tensor(path, compute)
    assert len(calls) == 1 and torch.equal(first, again) and not list(path.parent.glob("*.partial"))
    path.write_bytes(path.read_bytes()[:20])  # truncated
    assert torch.equal(env.cached_tensor(path, compute), first) and len(calls) == 2


def test_the_home_folder_follows_its_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFEDU_HOME", str(tmp_path / "elsewhere"))
    assert env.home() == tmp_path / "elsewhere"
    monkeypatch.delenv("DIFFEDU_HOME")
    assert env.home().name == "data"  # in the course checkout: its data/ folder


def test_fingerprint_changes_with_the_contents():
    a = torch.zeros(3, dtype=torch.uint8)
    assert env.fingerprint(a) == env.fingerprint(a.clone()) != env.fingerprint(a + 1)
    assert env.fingerprint(a, a) != env.fingerprint(a)
