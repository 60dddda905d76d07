"""Audio files and resampling shared by the CLIs and the live loop: `io` (the one reader and
writer) and `resample` (the one resampler)."""
