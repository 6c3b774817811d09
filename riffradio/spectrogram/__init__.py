"""The codec: audio ↔ Riffusion spectrogram images, the vocoder, seed images, audio files.

Heavy modules (torch) are imported by the submodules; import what you need from them:
``params.SpectrogramParams``, ``vocoder.Vocoder``, ``seeds.load_seed_image``,
``audio_io.read_audio`` / ``write_audio``.
"""
