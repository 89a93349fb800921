"""Files made to break the readers: each must be refused with a message, never a traceback or a huge allocation."""

import codecs
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_batch
from safetensors.torch import save_file

from diffedu import checkpoint, data
from diffedu.errors import CheckpointError, DataError
from diffedu.nets import UNet, UNetConfig
from diffedu.vae import VAE, VAEConfig

SMALL = UNetConfig(in_channels=3, image_size=32, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=())
DEEP = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"


# ---- checkpoints -------------------------------------------------------------------


@pytest.fixture
def small_checkpoint(tmp_path):
    path = checkpoint.save_model(tmp_path / "m", UNet(SMALL))
    return path, *checkpoint.load(path)


@pytest.mark.parametrize("where", ["header", "json"])
@pytest.mark.parametrize(
    "text",
    [DEEP, '{"format": "diffedu-checkpoint-1", "T": ' + "9" * 5000 + "}"],
    ids=["nested 100,000 deep", "a 5,000-digit number"],
)
def test_a_config_json_can_not_crash_the_reader(where, text, small_checkpoint):
    path, tensors, _ = small_checkpoint
    weights, config = checkpoint.paths(path)
    save_file(tensors, str(weights), metadata={checkpoint.HEADER_KEY: text} if where == "header" else None)
    config.write_text(text)
    source = weights if where == "header" else config
    with pytest.raises(CheckpointError, match=f"{source} holds no valid JSON config .*damaged .*re-create"):
        checkpoint.load_model(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kind": ["unet"]}, "holds a \\['unet'\\] model; this diffedu knows"),  # unhashable: used to be a TypeError
        ({"kind": {"unet": 1}}, "holds a {'unet': 1} model"),
        ({"config": {"channel_mult": [2**40, 1]}}, "cannot build .*overflow"),  # sizes torch cannot even count
        ({"config": {"num_classes": 2**62}}, "cannot build .*overflow"),
    ],
)
def test_config_values_of_the_wrong_type_or_size_are_checkpoint_errors(change, message, small_checkpoint):
    path, tensors, meta = small_checkpoint
    config = {**meta["config"], **change.pop("config", {})}
    checkpoint.save(path, tensors, {**meta, "config": config, **change})
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load_model(path)


def test_a_vae_config_too_big_to_count_is_a_checkpoint_error(tmp_path):
    path = checkpoint.save_model(tmp_path / "v", VAE(VAEConfig(channels=8, channel_mult=(1, 2))))
    tensors, meta = checkpoint.load(path)
    checkpoint.save(path, tensors, {**meta, "config": {**meta["config"], "channels": 2**62}})
    with pytest.raises(CheckpointError, match="cannot build"):
        checkpoint.load_model(path)


@pytest.mark.parametrize("name", [["linear"], {"linear": 1}])
def test_a_schedule_name_that_is_not_text_is_a_checkpoint_error(name, small_checkpoint):
    path, tensors, meta = small_checkpoint
    checkpoint.save(path, tensors, {**meta, "schedule": name})
    with pytest.raises(CheckpointError, match="unknown schedule .*, not a name; the file is damaged"):
        checkpoint.schedule_of(path)


# ---- CIFAR-10 batch files ------------------------------------------------------------


class Reduce:
    """Pickles as whatever __reduce__ tuple it is given: how a hostile batch file is written."""

    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


RECONSTRUCT, FROMBUFFER = np._core.multiarray._reconstruct, np._core.numeric._frombuffer
EMPTY = (RECONSTRUCT, (np.ndarray, (0,), b"b"))  # how numpy pickles any array: empty, then filled by __setstate__
HUGE = (10**12,)
MEGABYTE = "x" * 2**20  # in the file once, then named by its memo number


def hex_bomb(levels: int, seed: bytes = b"x") -> Reduce:
    """seed hex-encoded `levels` times: 2**levels times as many bytes as the file holds."""
    return Reduce(codecs.encode, (hex_bomb(levels - 1, seed) if levels > 1 else seed, "hex"))


@pytest.fixture
def little_memory():
    """An address space of what the process maps now + 256 MiB for the test: a reader that allocated what a hostile
    file asks for fails at once with a MemoryError, instead of taking the machine's memory."""
    status, resource = Path("/proc/self/status"), pytest.importorskip("resource")
    if not status.exists():
        pytest.skip("needs Linux's /proc to measure the address space")
    mapped = int(status.read_text().split("VmSize:")[1].split()[0]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + 2**28, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def hostile(tmp_path, contents, protocol=2) -> Path:
    path = tmp_path / "data_batch_1"
    path.write_bytes(contents if isinstance(contents, bytes) else pickle.dumps(contents, protocol=protocol))
    return path


@pytest.mark.parametrize(
    "contents, protocol, reason",
    [
        pytest.param(
            {"data": Reduce(RECONSTRUCT, (np.ndarray, HUGE, b"b"))}, 2, "larger than", id="_reconstruct, huge"
        ),
        pytest.param(
            {"data": Reduce(*EMPTY, (1, HUGE, np.dtype(object), False, []))},
            2,
            "Python objects",
            id="__setstate__, huge, of objects",
        ),  # numpy allocated and zeroed these before looking at the list
        pytest.param(
            {"data": Reduce(*EMPTY, (1, HUGE, np.dtype(np.uint8), False, b"x"))},
            2,
            "larger than",
            id="__setstate__, huge, of bytes",
        ),
        pytest.param({"data": Reduce(np.ndarray, (HUGE,))}, 2, "numpy.ndarray\\(...\\)", id="ndarray(huge)"),
        pytest.param(
            {"data": Reduce(FROMBUFFER, (bytearray(3), np.dtype(np.uint8), HUGE, "C"))},
            5,
            "larger than",
            id="protocol 5 _frombuffer, huge",
        ),
        pytest.param(
            b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b"\x00" * 8 + b".",
            5,
            "bytearray8",
            id="protocol 5 buffer of 2**40 bytes",
        ),  # pickle allocates what the file says before reading it
        pytest.param(b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"\x00" * 8 + b".", 4, "bytes8", id="2**40 bytes"),
        pytest.param({"data": hex_bomb(10, b"x" * 2**20)}, 2, "but text to latin1", id="1 MB hex-encoded 10 times"),
        pytest.param({"data": hex_bomb(40)}, 2, "more", id="hex-encoded 40 times"),  # a terabyte
        pytest.param(
            [Reduce(codecs.encode, (MEGABYTE, "latin1")) for _ in range(1000)],
            2,
            "more",
            id="one string encoded 1000 times",
        ),
        pytest.param(b"\x80\x02" + b"]" * 300_000 + b".", 2, "more", id="300,000 lists"),  # 64 times the file's size
        pytest.param(
            b"\x80\x02Nr" + struct.pack("<I", 400_000_000) + b".", 2, "more", id="memo entry 400,000,000"
        ),  # pickle makes room for, and zeroes, all entries below it: 3 GB
    ],
)
def test_a_batch_that_asks_for_huge_arrays_is_refused_before_they_are_allocated(
    contents, protocol, reason, tmp_path, little_memory
):
    path = hostile(tmp_path, contents, protocol)
    with pytest.raises(DataError, match=f"{path} could not be read as a CIFAR-10 batch file .*{reason}.*download"):
        data.read_batch(path)


@pytest.mark.parametrize(
    "contents, reason",
    [
        pytest.param(
            {"data": Reduce(np.dtype, ("04u1",))}, "only plain numpy dtypes", id="dtype 04u1"
        ),  # a SyntaxError
        pytest.param(
            b"\x80\x02cnumpy\ndtype\n" + b"(" * 50_000 + b"l" * 50_000 + b"\x85R.",
            "only plain numpy dtypes",
            id="dtype of lists 50,000 deep",
        ),  # a RecursionError
        pytest.param(
            pickle.dumps(
                Reduce(FROMBUFFER, (bytearray(3), np.dtype(np.uint8), (3,), "C"), None, None, iter([(5, 1)])),
                protocol=5,
            ),
            "out of bounds",
            id="array[5] = 1",
        ),  # an IndexError
        pytest.param(b"\x80\x04\x95" + b"\xff" * 8 + b".", "FRAME", id="a frame of 2**64 bytes"),  # an OverflowError
    ],
)
def test_malformed_numpy_or_pickle_pieces_are_refused_by_name(contents, reason, tmp_path):
    path = hostile(tmp_path, contents)
    with pytest.raises(DataError, match=f"could not be read as a CIFAR-10 batch file .*{reason}"):
        data.read_batch(path)


def test_a_damaged_dtype_state_does_not_crash_the_reader(tmp_path):
    """numpy's own dtype.__setstate__ crashes the interpreter on a state one item short (numpy 2.4); the reader takes
    only the byte order from it. Run in a process of its own, where a crash fails this test, not the test session."""
    dtype = Reduce(np.dtype, ("u1", False, True), (3, "|", None, -1, -1, 0))  # numpy writes (3, "|", None, None, ...)
    path = hostile(tmp_path, {"data": Reduce(*EMPTY, (1, (1, 3072), dtype, False, bytes(3072))), "labels": [0]})
    code = f"import pathlib, diffedu.data\nprint(diffedu.data.read_batch(pathlib.Path({str(path)!r}))['data'].shape)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stdout) == (0, "(1, 3072)\n"), result.stderr


def test_a_batch_with_out_of_band_buffers_is_refused(tmp_path):
    buffers = []
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}
    path = hostile(tmp_path, pickle.dumps(batch, protocol=5, buffer_callback=buffers.append))
    assert buffers  # the pixels are not in the file
    with pytest.raises(DataError, match="could not be read as a CIFAR-10 batch file .*out-of-band"):
        data.read_batch(path)


def test_a_file_far_larger_than_a_batch_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 10_000)
    write_batch(tmp_path, "data_batch_1", 6)  # 18 KB
    with pytest.raises(DataError, match="over 10,000 bytes"):
        data.read_batch(tmp_path / "data_batch_1")


@pytest.mark.parametrize("protocol", [2, 4, 5, "text"])
def test_a_full_size_batch_is_read_in_every_way_numpy_writes_it(protocol, tmp_path):
    """10,000 images, what each of CIFAR-10's files holds: the limits above must let it through."""
    pixels = np.random.default_rng(0).integers(0, 256, (10_000, 3072), dtype=np.uint8)
    labels = list(range(10)) * 1000
    if protocol == "text":  # as Python 2 wrote CIFAR-10: the bytes as a str, read back as latin-1 text
        state = (1, pixels.shape, pixels.dtype, False, pixels.tobytes().decode("latin1"))
        contents = pickle.dumps({"data": Reduce(*EMPTY, state), "labels": labels}, protocol=2)
    else:
        contents = pickle.dumps({"data": pixels, "labels": labels}, protocol=protocol)
    batch = data.read_batch(hostile(tmp_path, contents))
    assert type(batch["data"]) is np.ndarray and np.array_equal(batch["data"], pixels)
    assert batch["labels"].tolist() == labels
