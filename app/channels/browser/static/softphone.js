// The softphone: one big button, the microphone through an AudioWorklet, OCTI's voice through
// a playback worklet, the seed protocol over /ws/realtime (with its extensions: playback
// reports, clear_audio, interrupt, user_text, ended). No framework and no build step.
//
// Query parameters, for tests and kiosks: `idle_ms` (the inactivity hang-up, default 30 s),
// `record=1` (keep what was played in window.octiSoftphone.played), `rate` (16000 or 24000).

const params = new URLSearchParams(location.search);
const RATE = Number(params.get('rate')) === 16000 ? 16000 : 24000;
const IDLE_MS = Number(params.get('idle_ms')) || 30000;
const RECORD = params.get('record') === '1';
const MAX_RECONNECTS = 3;
const SPEECH_LEVEL = 0.02;  // RMS over which the microphone counts as someone talking
const LABELS = {
  idle: 'Parler à OCTI', connecting: 'Connexion…', listening: 'Je vous écoute',
  speaking: 'OCTI parle', interrupted: 'Interrompu', error: 'Erreur',
};
const VIBRATIONS = { listening: [30], speaking: [15], interrupted: [40, 30, 40], error: [120, 60, 120] };

const $ = (id) => document.getElementById(id);
const talk = $('talk');

// What tests read: the states the button went through, what was played, the socket's traffic
// and the microphone context's rate.
const debug = window.octiSoftphone = { states: ['idle'], played: [], errors: [], sent: 0, captureRate: null };

let audio = null;          // { context, player, captureContext, capture, micStream }
let socket = null;
let ready = false;         // the model session is ready (after `ready`)
let wanted = false;        // the user wants a conversation (so a drop is reconnected)
let reconnects = 0;
let lastActivity = 0;
let state = 'idle';
let answerLine = null;

function setState(next) {
  if (next === state) return;
  state = next;
  talk.dataset.state = next;
  $('talk-label').textContent = LABELS[next] || LABELS.idle;
  debug.states.push(next);
  if (navigator.vibrate && VIBRATIONS[next]) navigator.vibrate(VIBRATIONS[next]);
  const inConversation = next !== 'idle' && next !== 'error' && next !== 'connecting';
  $('interrupt').disabled = next !== 'speaking';
  $('done').disabled = !inConversation || !audio || !audio.micStream;
  $('new-conversation').disabled = !inConversation;
  $('hang-up').disabled = next === 'idle';
}

function say(text) { $('status').textContent = text; }

function activity() { lastActivity = performance.now(); }

async function openAudio() {
  if (audio) return audio;
  const context = new AudioContext({ sampleRate: RATE, latencyHint: 'interactive' });
  await context.audioWorklet.addModule('playback-worklet.js');
  const player = new AudioWorkletNode(context, 'octi-playback', {
    numberOfInputs: 0, outputChannelCount: [1], processorOptions: { record: RECORD } });
  player.connect(context.destination);
  player.port.onmessage = (event) => playerMessage(event.data);
  audio = { context, player, captureContext: null, capture: null, micStream: null };
  let micStream = null;
  let captureContext = null;
  try {
    micStream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 } });
    // The microphone's own context, at the device's rate: Firefox connects a microphone to no
    // context of another rate. Its worklet resamples to the socket's.
    captureContext = new AudioContext({ latencyHint: 'interactive' });
    await captureContext.audioWorklet.addModule('capture-worklet.js');
    const source = captureContext.createMediaStreamSource(micStream);
    const capture = new AudioWorkletNode(captureContext, 'octi-capture', { processorOptions: { rate: RATE } });
    capture.port.onmessage = (event) => captured(event.data);
    const mute = captureContext.createGain();  // the worklet must be pulled to run; nothing is heard
    mute.gain.value = 0;
    source.connect(capture).connect(mute).connect(captureContext.destination);
    // Only now, its audio on its way to the socket, does the page say that OCTI listens.
    Object.assign(audio, { captureContext, capture, micStream });
    debug.captureRate = captureContext.sampleRate;
    $('text-fallback').hidden = true;
  } catch (error) {
    // A microphone granted but not wired is let go, so that the browser's microphone
    // indicator does not stay on for nothing.
    if (micStream) micStream.getTracks().forEach((track) => track.stop());
    if (captureContext) captureContext.close();
    debug.errors.push(`microphone: ${error.name}`);
    $('text-fallback').hidden = false;
    say("Micro indisponible : vous pouvez écrire votre question, OCTI vous répondra à voix haute.");
  }
  return audio;
}

function captured({ pcm, level }) {
  $('level-bar').style.width = `${Math.min(100, level * 400)}%`;
  if (level > SPEECH_LEVEL) activity();
  if (ready && socket && socket.readyState === WebSocket.OPEN) {
    socket.send(pcm);
    debug.sent += pcm.byteLength;
  }
}

function playerMessage(message) {
  if (message.type === 'tap') {
    debug.played.push(...message.samples);
    return;
  }
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: 'playback', samples: message.samples }));
  }
  if (message.dry && (state === 'speaking' || state === 'interrupted')) {
    activity();
    setState('listening');
  }
}

function connect() {
  const url = new URL(`/ws/realtime${RATE === 16000 ? '?sample_rate=16000' : ''}`, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  audio.player.port.postMessage({ type: 'reset' });
  ready = false;
  setState('connecting');
  socket = new WebSocket(url);
  socket.binaryType = 'arraybuffer';
  socket.onopen = () => socket.send(JSON.stringify({ type: 'start_conversation' }));
  socket.onmessage = (event) => serverMessage(event.data);
  socket.onclose = (event) => closed(event);
}

function serverMessage(data) {
  if (typeof data !== 'string') {
    audio.player.port.postMessage({ type: 'audio', samples: new Int16Array(data) }, [data]);
    if (state !== 'speaking') setState('speaking');
    activity();
    return;
  }
  const message = JSON.parse(data);
  switch (message.type) {
    case 'ready':
      ready = true;
      reconnects = 0;
      activity();
      setState('listening');
      say(audio.micStream ? 'Parlez, OCTI vous écoute.' : 'Écrivez votre question.');
      break;
    case 'transcript_delta':
      if (!answerLine) {
        answerLine = document.createElement('p');
        $('transcript').append(answerLine);
      }
      answerLine.textContent += message.text;
      break;
    case 'bot_audio_end':
      audio.player.port.postMessage({ type: 'complete' });
      answerLine = null;
      break;
    case 'clear_audio':
      audio.player.port.postMessage({ type: 'clear' });
      answerLine = null;
      setState('interrupted');
      break;
    case 'error':
      serverError(message);
      break;
    case 'ended':  // OCTI said goodbye (or the caller went quiet): the close that follows is no drop
      if (wanted) say('Conversation terminée. Appuyez sur « Parler à OCTI » pour en commencer une nouvelle.');
      wanted = false;  // after the time limit's error, its own message stays
      break;
    default:
      break;  // a newer server's message: ignored
  }
}

function serverError(message) {
  debug.errors.push(message.code || 'error');
  say(message.message);
  if (message.code === 'unauthorized') {
    wanted = false;
    $('sign-in').hidden = false;
    setState('error');
  } else if (message.code === 'time_limit' || message.code === 'rate_limited') {
    wanted = false;
  }
}

function closed(event) {
  ready = false;
  socket = null;
  if (!wanted) {
    if (state !== 'error') setState('idle');
    return;
  }
  if (event.code === 1008) {  // refused: retrying would be refused again
    wanted = false;
    setState('error');
    return;
  }
  if (reconnects < MAX_RECONNECTS) {
    reconnects += 1;
    const delay = 1000 * 2 ** (reconnects - 1);
    say(`Connexion perdue, nouvelle tentative (${reconnects}/${MAX_RECONNECTS})…`);
    setState('connecting');
    setTimeout(() => { if (wanted) connect(); }, delay);
  } else {
    wanted = false;
    say('Connexion perdue. Vérifiez le réseau puis réessayez.');
    setState('error');
  }
}

async function start() {
  wanted = true;
  reconnects = 0;
  say('Connexion…');
  await openAudio();
  await audio.context.resume();
  if (audio.captureContext) await audio.captureContext.resume();
  connect();
}

function hangUp(reason) {
  wanted = false;
  if (socket) socket.close(1000);
  if (audio) audio.player.port.postMessage({ type: 'clear' });
  say(reason);
  setState('idle');
}

talk.addEventListener('click', () => {
  if (state === 'idle' || state === 'error') start();
});
$('hang-up').addEventListener('click', () => hangUp('Conversation terminée.'));
$('interrupt').addEventListener('click', () => {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: 'interrupt' }));
  audio.player.port.postMessage({ type: 'clear' });
  setState('interrupted');
});
$('done').addEventListener('click', () => {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: 'user_audio_end' }));
});
$('new-conversation').addEventListener('click', () => {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: 'reset_session' }));
    audio.player.port.postMessage({ type: 'clear' });
    $('transcript').replaceChildren();
  }
});
$('text-fallback').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('question').value.trim();
  if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({ type: 'user_text', text }));
  const line = document.createElement('p');
  line.className = 'caller';
  line.textContent = text;
  $('transcript').append(line);
  $('question').value = '';
  activity();
});
$('sign-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const response = await fetch('/api/web/token', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: form.get('username'), password: form.get('password') }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    $('sign-in-error').textContent = body.error || 'Connexion impossible.';
    return;
  }
  $('sign-in').hidden = true;
  $('sign-in-error').textContent = '';
  start();
});

// The seed plan: hang up after 30 s without anyone talking, to save the battery and the bill.
setInterval(() => {
  if (ready && state === 'listening' && performance.now() - lastActivity > IDLE_MS) {
    hangUp('Déconnecté après une période sans échange. Appuyez pour reprendre.');
  }
}, 1000);
