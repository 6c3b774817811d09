"""Spectrogram parameters: Riffusion's defaults, units in every name."""

from __future__ import annotations

from dataclasses import dataclass

from riffradio.core.defaults import SAMPLE_RATE_HZ


@dataclass(frozen=True)
class SpectrogramParams:
    """How audio becomes a Riffusion spectrogram image and back.

    The defaults are Riffusion's: 44 100 Hz mono, 10 ms hop, 100 ms Hann window zero-padded to
    400 ms, 512 HTK mel bands (no normalisation) from 0 to 10 000 Hz, pixel = amplitude^0.25.
    512 image columns are 5.12 s of audio.

    Attributes:
        sample_rate_hz: audio sample rate.
        stereo: encode two channels (image R=0, G=left, B=right) instead of one (R=G=B).
        step_size_ms: hop between STFT frames, in milliseconds.
        window_duration_ms: Hann window length, in milliseconds.
        padded_duration_ms: FFT length after zero padding, in milliseconds.
        num_frequencies: number of mel bands = image height.
        min_frequency_hz: lowest mel band edge.
        max_frequency_hz: highest mel band edge.
        power_for_image: exponent applied to normalised mel amplitudes before quantising.
        image_width_frames: columns per image (512 = 5.12 s).
    """

    sample_rate_hz: int = SAMPLE_RATE_HZ
    stereo: bool = False
    step_size_ms: int = 10
    window_duration_ms: int = 100
    padded_duration_ms: int = 400
    num_frequencies: int = 512
    min_frequency_hz: int = 0
    max_frequency_hz: int = 10_000
    power_for_image: float = 0.25
    image_width_frames: int = 512

    @property
    def num_channels(self) -> int:
        return 2 if self.stereo else 1

    @property
    def hop_length_samples(self) -> int:
        return int(self.sample_rate_hz * self.step_size_ms / 1000.0)

    @property
    def win_length_samples(self) -> int:
        return int(self.sample_rate_hz * self.window_duration_ms / 1000.0)

    @property
    def n_fft_samples(self) -> int:
        return int(self.sample_rate_hz * self.padded_duration_ms / 1000.0)

    @property
    def clip_samples(self) -> int:
        """Samples in one image's worth of audio (512 hops = 225 792 at the defaults)."""
        return self.image_width_frames * self.hop_length_samples

    @property
    def clip_seconds(self) -> float:
        return self.clip_samples / self.sample_rate_hz

    @property
    def min_clip_samples(self) -> int:
        """The shortest audio that fills every image column: ``(width - 1) * hop`` = 225 351 (5.11 s).

        Centred frames number ``1 + samples // hop``, so Riffusion's own decode of a 512-px image
        (225 351 samples) already makes 512 columns.
        """
        return (self.image_width_frames - 1) * self.hop_length_samples
