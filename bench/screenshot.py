"""Screenshots of the web studio for the docs: a real station, a real headless Chromium.

    python3 bench/screenshot.py                       # tiny random-weight model (made on the fly)
    python3 bench/screenshot.py --model none          # rehearsal engine, where this riffradio has it
    python3 bench/screenshot.py --model DIR --clips 6 # any model; wait for 6 clips before the picture

Starts the station from a small playlist (an http MP3 output, control.http with a token), opens
the page with the token at desktop and phone sizes, plays the stream, steers once (a second
prompt and the blend fader) so the controls show a live state, waits until ``--clips`` clips
have been heard (covers for the history), and writes ``docs/studio.png`` and
``docs/studio-phone.png``. Needs chromium and chromium-driver (tests/setup-debian.sh) and selenium.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout, not whichever riffradio is installed

TOKEN = "screenshot-token"
PLAYLIST = """\
station: {{name: Late Night Lofi, steps: 4, crossfade_seconds: 0.25, lookahead_clips: 1}}
outputs:
  - {{type: http, path: /stream.mp3, format: mp3}}
control:
  http: {{host: 127.0.0.1, port: {port}, token_env: SCREENSHOT_TOKEN}}
riffs:
  - {{prompt: jazzy lofi hip hop, seed: 42, to: church bells on sunday, to_seed: 43, clips: 3, seed_image: og_beat}}
  - {{prompt: church bells on sunday, seed: 43, clips: 2, seed_image: breakbeat}}
  - {{prompt: rainy night piano, seed: 7, clips: 2, seed_image: swing_beat}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chromium(width: int, height: int, mobile: bool = False):  # noqa: ANN201
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
                     "--autoplay-policy=no-user-gesture-required", f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(argument)
    if mobile:
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2}})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


def wait(predicate, what: str, seconds: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshot: timed out waiting for {what}")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory or hub id, or none (default: a tiny test model)")
    parser.add_argument("--clips", type=int, default=5, help="clips to hear before the picture")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="directory for studio.png and studio-phone.png")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["SCREENSHOT_TOKEN"] = TOKEN

    from riffradio.app.application import StationApp
    from riffradio.app.outputs import check_output
    from riffradio.playlist.loader import check_playlist

    work = Path(tempfile.mkdtemp(prefix="riffradio-screenshot-"))
    model = args.model
    if model is None:
        from riffradio.engine.testmodel import build_test_model

        model = str(build_test_model(work / "tiny-model", size="tiny"))
    port = free_port()
    (work / "studio.yaml").write_text(PLAYLIST.format(port=port))
    playlist, errors = check_playlist(work / "studio.yaml", check_output=check_output)
    if errors or playlist is None:
        raise SystemExit("\n".join(errors))
    app = StationApp(playlist, model=model, device="cpu")
    thread = threading.Thread(target=lambda: asyncio.run(app.run()), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def nowplaying() -> dict:
        try:
            with urllib.request.urlopen(f"{url}/api/nowplaying", timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            return {}

    wait(lambda: nowplaying().get("is_online"), "the station on air", 900)
    desktop = chromium(1440, 980)
    phone = chromium(390, 844, mobile=True)
    try:
        for driver in (desktop, phone):
            driver.get(f"{url}/?token={TOKEN}")
        desktop.find_element("css selector", "#play").click()
        wait(lambda: len(nowplaying().get("song_history", [])) >= args.clips - 1, f"{args.clips} clips heard", 1800)
        # steer once, so the controls show a live state (the next clip follows it)
        request = urllib.request.Request(
            f"{url}/api/state", method="POST", headers={"Authorization": f"Bearer {TOKEN}"},
            data=json.dumps({"prompt": "rainy night piano", "to_prompt": "church organ", "alpha": 0.35, "guidance": 7.5}).encode(),
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=10).read()
        time.sleep(4)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        desktop.save_screenshot(str(out / "studio.png"))
        phone.save_screenshot(str(out / "studio-phone.png"))
        print(f"screenshot: wrote {out / 'studio.png'} and {out / 'studio-phone.png'}")
    finally:
        desktop.quit()
        phone.quit()
        app.stop()
        thread.join(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
