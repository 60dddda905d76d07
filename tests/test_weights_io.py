"""safetensors reading/writing: round trips, lazy reads, and a clear error for each bad file."""

import mlx.core as mx
import pytest

from moshi_mlx.errors import UsageError
from moshi_mlx.weights.errors import WeightsError
from moshi_mlx.weights.hub import hf_get
from moshi_mlx.weights.safetensors_io import SafetensorsFile, SafetensorsWriter, load_safetensors, save_safetensors


@pytest.fixture
def tensors():
    return {
        "a": mx.arange(12, dtype=mx.float32).reshape(3, 4),
        "b": (mx.arange(6).reshape(2, 3) / 7).astype(mx.bfloat16),
        "c": mx.array([1, 2, 3], dtype=mx.uint32),
    }


def test_round_trip_with_metadata(tmp_path, tensors):
    p = tmp_path / "w.safetensors"
    save_safetensors(p, tensors, {"quantization": "none"})
    loaded, meta = load_safetensors(p)
    assert meta == {"quantization": "none"}
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
        assert mx.array_equal(loaded[k], v)


def test_streaming_writer_matches_mlx_reader(tmp_path, tensors):
    p = tmp_path / "s.safetensors"
    layout = {
        k: ({mx.float32: "F32", mx.bfloat16: "BF16", mx.uint32: "U32"}[v.dtype], v.shape) for k, v in tensors.items()
    }
    with SafetensorsWriter(p, layout, {"x": "1"}) as w:
        for k, v in tensors.items():
            w.write(k, v)
    ref = mx.load(str(p))
    for k, v in tensors.items():
        assert mx.array_equal(ref[k], v)
    assert SafetensorsFile(p).metadata == {"x": "1"}


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        SafetensorsFile(tmp_path / "nope.safetensors")


def test_not_safetensors(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_text("this is a README, not weights" * 10)
    with pytest.raises(WeightsError, match="not a safetensors file"):
        SafetensorsFile(p)


def test_truncated(tmp_path, tensors):
    p = tmp_path / "t.safetensors"
    save_safetensors(p, tensors)
    data = p.read_bytes()
    p.write_bytes(data[:-10])
    with pytest.raises(WeightsError, match="truncated"):
        SafetensorsFile(p)


LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:5d6f5e1c0b8a7e3c2f4b9a1d0e6c7b8a9f0e1d2c3b4a5968778695a4b3c2d1e0\n"
    "size 4205462446\n"
)


def test_a_git_lfs_pointer_or_a_saved_web_page_is_named(tmp_path):
    """`git clone` of a Hub repo without git-lfs leaves pointer files under the real names; a
    browser or curl may save an error page. Weights, Mimi and tokenizer say so: it was 'bad
    header length 2336927755350992246 for a file of 131 bytes' and 'is not a SentencePiece
    model'."""
    from moshi_mlx.runtime.transcript import TextTokenizer
    from moshi_mlx.weights.resolve import resolve_model

    clone = tmp_path / "moshiko-mlx-q4"
    clone.mkdir()
    for name in ("model.q4.safetensors", "tokenizer-e351c8d8-checkpoint125.safetensors", "tokenizer_spm_32k_3.model"):
        (clone / name).write_text(LFS_POINTER)
    (clone / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    lfs = r"is a Git LFS pointer, not the file itself \(the repo was cloned without git-lfs\): run git lfs pull"
    with pytest.raises(WeightsError, match="model.q4.safetensors " + lfs):
        resolve_model(clone)
    with pytest.raises(WeightsError, match="tokenizer-e351c8d8-checkpoint125.safetensors " + lfs):
        SafetensorsFile(clone / "tokenizer-e351c8d8-checkpoint125.safetensors")
    with pytest.raises(WeightsError, match="tokenizer_spm_32k_3.model " + lfs):
        TextTokenizer(clone / "tokenizer_spm_32k_3.model")
    page = tmp_path / "model.safetensors"
    page.write_text("\n<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n")
    with pytest.raises(WeightsError, match="is a web page, not the file itself"):
        SafetensorsFile(page)


def test_an_empty_file_is_named_as_one(tmp_path):
    """A weights, Mimi or tokenizer file of 0 bytes (a copy or download cut short, a full
    disk): the weights and the Mimi said 'not a safetensors file (only 0 bytes)', the tokenizer
    'is not a SentencePiece model', neither that it is empty nor what to do."""
    from moshi_mlx.runtime.transcript import TextTokenizer
    from moshi_mlx.weights.mimi_loader import load_mimi

    empty = r" is an empty file \(0 bytes: a download or copy that did not finish, or a disk that was full\): download it again$"
    for name, read in (
        ("model.safetensors", SafetensorsFile),
        ("tokenizer-e351c8d8-checkpoint125.safetensors", lambda p: load_mimi(p, backend="mlx")),
        ("tokenizer_spm_32k_3.model", TextTokenizer),
    ):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(WeightsError, match=f"{name}{empty}"):
            read(tmp_path / name)


def test_a_broken_link_is_named_as_one(tmp_path):
    """An older huggingface_hub's `--local-dir` download links into the cache; a cache cleanup
    leaves links to nothing, which `ls` still shows: 'weights file not found: X' / 'model
    folder D has no file X' did not say why."""
    from moshi_mlx.weights.resolve import resolve_model

    d = tmp_path / "moshiko"
    d.mkdir()
    gone = tmp_path / "hub" / "blobs" / ("a" * 64)
    for name in ("model.q4.safetensors", "tokenizer_spm_32k_3.model"):
        (d / name).symlink_to(gone)
    broken = rf"is a broken link \(to {gone}, which no longer exists, e.g. after a cache cleanup\): download"
    with pytest.raises(WeightsError, match="model.q4.safetensors " + broken):
        resolve_model(d)
    with pytest.raises(WeightsError, match="model.q4.safetensors " + broken):
        SafetensorsFile(d / "model.q4.safetensors")
    with pytest.raises(WeightsError, match="tokenizer_spm_32k_3.model " + broken):
        hf_get("tokenizer_spm_32k_3.model", str(d))
    with pytest.raises(WeightsError, match="tokenizer_spm_32k_3.model " + broken):
        hf_get(d / "tokenizer_spm_32k_3.model")


def test_a_pytorch_pickle_is_named_as_one(tmp_path, tensors):
    """A fine-tune saved with torch.save (`consolidated.pth`, `pytorch_model.bin`, a training
    `.ckpt`): it was 'X is not a safetensors file (or it is truncated): bad header length
    85966670672 for a file of 136 bytes', and its folder 'should hold one .safetensors model
    file, found none'. A safetensors file whose header length starts with the same bytes
    (a 640-byte header: 0x80 0x02) is still read."""
    import struct
    import zipfile

    from moshi_mlx.weights.resolve import resolve_model

    d = tmp_path / "ft"
    d.mkdir()
    with zipfile.ZipFile(d / "consolidated.pth", "w") as z:  # torch.save's layout since 1.6
        z.writestr("consolidated/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("consolidated/data/0", b"\0" * 64)
    (d / "old.bin").write_bytes(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03." + b"\0" * 64)
    how = r"save its state dict with safetensors.torch.save_file\(state_dict, 'model.safetensors'\) \(with torch\)"
    for name in ("consolidated.pth", "old.bin"):
        with pytest.raises(
            WeightsError, match=rf"^{d / name} is a PyTorch pickle \(torch.save\), not a safetensors file: {how}"
        ):
            resolve_model(weights=d / name)
    with pytest.raises(
        WeightsError,
        match=rf"found none \(it holds PyTorch pickles, consolidated.pth, old.bin: {how} and pass that file\)$",
    ):
        resolve_model(d)
    p = tmp_path / "small.safetensors"
    save_safetensors(p, tensors)
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    pad = 640 - n  # the header padded to 640 bytes: its length's first bytes are 0x80 0x02
    assert pad >= 0
    fixed = struct.pack("<Q", 640) + raw[8 : 8 + n] + b" " * pad + raw[8 + n :]
    assert fixed.startswith(b"\x80\x02")
    p.write_bytes(fixed)
    assert SafetensorsFile(p).keys() == list(tensors)


def test_tiny_file(tmp_path):
    p = tmp_path / "tiny.safetensors"
    p.write_bytes(b"abc")
    with pytest.raises(WeightsError, match="not a safetensors file"):
        SafetensorsFile(p)


def test_hf_get_local_and_missing(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"1")
    assert hf_get(p) == p
    with pytest.raises(WeightsError, match="file not found"):
        hf_get(tmp_path / "missing.bin")
    with pytest.raises(UsageError, match="hf://owner/repo/path"):
        hf_get("hf://just-a-name")


def test_hf_get_offline_cache_miss(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import importlib

    import huggingface_hub.constants as c

    importlib.reload(c)
    with pytest.raises(WeightsError, match="not in the local Hugging Face cache"):
        hf_get("model.safetensors", repo="kyutai/moshiko-mlx-q8")
