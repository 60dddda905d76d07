"""Train the demo models' text tokenizer (moshi_mlx/assets/demo_tokenizer.model): a real
SentencePiece model, tiny (512 pieces, unigram), so the offline demo models
take and show text like the published ones (the Helium demo continues "Once upon a time").
Ids follow Kyutai's tokenizers: 0 unk (Moshi's end-of-padding), 1 bos, 2 eos, 3 pad. Its text
is this repository's docs. Run once; the model is committed (`python scripts/make_demo_tokenizer.py`)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import sentencepiece as spm

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "moshi_mlx" / "assets" / "demo_tokenizer.model"
VOCAB = 512  # below every demo config's text_card (300 for tts-tiny's bytes is not used: it has its own)


def corpus() -> list[str]:
    lines = []
    for p in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")]):
        for line in p.read_text(encoding="utf-8").splitlines():
            line = re.sub(r"[`*|#\[\]()<>_]", " ", line).strip()
            if len(line) > 20:
                lines.append(line)
    return lines + ["Once upon a time there was a little model that could talk and listen at the same time."] * 20


def main() -> None:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=model,
        vocab_size=VOCAB,
        model_type="unigram",
        character_coverage=1.0,
        normalization_rule_name="identity",  # no NFKC table: 240 KB less
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        num_threads=1,
        minloglevel=2,
        input_sentence_size=0,
        shuffle_input_sentence=False,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    print(
        f"{OUT}: {OUT.stat().st_size} bytes, {sp.GetPieceSize()} pieces; "
        f"'Once upon a time' -> {sp.EncodeAsIds('Once upon a time')}"
    )


if __name__ == "__main__":
    main()
