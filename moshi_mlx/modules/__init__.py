"""Building blocks with no model knowledge: norms, positional embeddings, attention with
its KV cache, feed-forward blocks, the streaming transformer (and, for Mimi, convolutions,
SEANet and residual vector quantization)."""
