"""Defaults that several stages need; each is written once, here."""

from __future__ import annotations

DEFAULT_MODEL = "riffusion/riffusion-model-v1"
"""Hub id of the Riffusion checkpoint (Stable Diffusion 1.5 fine-tuned on spectrograms)."""

DEFAULT_SEED_IMAGE = "og_beat"
"""The bundled seed spectrogram a riff starts from unless it names another (93.75 BPM, 8 beats)."""

SAMPLE_RATE_HZ = 44_100
"""Riffusion's spectrograms, the station clock, the sinks: everything runs at 44.1 kHz."""
