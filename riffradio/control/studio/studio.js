// riffradio studio: listen to, watch and steer the station. Plain JS, no build step, no CDN.
// Talks only to this server: GET /api/state, GET /api/nowplaying, POST /api/state,
// the WebSocket /api/live, the clips' spectrogram PNGs /api/art/N.png and the http stream.
"use strict";

const $ = (selector) => document.querySelector(selector);
const PIXELS_PER_IMAGE = 512; // a Riffusion image: 512 columns = 5.12 s
const TOKEN_KEY = "riffradio.token";

const studio = {
  token: null,
  writable: false,
  state: {},
  nowplaying: null,
  clips: [], // {clip_index, title, start_seconds, duration_seconds, art, image}
  clock: { station_seconds: 0, unix: Date.now() / 1000 },
  listenerId: Math.random().toString(36).slice(2) + Date.now().toString(36),
  listenerStart: null, // station clock at the first byte of this page's stream
  streamPath: null,
  socket: null,
};

// -- the token: from ?token=…, kept in this browser ------------------------------------------
function loadToken() {
  const url = new URL(location.href);
  const given = url.searchParams.get("token");
  if (given) {
    localStorage.setItem(TOKEN_KEY, given);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  studio.token = localStorage.getItem(TOKEN_KEY);
}

function showSteering() {
  const canSteer = studio.writable && !!studio.token;
  $("#controls").hidden = !canSteer;
  $("#token-form").hidden = !studio.writable || !!studio.token;
  $("#forget-token").hidden = !studio.token;
  $("#read-only").hidden = studio.writable;
}

// -- time ------------------------------------------------------------------------------------
function stationNow() {
  return studio.clock.station_seconds + (Date.now() / 1000 - studio.clock.unix);
}

function heardNow() {
  // What this browser hears: the stream's start on the station clock plus the audio's own time.
  const audio = $("#audio");
  if (!audio.paused && studio.listenerStart !== null && audio.currentTime > 0) {
    return studio.listenerStart + audio.currentTime;
  }
  return stationNow();
}

function clipAt(seconds) {
  let found = null;
  for (const clip of studio.clips) {
    if (clip.start_seconds <= seconds + 0.01) found = clip;
  }
  return found;
}

function minutes(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

// -- clips and their images ------------------------------------------------------------------
function addClip(clip) {
  // one entry per start: a clip repeated (the fallback while the next one is late) starts again
  if (studio.clips.some((known) => known.clip_index === clip.clip_index && known.start_seconds === clip.start_seconds)) return;
  const image = studio.clips.find((known) => known.clip_index === clip.clip_index);
  if (image && image.image) {
    studio.clips.push(Object.assign(clip, { image: image.image }));
    studio.clips.sort((a, b) => a.start_seconds - b.start_seconds);
    return;
  }
  if (clip.art) {
    clip.image = new Image();
    clip.image.src = clip.art;
  }
  studio.clips.push(clip);
  studio.clips.sort((a, b) => a.start_seconds - b.start_seconds);
  while (studio.clips.length > 24) studio.clips.shift();
}

let nextImage = { index: null, image: null };
function upcomingImage() {
  const next = studio.nowplaying && studio.nowplaying.playing_next;
  if (!next || !next.song || !next.song.art || next.generating) return null;
  if (nextImage.index !== next.song.id) {
    nextImage = { index: next.song.id, image: new Image() };
    nextImage.image.src = next.song.art;
  }
  return nextImage.image;
}

// -- drawing: the real spectrogram images, scrolling with what is heard ------------------------
function draw() {
  const canvas = $("#spectrogram");
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(canvas.clientWidth * ratio);
  const height = Math.round(canvas.clientHeight * ratio);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const context = canvas.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, width, height);
  const pixelsPerSecond = (height / PIXELS_PER_IMAGE) * 100; // 100 image columns per second
  const playhead = Math.round(width * 0.62);
  const heard = heardNow();
  let lastEnd = null;
  for (const clip of studio.clips) {
    const x = playhead + (clip.start_seconds - heard) * pixelsPerSecond;
    const w = clip.duration_seconds * pixelsPerSecond;
    if (x > width || x + w < 0) continue;
    if (clip.image && clip.image.complete && clip.image.naturalWidth) {
      context.drawImage(clip.image, x, 0, w, height);
    }
    lastEnd = clip.start_seconds + clip.duration_seconds;
  }
  const coming = upcomingImage();
  if (coming && coming.complete && coming.naturalWidth && lastEnd !== null) {
    const x = playhead + (lastEnd - heard) * pixelsPerSecond;
    context.globalAlpha = 0.55;
    context.drawImage(coming, x, 0, 5.12 * pixelsPerSecond, height);
    context.globalAlpha = 1;
  }
  // what is not heard yet, dimmed; the playhead
  context.fillStyle = "rgba(13, 15, 20, 0.55)";
  context.fillRect(playhead, 0, width - playhead, height);
  const gradient = context.createLinearGradient(playhead - 2, 0, playhead + 2, 0);
  gradient.addColorStop(0, "#ff7a3d");
  gradient.addColorStop(1, "#ffb347");
  context.fillStyle = gradient;
  context.fillRect(playhead - 1 * ratio, 0, 2 * ratio, height);

  const clip = clipAt(heard);
  if (clip) {
    const elapsed = Math.min(clip.duration_seconds, Math.max(0, heard - clip.start_seconds));
    setText("#title", clip.title);
    setText("#elapsed", minutes(elapsed));
    setText("#remaining", "−" + minutes(clip.duration_seconds - elapsed));
    $("#progress-fill").style.width = `${(100 * elapsed) / Math.max(clip.duration_seconds, 0.001)}%`;
  }
  requestAnimationFrame(draw);
}

function setText(selector, text) {
  const element = $(selector);
  if (element.textContent !== text) element.textContent = text;
}

// -- now playing -------------------------------------------------------------------------------
function showNowplaying(document) {
  studio.nowplaying = document;
  setText("#station", document.station.name);
  $("#onair").classList.toggle("live", !!document.is_online);
  const count = document.listeners.current;
  setText("#listeners", `${count} listening`);
  if (!studio.clips.length && document.now_playing) setText("#title", document.now_playing.song.title);
  const next = document.playing_next;
  setText("#next", next ? next.song.title + (next.generating ? " (being made)" : "") : "…");
  const mounts = document.station.mounts || [];
  if (mounts.length && !studio.streamPath) {
    studio.streamPath = mounts[0].url;
    setText("#stream-info", `${mounts[0].format.toUpperCase()} ${mounts[0].bitrate} kb/s · ${mounts[0].url}`);
  }
  $("#play").disabled = !studio.streamPath;
  showHistory(document.song_history || []);
  showState(studio.state); // values the state leaves to the playlist follow the clip on air
}

let historyKey = "";
function showHistory(history) {
  const key = history.map((item) => item.sh_id).join(",");
  if (key === historyKey) return;
  historyKey = key;
  const list = $("#history");
  list.replaceChildren(
    ...history.slice(0, 8).map((item) => {
      const entry = document.createElement("li");
      let cover;
      if (item.song.art) {
        cover = document.createElement("img");
        cover.src = item.song.art;
        cover.alt = `spectrogram of ${item.song.title}`;
        cover.loading = "lazy";
        cover.onerror = () => cover.replaceWith(Object.assign(document.createElement("div"), { className: "noart" }));
      } else {
        cover = Object.assign(document.createElement("div"), { className: "noart" });
      }
      const title = document.createElement("span");
      title.textContent = item.song.title;
      entry.append(cover, title);
      return entry;
    }),
  );
}

// -- the player ------------------------------------------------------------------------------
function play() {
  const audio = $("#audio");
  if (!studio.streamPath) return;
  if (!audio.paused) {
    audio.pause();
    audio.removeAttribute("src");
    audio.load();
    studio.listenerStart = null;
    return;
  }
  studio.listenerId = Math.random().toString(36).slice(2) + Date.now().toString(36);
  studio.listenerStart = null;
  audio.src = `${studio.streamPath}?listener=${studio.listenerId}`;
  audio.play().catch((error) => setText("#stream-info", `press play to listen (${error.name})`));
}

function askListenerStart() {
  if (studio.socket && studio.socket.readyState === WebSocket.OPEN) {
    studio.socket.send(JSON.stringify({ listener: studio.listenerId }));
  }
}

// -- steering ----------------------------------------------------------------------------------
const pending = new Map(); // name → timer of a fader's throttled send

async function send(changes, element) {
  const error = $("#steer-error");
  try {
    const response = await fetch("/api/state", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${studio.token}` },
      body: JSON.stringify(changes),
    });
    if (response.status === 401 || response.status === 403) {
      error.textContent = (await response.text()).trim();
      if (response.status === 403 && studio.token) {
        localStorage.removeItem(TOKEN_KEY);
        studio.token = null;
        $("#token-message").textContent = "That token was refused. Enter the station's edit token.";
        showSteering();
      }
      return false;
    }
    const answer = await response.json();
    if (!response.ok) {
      error.textContent = answer.error || `refused (${response.status})`;
      return false;
    }
    error.textContent = "";
    showState(answer.state);
    if (element) {
      element.classList.add("sent");
      setTimeout(() => element.classList.remove("sent"), 600);
    }
    return true;
  } catch (failure) {
    error.textContent = `could not reach the station (${failure.message})`;
    return false;
  }
}

function sendFader(name, value) {
  // at most ~8 changes a second while a fader moves; the last value always goes out
  if (pending.has(name)) {
    pending.get(name).value = value;
    return;
  }
  const entry = { value };
  pending.set(name, entry);
  send({ [name]: value });
  setTimeout(() => {
    pending.delete(name);
    if (entry.value !== value) sendFader(name, entry.value);
  }, 125);
}

function control(name) {
  return document.querySelector(`#controls [name="${name}"]`);
}

function onAir(name) {
  // what the clip on air was made with: shown where the state leaves a value to the playlist
  const document = studio.nowplaying;
  if (!document) return null;
  if (name === "denoising" || name === "guidance" || name === "continuation_seconds") return (document.knobs || {})[name];
  if (name === "crossfade") return (document.riffradio || {}).crossfade_seconds;
  if (name === "alpha" && document.to_prompt === null) return null;
  return document[name] === undefined ? null : document[name];
}

function showState(state) {
  studio.state = state;
  for (const [name, value] of Object.entries(state)) {
    const element = control(name);
    if (!element || element === document.activeElement || pending.has(name)) continue;
    const unset = value === null || value === undefined;
    const shown = unset ? onAir(name) : value;
    if (name === "goto") {
      element.value = String(value);
    } else if (element.type === "range") {
      if (shown !== null && shown !== undefined) element.value = shown;
    } else if (element.type !== "button") {
      element.value = unset ? "" : value;
      if (name === "seed" || name === "seed_image") element.placeholder = shown === null || shown === undefined ? "" : `${shown} (playlist)`;
    }
    const output = document.querySelector(`output[data-for="${name}"]`);
    if (output) {
      output.textContent = shown === null || shown === undefined ? "–" : Number(shown).toFixed(2);
      output.classList.toggle("playlist", unset);
      output.title = unset ? "as the playlist says" : "set live";
    }
  }
  if (state.volume !== undefined) document.querySelector('output[data-for="volume"]').textContent = Number(state.volume).toFixed(2);
}

function wireControls() {
  for (const name of ["prompt", "to_prompt", "seed_image"]) {
    const input = control(name);
    input.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      event.preventDefault();
      const text = input.value.trim();
      if (!text && name !== "to_prompt") return;
      send({ [name]: text }, input).then((ok) => ok && name !== "seed_image" && input.blur());
    });
  }
  const seed = control("seed");
  seed.addEventListener("change", () => seed.value !== "" && send({ seed: Number(seed.value) }, seed));
  for (const name of ["alpha", "denoising", "guidance", "continuation_seconds", "crossfade", "volume"]) {
    const input = control(name);
    input.addEventListener("input", () => {
      document.querySelector(`output[data-for="${name}"]`).textContent = Number(input.value).toFixed(2);
      sendFader(name, Number(input.value));
    });
  }
  control("goto").addEventListener("change", (event) => send({ goto: Number(event.target.value) }, event.target));
  control("next").addEventListener("click", (event) => send({ next: true }, event.target));
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#token-input").value.trim();
    if (!token) return;
    localStorage.setItem(TOKEN_KEY, token);
    studio.token = token;
    $("#token-input").value = "";
    showSteering();
  });
  $("#forget-token").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    studio.token = null;
    showSteering();
  });
  $("#play").addEventListener("click", play);
  $("#play").textContent = "▶";
  $("#local-volume").addEventListener("input", (event) => ($("#audio").volume = Number(event.target.value)));
  const audio = $("#audio");
  audio.addEventListener("playing", () => {
    $("#play").classList.add("playing");
    $("#play").textContent = "❚❚";
    askListenerStart();
  });
  audio.addEventListener("pause", () => {
    $("#play").classList.remove("playing");
    $("#play").textContent = "▶";
  });
}

// -- the live socket -----------------------------------------------------------------------------
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/live`);
  studio.socket = socket;
  socket.onopen = () => {
    $("#connection").textContent = "live";
    $("#connection").classList.add("ok");
    if (!$("#audio").paused) askListenerStart();
  };
  socket.onclose = () => {
    $("#connection").textContent = "reconnecting…";
    $("#connection").classList.remove("ok");
    setTimeout(connect, 2000);
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.clock) studio.clock = message.clock;
    if (message.type === "hello") {
      (message.clips || []).forEach(addClip);
      showState(message.state);
      showNowplaying(message.nowplaying);
    } else if (message.type === "state") {
      showState(message.state);
    } else if (message.type === "nowplaying") {
      showNowplaying(message.nowplaying);
    } else if (message.type === "clip") {
      addClip(message.clip);
    } else if (message.type === "listener") {
      studio.listenerStart = message.start_seconds;
    }
  };
}

async function start() {
  loadToken();
  const answer = await (await fetch("/api/state")).json();
  studio.writable = answer.writable;
  const riffs = control("goto");
  riffs.replaceChildren(
    ...answer.riffs.map((title, index) => Object.assign(document.createElement("option"), { value: index, textContent: `${index + 1}. ${title}` })),
  );
  $("#seed-images").replaceChildren(
    ...answer.seed_images.map((name) => Object.assign(document.createElement("option"), { value: name })),
  );
  showSteering();
  showState(answer.state);
  wireControls();
  showNowplaying(await (await fetch("/api/nowplaying")).json());
  connect();
  requestAnimationFrame(draw);
  if (new URL(location.href).searchParams.has("autoplay")) play();
}

start();
