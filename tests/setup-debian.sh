#!/usr/bin/env bash
# System packages for riffradio on Debian/Ubuntu, as root (or with sudo). Safe to run again.
#   tests/setup-debian.sh --run   what running the station needs: python3-venv (pip in a virtual
#                                 environment: Debian 12's own pip refuses system installs) and PortAudio
#   tests/setup-debian.sh         that, plus what the tests run for real: Icecast, nginx-rtmp, PulseAudio
#                                 (null sink), liblo's oscsend, ffmpeg's ffprobe, systemd-analyze, Chromium
#                                 and chromedriver (the web studio's browser tests), recorded music
#                                 (planetblupi's OGG tracks)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PACKAGES="python3-venv libportaudio2"
if [ "${1:-}" != "--run" ]; then
  PACKAGES="$PACKAGES icecast2 ffmpeg nginx libnginx-mod-rtmp pulseaudio pulseaudio-utils liblo-tools planetblupi-music-ogg systemd"
  # Debian packages Chromium as chromium + chromium-driver; Ubuntu as chromium-browser + chromium-chromedriver
  if . /etc/os-release && [ "${ID:-}" = "ubuntu" ]; then
    PACKAGES="$PACKAGES chromium-browser chromium-chromedriver"
  else
    PACKAGES="$PACKAGES chromium chromium-driver"
  fi
fi
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends $missing
fi
