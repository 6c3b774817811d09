"""YAML playlists: typed, checked, with ``file:line:column`` errors (see docs/playlist.md)."""

from riffradio.playlist.loader import (
    PlaylistError,
    check_playlist,
    check_playlist_text,
    load_playlist,
    seed_image_spec,
)
from riffradio.playlist.model import (
    ControlConfig,
    HttpConfig,
    OscConfig,
    OutputSpec,
    Playlist,
    RiffSpec,
    StationSpec,
)

__all__ = [
    "ControlConfig",
    "HttpConfig",
    "OscConfig",
    "OutputSpec",
    "Playlist",
    "PlaylistError",
    "RiffSpec",
    "StationSpec",
    "check_playlist",
    "check_playlist_text",
    "load_playlist",
    "seed_image_spec",
]
