"""The web studio in a real browser: Debian's headless Chromium driven by selenium, against a
running station (tiny random-weight model, an http MP3 output, control.http with a token).

One station serves every test of this module (model loading and the first clip are the slow
part); the tests run in order: listen, then steer from one browser while another watches.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("chromedriver") is None, reason="needs chromium and chromium-driver (tests/setup-debian.sh)",
    ),
]

TOKEN = "studio-test-token"
FIRST_PROMPT = "jazzy lofi hip hop"
NEW_PROMPT = "rainy jazz"
WAIT_SECONDS = 400.0  # a tiny-model clip takes 5-80 s on a loaded 2-core machine

PLAYLIST = """\
station: {{name: Studio FM, steps: 2, crossfade_seconds: 0.25, lookahead_clips: 1}}
outputs:
  - {{type: http, path: /stream.mp3, format: mp3}}
control:
  http: {{host: 127.0.0.1, port: {port}, token_env: STUDIO_TEST_TOKEN}}
riffs:
  - {{prompt: {prompt}, seed: 42, clips: 1}}
  - {{prompt: church bells on sunday, clips: 1}}
"""


def until(predicate: Callable[[], Any], what: str, seconds: float = WAIT_SECONDS) -> Any:
    """Polls predicate until it is truthy; an element the page re-rendered under it is asked again."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + seconds
    while True:
        try:
            value = predicate()
        except StaleElementReferenceException:
            value = None  # the page replaced the element between finding and reading it
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class RunningStation:
    """A Station playing on its own event loop in a thread, and where its HTTP server listens."""

    def __init__(self, playlist_path: Path, model: Path) -> None:
        import os

        from riffradio.app.application import StationApp
        from riffradio.app.outputs import check_output
        from riffradio.playlist.loader import check_playlist

        os.environ["STUDIO_TEST_TOKEN"] = TOKEN
        playlist, errors = check_playlist(playlist_path, check_output=check_output)
        assert not errors and playlist is not None, errors
        self.app = StationApp(playlist, model=str(model), device="cpu")
        self.station = self.app.station
        self.on_air = threading.Event()
        self.station.add_on_air_listener(self.on_air.set)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        until(lambda: self.app.servers or self.error, "the HTTP server", 60)
        assert self.error is None, self.error
        self.url = self.app.servers[0].url

    def _run(self) -> None:
        try:
            asyncio.run(self.app.run())
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def nowplaying(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/api/nowplaying", timeout=10) as response:
            return json.loads(response.read())

    def title(self) -> str | None:
        now = self.nowplaying()["now_playing"]
        return now["song"]["title"] if now else None

    def stop(self) -> None:
        self.app.stop()
        self.thread.join(30)


@pytest.fixture(scope="module")
def station(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStation]:
    path = tmp_path_factory.mktemp("studio") / "studio.yaml"
    path.write_text(PLAYLIST.format(prompt=FIRST_PROMPT, port=free_port()))
    running = RunningStation(path, tiny_model_dir)
    try:
        assert running.on_air.wait(WAIT_SECONDS), "the station never went on air"
        yield running
    finally:
        running.stop()


def chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(30)
    return driver


@pytest.fixture(scope="module")
def browsers() -> Iterator[list[Any]]:
    drivers = [chromium(), chromium()]
    try:
        yield drivers
    finally:
        for driver in drivers:
            driver.quit()


def text_of(driver: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector).text


def test_the_page_shows_the_playing_prompt_and_its_audio_plays(station: RunningStation, browsers: list[Any]) -> None:
    from selenium.webdriver.common.by import By

    driver = browsers[0]
    driver.get(f"{station.url}/?token={TOKEN}")
    until(lambda: text_of(driver, "#title") == FIRST_PROMPT, "the playing prompt on the page", 60)
    assert "token" not in driver.current_url  # kept in the browser, not in the address bar
    assert driver.find_element(By.CSS_SELECTOR, "input[name=prompt]").is_displayed()
    driver.find_element(By.CSS_SELECTOR, "#play").click()
    first = until(lambda: driver.execute_script("return document.querySelector('audio').currentTime"), "audio to start", 60)
    until(
        lambda: driver.execute_script("return document.querySelector('audio').currentTime") > first + 0.5,
        "currentTime to advance", 60,
    )  # fmt: skip
    assert driver.execute_script("return document.querySelector('audio').paused") is False
    until(lambda: station.nowplaying()["listeners"]["current"] == 1, "the listener in now playing", 30)
    # the page learned where its stream started on the station clock: the picture follows the ear
    until(lambda: driver.execute_script("return studio.listenerStart !== null"), "the stream's start", 30)


def test_without_the_token_no_controls_and_writes_are_refused(station: RunningStation, browsers: list[Any]) -> None:
    from selenium.webdriver.common.by import By

    driver = browsers[1]
    driver.get(f"{station.url}/")
    until(lambda: text_of(driver, "#title") not in ("", "…"), "the title", 60)
    assert not driver.find_element(By.CSS_SELECTOR, "input[name=prompt]").is_displayed()
    assert not driver.find_element(By.CSS_SELECTOR, "button[name=next]").is_displayed()
    assert driver.find_element(By.CSS_SELECTOR, "#token-form").is_displayed()
    status = driver.execute_async_script(
        "const done = arguments[0];"
        "fetch('/api/state', {method: 'POST', body: JSON.stringify({prompt: 'hijack'})}).then(r => done(r.status));"
    )
    assert status == 401
    assert station.station.state.snapshot().live_prompt is None


def test_a_typed_prompt_goes_on_air_and_a_second_browser_follows(station: RunningStation, browsers: list[Any]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    steering, watching = browsers
    watching.get(f"{station.url}/?token={TOKEN}")  # the second browser, now with the token too
    second_box = until(lambda: (box := watching.find_element(By.CSS_SELECTOR, "input[name=prompt]")).is_displayed() and box,
                       "the second browser's controls", 60)  # fmt: skip
    box = steering.find_element(By.CSS_SELECTOR, "input[name=prompt]")
    box.clear()
    box.send_keys(NEW_PROMPT, Keys.ENTER)
    until(lambda: station.station.state.snapshot().live_prompt == NEW_PROMPT, "the prompt in the station state", 30)
    until(lambda: second_box.get_attribute("value") == NEW_PROMPT, "the second browser's prompt field", 30)
    until(lambda: station.title() == NEW_PROMPT, "the new prompt on air")
    for driver in browsers:
        until(lambda driver=driver: text_of(driver, "#title") == NEW_PROMPT, "the new prompt on the page", 60)
    # the history list is re-rendered on every clip: read its covers in one script, not element by element
    covers = until(lambda: steering.execute_script("return [...document.querySelectorAll('#history li img')].map(i => i.src)"),
                   "covers in the history", 30)  # fmt: skip
    assert covers[0].endswith(".png"), covers


def test_the_continuation_fader_steers_the_station_and_the_other_browser_follows(
    station: RunningStation, browsers: list[Any]
) -> None:
    from selenium.webdriver.common.by import By

    steering, watching = browsers
    steering.execute_script(
        "const fader = document.querySelector('#controls [name=continuation_seconds]');"
        "fader.value = 1.28; fader.dispatchEvent(new Event('input'));"
    )
    until(lambda: station.station.state.snapshot().knobs.continuation_seconds == pytest.approx(1.28),
          "the continuation in the station state", 30)  # fmt: skip
    shown = watching.find_element(By.CSS_SELECTOR, 'output[data-for="continuation_seconds"]')
    until(lambda: shown.text == "1.28", "the second browser's continuation fader", 30)


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffmpeg")
def test_ffprobe_decodes_the_stations_own_stream(station: RunningStation, tmp_path: Path) -> None:
    data = b""
    with urllib.request.urlopen(f"{station.url}/stream.mp3", timeout=30) as response:
        while len(data) < 64_000:
            data += response.read(16_000)
    (tmp_path / "own.mp3").write_bytes(data)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,sample_rate", "-of", "json", str(tmp_path / "own.mp3")],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout)["streams"][0] == {"codec_name": "mp3", "sample_rate": "44100"}
