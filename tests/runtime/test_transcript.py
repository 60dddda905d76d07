import json

import pytest

from moshi_mlx.runtime.transcript import PlaceholderTokenizer, TextTokenizer, Transcript
from moshi_mlx.weights.errors import WeightsError


class PieceTok:
    pieces = {10: "▁Hel", 11: "lo", 12: "▁world", 13: "!"}

    def piece(self, t):
        return self.pieces.get(t)


def test_words_and_timestamps(tmp_path):
    tr = Transcript(PieceTok(), pad_id=3)
    live = [tr.add(t, f) for f, t in enumerate([3, 3, 10, 11, 0, 3, 12, 13])]
    assert "".join(x for x in live if x) == " Hello world!"
    assert [w.text for w in tr.words] == ["Hello", "world!"]
    assert tr.words[0].start == pytest.approx(0.24) and tr.words[0].end == pytest.approx(0.4)
    assert tr.words[1].start == pytest.approx(0.56)
    p = tmp_path / "t.json"
    tr.save(p)
    data = json.loads(p.read_text())
    assert data["text"] == "Hello world!" and data["words"][1]["start"] == pytest.approx(0.56)
    q = tmp_path / "t.txt"
    tr.save(q)
    assert q.read_text().splitlines()[0].split() == ["0.24", "0.40", "Hello"]


def test_save_refuses_paths_it_cannot_write(tmp_path, monkeypatch):
    """'' was "cannot write .: Device or resource busy", x.wav silently got a text table,
    None a TypeError."""
    from moshi_mlx.errors import OutputError, UsageError

    tr = Transcript(PieceTok(), pad_id=3)
    monkeypatch.chdir(tmp_path)
    for path, match in [
        ("", "transcript: empty path"),
        ("t.wav", "has '.wav'; expected .json, .txt"),
        (tmp_path, "is a folder"),
        ("nodir/t.json", "folder nodir does not exist"),
    ]:
        with pytest.raises(OutputError, match=match):
            tr.save(path)
    with pytest.raises(UsageError, match="must be a str or os.PathLike"):
        tr.save(None)
    assert list(tmp_path.iterdir()) == []


def test_placeholder_tokenizer_labels_ids():
    tr = Transcript(PlaceholderTokenizer())
    assert tr.add(7, 0) == " ‹7›"


def test_sentencepiece_tokenizer_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        TextTokenizer(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="not a SentencePiece model"):
        TextTokenizer(bad)


def test_sentencepiece_tokenizer_pieces(tmp_path):
    import sentencepiece as spm

    corpus = tmp_path / "c.txt"
    corpus.write_text(
        "hello world this is moshi speaking\n" * 50 + "the quick brown fox jumps over the lazy dog\n" * 50
    )
    spm.SentencePieceTrainer.Train(
        input=str(corpus), model_prefix=str(tmp_path / "m"), vocab_size=30, model_type="unigram", minloglevel=2
    )
    tok = TextTokenizer(tmp_path / "m.model")
    ids = tok.encode("hello world")
    tr = Transcript(tok, pad_id=-100, skip_ids=())
    for f, t in enumerate(ids):
        tr.add(t, f)
    assert tr.text == "hello world"
