#!/usr/bin/env bash
# The system packages the tests run for real: Icecast, nginx-rtmp, PulseAudio (null sink),
# liblo's oscsend, ffmpeg's ffprobe, systemd-analyze, and recorded music (planetblupi's OGG tracks).
# Debian/Ubuntu, as root (or with sudo). Safe to run again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PACKAGES="icecast2 ffmpeg nginx libnginx-mod-rtmp pulseaudio pulseaudio-utils libportaudio2 liblo-tools planetblupi-music-ogg systemd"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends $missing
fi
