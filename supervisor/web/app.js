// The try-it page: rooms from /status, a join token from /web/token, then
// livekit-client (the global `LivekitClient`, served from /web/livekit-client.js).
// The bot's audio level and its loudest frequency are measured with WebAudio and
// written into #bot-level (data-rms, data-peak-hz), so a person sees that the bot
// speaks and a test can read it.
"use strict";

const $ = (id) => document.getElementById(id);
const LK = window.LivekitClient;
let room = null;
let meter = null;

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "hint";
}

function note(line) {
  const messages = $("messages");
  messages.textContent += line + "\n";
  messages.scrollTop = messages.scrollHeight;
}

async function listRooms() {
  try {
    const response = await fetch("/status", { cache: "no-store" });
    if (!response.ok) throw new Error(`/status answered ${response.status}`);
    const status = await response.json();
    const body = $("rooms").querySelector("tbody");
    body.replaceChildren();
    // a tree per room, or per participant's job (`name` room:participant, `room` the room)
    for (const r of status.rooms || []) {
      const row = body.insertRow();
      row.insertCell().textContent = r.name;
      row.insertCell().textContent = r.state + (r.kind === "dispatched" ? " (dispatched)" : "");
      row.insertCell().textContent = r.participants ?? "";
      const pick = document.createElement("button");
      pick.className = "secondary";
      pick.textContent = "pick";
      pick.onclick = () => { $("room").value = r.room; };
      row.insertCell().append(pick);
    }
    if (!$("room").value && status.rooms && status.rooms.length) $("room").value = status.rooms[0].room;
    const worker = status.worker;
    $("rooms-note").textContent = worker && worker.enabled
      ? "Rooms on demand: any new room name gets a bot." : "";
  } catch (err) {
    $("rooms-note").textContent = `rooms unknown: ${err.message}`;
  }
}

function showParticipants() {
  if (!room) { $("participants").textContent = "none"; return; }
  const speaking = new Set(room.activeSpeakers.map((p) => p.identity));
  const people = [room.localParticipant, ...room.remoteParticipants.values()];
  $("participants").replaceChildren(...people.map((p, i) => {
    const span = document.createElement("span");
    span.textContent = (i ? ", " : "") + p.identity + (p === room.localParticipant ? " (you)" : "");
    if (speaking.has(p.identity)) span.className = "speaking";
    return span;
  }));
}

// The bot's level (RMS of the last 4096 samples) and loudest frequency, 10 times a second.
function measure(track) {
  const context = new AudioContext();
  const source = context.createMediaStreamSource(new MediaStream([track.mediaStreamTrack]));
  const analyser = context.createAnalyser();
  analyser.fftSize = 4096;
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const spectrum = new Float32Array(analyser.frequencyBinCount);
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    analyser.getFloatFrequencyData(spectrum);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const rms = Math.sqrt(sum / samples.length);
    let peak = 1;
    for (let i = 2; i < spectrum.length; i++) if (spectrum[i] > spectrum[peak]) peak = i;
    const hz = Math.round((peak * context.sampleRate) / analyser.fftSize);
    const out = $("bot-level");
    out.dataset.rms = rms.toFixed(4);
    out.dataset.peakHz = rms > 0.003 ? String(hz) : "0";
    out.textContent = rms > 0.003 ? `level ${rms.toFixed(3)}, loudest ${hz} Hz` : "silent";
    $("meter").firstElementChild.style.width = `${Math.min(100, rms * 300)}%`;
  }, 100);
  return { stop: () => { clearInterval(timer); context.close(); } };
}

async function join(event) {
  event.preventDefault();
  $("join").disabled = true;
  say("asking for a token...");
  try {
    const response = await fetch("/web/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ room: $("room").value, identity: $("identity").value, secret: $("secret").value }),
    });
    const answer = await response.json();
    if (response.status === 401) $("secret-label").hidden = false;
    if (!response.ok) throw new Error(answer.error || `the token endpoint answered ${response.status}`);
    room = new LK.Room();
    room
      .on(LK.RoomEvent.TrackSubscribed, (track, publication, participant) => {
        if (track.kind !== LK.Track.Kind.Audio) return;
        document.body.append(track.attach());
        if (meter) meter.stop();
        meter = measure(track);
        note(`hearing ${participant.identity}`);
      })
      .on(LK.RoomEvent.ParticipantConnected, showParticipants)
      .on(LK.RoomEvent.ParticipantDisconnected, showParticipants)
      .on(LK.RoomEvent.ActiveSpeakersChanged, showParticipants)
      .on(LK.RoomEvent.DataReceived, (payload, participant) => {
        note(`${participant ? participant.identity : "server"}: ${new TextDecoder().decode(payload)}`);
      })
      .on(LK.RoomEvent.Disconnected, () => leave(false));
    await room.connect(answer.url, answer.token);
    await room.localParticipant.setMicrophoneEnabled(true);
    say(`in ${answer.room} as ${answer.identity}`);
    $("leave").disabled = false;
    $("send").disabled = false;
    showParticipants();
  } catch (err) {
    say(`could not join: ${err.message}`, true);
    $("join").disabled = false;
    room = null;
  }
}

function leave(disconnect = true) {
  if (meter) { meter.stop(); meter = null; }
  if (room && disconnect) room.disconnect();
  room = null;
  document.querySelectorAll("audio").forEach((element) => element.remove());
  $("join").disabled = false;
  $("leave").disabled = true;
  $("send").disabled = true;
  say("not connected");
  showParticipants();
  listRooms();
}

async function send(event) {
  event.preventDefault();
  const text = $("text").value;
  if (!room || !text) return;
  const message = JSON.stringify({ text });
  await room.localParticipant.publishData(new TextEncoder().encode(message), { reliable: true });
  note(`you: ${message}`);
  $("text").value = "";
}

$("identity").value = "guest-" + Math.random().toString(36).slice(2, 8);
$("join-form").addEventListener("submit", join);
$("leave").addEventListener("click", () => leave());
$("send-form").addEventListener("submit", send);
if (!LK) say("livekit-client did not load: run `make web`", true);
listRooms();
setInterval(listRooms, 5000);
