"""The Python API in ten lines: `python examples/talk.py [MODEL] [OUT.wav]` (default: the offline demo model)."""

import sys

import soundfile as sf

import moshi_mlx

model = moshi_mlx.load(sys.argv[1] if len(sys.argv) > 1 else "random-tiny")  # or "kyutai/moshiko-mlx-q4", a folder
pcm, rate = sf.read(moshi_mlx.demo_clip(), dtype="float32")  # mono, any rate: the package's 'hello' clip
with model.conversation(sample_rate=rate) as conv:
    reply = conv.feed(pcm[: rate // 10])  # chunks of any length, e.g. 100 ms from a microphone
    for i in range(rate // 10, len(pcm), rate // 10):
        reply += conv.feed(pcm[i : i + rate // 10])  # .audio: its voice so far, .pieces: its text with timestamps
    reply += conv.close()  # lets it finish its last words
sf.write(sys.argv[2] if len(sys.argv) > 2 else "reply.wav", reply.audio, rate)
print(reply.text)
