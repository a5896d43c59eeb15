// The join page: /telehealth-aws.html?meeting=<MeetingId>&invite=<invite token>[&name=<name to pre-fill>]
// (the practitioner console's Join button adds `name`, so the practitioner only has to press Join).
//
// lobby (camera preview, devices, name, Join) → create-attendee → the call layer the meeting's provider needs
// → call (tiles, Mute, Stop video, devices, Leave, participant count) → a message screen (left, ended, invalid
// link, error). Nothing about the patient (name, tokens) is written to the console.
//
// Two call layers, one page: `Call` (call.js: our signaling socket + one RTCPeerConnection to the gateway's SFU)
// for local meetings, `ChimeCall` (chime-call.js: amazon-chime-sdk-js, loaded only when needed) for meetings the
// gateway created on Amazon Chime. Both take the same stream and report the same events.
//
// For tests: window.__telehealth = { pc, state, events } (pc: the RTCPeerConnection once created;
// state: 'idle' | 'joining' | 'joined' | 'reconnecting' | 'left' | 'ended' | 'error'; events: what the page was
// told about the others, [{ type, attendeeId, at }]).

import { createAttendee, isMeetingId, ApiError } from './api.js';
import { Call } from './call.js';
import { getLocalMedia, listDevices, stopStream } from './media.js';
import { signalingUrl, ErrorCode, EndReason } from './signaling.js';

const $ = (id) => document.getElementById(id);
const el = {
  banner: $('demo-banner'),
  count: $('participant-count'),
  lobby: $('screen-lobby'),
  call: $('screen-call'),
  message: $('screen-message'),
  previewVideo: $('preview-video'),
  previewPlaceholder: $('preview-placeholder'),
  previewStatus: $('preview-status'),
  mediaNotice: $('media-notice'),
  form: $('join-form'),
  nameInput: $('name-input'),
  joinError: $('join-error'),
  joinButton: $('join-button'),
  stage: $('stage'),
  remoteTiles: $('remote-tiles'),
  selfTile: $('self-tile'),
  selfVideo: $('self-video'),
  selfAvatar: $('self-avatar'),
  callNotice: $('call-notice'),
  muteButton: $('mute-button'),
  videoButton: $('video-button'),
  leaveButton: $('leave-button'),
  messageTitle: $('message-title'),
  messageText: $('message-text'),
  rejoinButton: $('rejoin-button'),
  devicePicker: $('device-picker'),
  cameraSelect: $('camera-select'),
  microphoneSelect: $('microphone-select'),
  lobbyDevices: $('lobby-devices'),
  callDevices: $('call-devices'),
};

// ---- page state -------------------------------------------------------------------------------------------

const params = new URLSearchParams(window.location.search);
const meetingId = (params.get('meeting') || '').trim();
const invite = params.get('invite') || '';
const presetName = (params.get('name') || '').trim().slice(0, 64);

let call = null;
let localStream = null;
let mediaReady = null; // Promise of getLocalMedia(), started on load
let audioMuted = true;
let videoMuted = true;
let session = null; // { provider, name, res } of the current attendee (create-attendee's answer), kept for Rejoin
let deviceChoice = {}; // { camera, microphone }: device ids picked by the person
let rejoining = false;
let baseCallNotice = ''; // shown in call when nothing else needs saying
/** attendeeId → { root, video, nameEl, name, stream, known } */
const tiles = new Map();

const testHook = { state: 'idle', events: [] };
Object.defineProperty(testHook, 'pc', { get: () => call?.pc ?? null, enumerable: true });
window.__telehealth = testHook;

function setState(s) {
  testHook.state = s;
  document.body.dataset.state = s;
}

// ---- screens ----------------------------------------------------------------------------------------------

function showScreen(name) {
  el.lobby.hidden = name !== 'lobby';
  el.call.hidden = name !== 'call';
  el.message.hidden = name !== 'message';
  el.count.hidden = name !== 'call';
}

function showMessage(title, text, { rejoin = false } = {}) {
  el.messageTitle.textContent = title;
  el.messageText.textContent = text;
  el.rejoinButton.hidden = !rejoin;
  showScreen('message');
  if (rejoin) el.rejoinButton.focus();
}

function notice(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}

function setCount(n) {
  const count = Number.isFinite(n) && n >= 0 ? n : 0;
  el.count.dataset.count = String(count);
  el.count.textContent = `${count} ${count === 1 ? 'participant' : 'participants'}`;
}

function initials(name) {
  const parts = String(name || '').replace(/[^\p{L}\p{N}\s]/gu, ' ').trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0) return '?';
  const first = parts.length > 1 && parts[0].length <= 3 && parts.length > 2 ? parts[1] : parts[0];
  const last = parts[parts.length - 1];
  return (first[0] + (parts.length > 1 ? last[0] : '')).toUpperCase();
}

// ---- local media ------------------------------------------------------------------------------------------

function hasTrack(kind) {
  return !!localStream?.getTracks().some((t) => t.kind === kind && t.readyState === 'live');
}

async function acquireMedia() {
  el.previewStatus.textContent = 'Starting your camera…';
  const { stream, notice: text } = await getLocalMedia(deviceChoice);
  localStream = stream;
  audioMuted = !hasTrack('audio');
  videoMuted = !hasTrack('video');
  el.previewVideo.srcObject = stream;
  el.previewPlaceholder.hidden = hasTrack('video');
  el.previewStatus.textContent = hasTrack('video') ? '' : 'Camera off';
  notice(el.mediaNotice, text);
  await fillDevicePicker();
  return stream;
}

/** The camera and microphone lists, with what is in use selected. Hidden when there is nothing to choose. */
async function fillDevicePicker() {
  const { cameras, microphones } = await listDevices();
  const inUse = (kind) => localStream?.getTracks().find((t) => t.kind === kind)?.getSettings().deviceId;
  const fill = (select, devices, current, fallback) => {
    select.replaceChildren(
      ...devices.map((d, i) => {
        const option = document.createElement('option');
        option.value = d.deviceId;
        option.textContent = d.label || `${fallback} ${i + 1}`;
        option.selected = d.deviceId === current;
        return option;
      }),
    );
    select.disabled = devices.length < 2;
  };
  fill(el.cameraSelect, cameras, inUse('video'), 'Camera');
  fill(el.microphoneSelect, microphones, inUse('audio'), 'Microphone');
  el.devicePicker.hidden = cameras.length + microphones.length === 0;
}

/** Switches to the picked camera and microphone, in the lobby or during the call. */
async function switchDevices() {
  deviceChoice = { camera: el.cameraSelect.value || undefined, microphone: el.microphoneSelect.value || undefined };
  const { audioMuted: wasAudioMuted, videoMuted: wasVideoMuted } = { audioMuted, videoMuted };
  stopStream(localStream);
  mediaReady = acquireMedia();
  await mediaReady;
  if (call && !call.finished) {
    // Keep the person's mute choices across the switch.
    audioMuted = wasAudioMuted || !hasTrack('audio');
    videoMuted = wasVideoMuted || !hasTrack('video');
    el.selfVideo.srcObject = localStream;
    applyLocalMediaState();
    await call.replaceLocalStream(localStream);
    call.sendMediaState(audioMuted, videoMuted);
  }
}

function applyLocalMediaState() {
  localStream?.getAudioTracks().forEach((t) => (t.enabled = !audioMuted));
  localStream?.getVideoTracks().forEach((t) => (t.enabled = !videoMuted));

  el.muteButton.querySelector('.ctl-label').textContent = audioMuted ? 'Unmute' : 'Mute';
  el.muteButton.setAttribute('aria-pressed', String(audioMuted));
  el.muteButton.disabled = !hasTrack('audio');
  el.muteButton.title = hasTrack('audio') ? '' : 'No microphone available';
  el.muteButton.classList.toggle('ctl--off', audioMuted);

  el.videoButton.querySelector('.ctl-label').textContent = videoMuted ? 'Start video' : 'Stop video';
  el.videoButton.setAttribute('aria-pressed', String(videoMuted));
  el.videoButton.disabled = !hasTrack('video');
  el.videoButton.title = hasTrack('video') ? '' : 'No camera available';
  el.videoButton.classList.toggle('ctl--off', videoMuted);

  el.selfTile.classList.toggle('tile--audio-muted', audioMuted);
  el.selfTile.classList.toggle('tile--video-off', videoMuted);
}

// ---- tiles ------------------------------------------------------------------------------------------------

function updateStage() {
  el.stage.dataset.remotes = String(tiles.size);
}

function ensureTile(attendeeId, name) {
  let tile = tiles.get(attendeeId);
  if (!tile) {
    const root = document.createElement('figure');
    root.className = 'tile tile--remote tile--video-off';
    root.dataset.attendeeId = attendeeId;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    const placeholder = document.createElement('div');
    placeholder.className = 'tile-placeholder';
    placeholder.setAttribute('aria-hidden', 'true');
    const avatar = document.createElement('span');
    avatar.className = 'avatar';
    placeholder.append(avatar);
    const label = document.createElement('figcaption');
    label.className = 'tile-label';
    const nameEl = document.createElement('span');
    nameEl.className = 'tile-name';
    const mic = document.createElement('span');
    mic.className = 'tile-flag tile-flag--mic';
    mic.title = 'Microphone off';
    mic.textContent = 'Muted';
    label.append(nameEl, mic);
    root.append(video, placeholder, label);
    el.remoteTiles.append(root);
    tile = { root, video, nameEl, avatar, name: '', stream: null, known: false, videoMuted: false };
    tiles.set(attendeeId, tile);
    updateStage();
  }
  if (name) {
    tile.name = name;
    tile.known = true;
  }
  tile.nameEl.textContent = tile.name || 'Participant';
  tile.avatar.textContent = initials(tile.name);
  return tile;
}

function refreshTileVideo(tile) {
  // A Chime tile (bound by the SDK) is live while the SDK says so; a local one while its track runs.
  const liveVideo = tile.boundTo ? true : !!tile.stream?.getVideoTracks().some((t) => t.readyState === 'live' && !t.muted);
  tile.root.classList.toggle('tile--video-off', tile.videoMuted || !liveVideo);
}

/** `vMuted` null: unknown (Chime reports microphones only; its video tiles say the rest). */
function setTileMedia(attendeeId, aMuted, vMuted) {
  const tile = tiles.get(attendeeId);
  if (!tile) return;
  tile.root.classList.toggle('tile--audio-muted', aMuted);
  if (vMuted !== null && vMuted !== undefined) tile.videoMuted = vMuted;
  refreshTileVideo(tile);
}

/** A Chime video tile for an attendee: the SDK binds it to the tile's video element. */
function attachRemoteTile(attendeeId, { active, bind }) {
  const tile = ensureTile(attendeeId);
  if (tile.boundTo !== bind) {
    tile.boundTo = bind;
    bind(tile.video);
  }
  tile.videoMuted = !active;
  tile.root.classList.toggle('tile--video-off', !active);
}

function removeTile(attendeeId) {
  const tile = tiles.get(attendeeId);
  if (!tile) return;
  tile.video.srcObject = null;
  tile.root.remove();
  tiles.delete(attendeeId);
  updateStage();
}

function clearTiles() {
  for (const id of [...tiles.keys()]) removeTile(id);
}

/** Someone's connection dropped (the server holds their place) or came back. */
function setTileReconnecting(attendeeId, reconnecting) {
  const tile = tiles.get(attendeeId);
  if (!tile) return;
  tile.root.classList.toggle('tile--reconnecting', reconnecting);
  tile.nameEl.textContent = reconnecting ? `${tile.name || 'Participant'} (reconnecting…)` : tile.name || 'Participant';
}

function logEvent(type, attendeeId) {
  testHook.events.push({ type, attendeeId, at: Date.now() });
  if (testHook.events.length > 500) testHook.events.shift();
}

function attachRemoteStream(attendeeId, stream, track) {
  const tile = ensureTile(attendeeId);
  if (tile.stream !== stream) {
    tile.stream = stream;
    tile.video.srcObject = stream;
    const onChange = () => {
      if (tiles.get(attendeeId) !== tile || tile.stream !== stream) return;
      const live = stream.getTracks().some((t) => t.readyState === 'live');
      if (!live) {
        // Their media is gone. Someone we know is still in the visit keeps a tile with a placeholder.
        tile.stream = null;
        tile.video.srcObject = null;
        if (!tile.known) removeTile(attendeeId);
        else refreshTileVideo(tile);
      } else {
        refreshTileVideo(tile);
      }
    };
    stream.addEventListener('removetrack', onChange);
    stream.addEventListener('addtrack', onChange);
    tile.onChange = onChange;
  }
  track.addEventListener('ended', () => tile.onChange?.());
  track.addEventListener('mute', () => refreshTileVideo(tile));
  track.addEventListener('unmute', () => refreshTileVideo(tile));
  tile.video.play().catch(() => {
    /* autoplay may wait for a gesture; Join was one */
  });
  refreshTileVideo(tile);
}

// ---- joining ----------------------------------------------------------------------------------------------

function validName(name) {
  return name.length >= 2 && name.length <= 64;
}

function resetJoinButton() {
  el.joinButton.disabled = false;
  el.joinButton.textContent = 'Join';
}

async function join(event) {
  event?.preventDefault();
  if (testHook.state === 'joining' || testHook.state === 'joined') return;
  const name = el.nameInput.value.trim();
  if (!validName(name)) {
    notice(el.joinError, 'Please enter your name (2 to 64 characters).');
    el.nameInput.setAttribute('aria-invalid', 'true');
    el.nameInput.focus();
    return;
  }
  el.nameInput.removeAttribute('aria-invalid');
  notice(el.joinError, '');
  setState('joining');
  el.joinButton.disabled = true;
  el.joinButton.textContent = 'Joining…';

  let res;
  try {
    await mediaReady;
    res = await createAttendee({ meetingId, attendeeName: name, invite });
  } catch (err) {
    resetJoinButton();
    const titles = {
      ended: 'This meeting has ended',
      'expired-link': 'This link has expired',
      'invalid-link': 'This link is invalid or has expired',
    };
    if (err instanceof ApiError && titles[err.kind]) {
      setState(err.kind === 'ended' ? 'ended' : 'error');
      stopLocal();
      showMessage(titles[err.kind], err.message);
    } else {
      setState('idle');
      notice(el.joinError, err instanceof ApiError ? err.message : 'Something went wrong. Please try again.');
    }
    return;
  }

  if (res.demoMode === true) el.banner.hidden = false;
  session = { provider: res.provider === 'chime' ? 'chime' : 'local', name, res };
  el.selfAvatar.textContent = initials(name);
  startCall();
}

/** The call layer for the session's provider (the Chime SDK is fetched only for Chime meetings). */
async function makeCall(on) {
  const common = { localStream, mediaState: () => ({ audioMuted, videoMuted }), on };
  const { res } = session;
  if (session.provider === 'chime') {
    const { ChimeCall } = await import('./chime-call.js');
    return new ChimeCall({ ...common, meeting: res.meeting, attendee: res.attendee, presence: res.presence });
  }
  return new Call({ ...common, url: signalingUrl(res.meeting), token: res.attendee.JoinToken });
}

async function startCall() {
  setState('joining');
  applyLocalMediaState();
  el.selfVideo.srcObject = localStream;
  el.callDevices.append(el.devicePicker);
  const on = {
    joined(frame) {
      rejoining = false;
      setState('joined');
      const present = new Set((frame.participants || []).map((p) => p.attendeeId));
      if (frame.resumed) {
        // Back in the same visit: keep the tiles (and their streams) of those still here.
        for (const id of [...tiles.keys()]) if (!present.has(id)) removeTile(id);
      } else {
        clearTiles();
      }
      setCount(frame.count);
      for (const p of frame.participants || []) {
        ensureTile(p.attendeeId, p.name);
        setTileMedia(p.attendeeId, !!p.audioMuted, !!p.videoMuted);
        setTileReconnecting(p.attendeeId, !!p.reconnecting);
      }
      baseCallNotice =
        hasTrack('audio') || hasTrack('video')
          ? ''
          : 'You joined without camera or microphone: you can see and hear the others, but they cannot see or hear you.';
      notice(el.callNotice, baseCallNotice);
      showScreen('call');
      el.leaveButton.focus({ preventScroll: true });
    },
    count: setCount,
    participantJoined(p) {
      logEvent('participantJoined', p.attendeeId);
      ensureTile(p.attendeeId, p.name);
      setTileMedia(p.attendeeId, !!p.audioMuted, !!p.videoMuted);
    },
    participantLeft(attendeeId) {
      logEvent('participantLeft', attendeeId);
      removeTile(attendeeId);
    },
    participantReconnecting(attendeeId) {
      logEvent('participantReconnecting', attendeeId);
      setTileReconnecting(attendeeId, true);
    },
    participantResumed(attendeeId) {
      logEvent('participantResumed', attendeeId);
      setTileReconnecting(attendeeId, false);
    },
    reconnecting() {
      if (testHook.state === 'joined') setState('reconnecting');
      notice(el.callNotice, 'Connection lost. Reconnecting…');
    },
    mediaState: setTileMedia,
    remoteStream: attachRemoteStream,
    remoteTile: attachRemoteTile,
    unreachable() {
      endCall('error');
      showMessage(
        'Could not connect to the video service',
        'The video service could not be reached. Check your internet connection, then try again. ' +
          'If this keeps happening, please contact your clinic.',
        { rejoin: true },
      );
    },
    connectionState(s) {
      if (s === 'failed') {
        notice(el.callNotice, 'The video connection was interrupted. Reconnecting…');
      } else if (s === 'disconnected') {
        notice(el.callNotice, 'Reconnecting video…');
      } else if (s === 'connected') {
        notice(el.callNotice, baseCallNotice);
      }
    },
    ended(reason) {
      endCall('ended');
      if (reason === EndReason.REPLACED) {
        showMessage('You joined from another window', 'This window has left the session; the visit continues in the other one.');
      } else if (reason === EndReason.SERVER_SHUTDOWN) {
        // Sent by older gateways only; a current one says `serverRestarting` and the page reconnects by itself.
        showMessage('The session has ended', 'The video server is restarting. Please use your link again in a few minutes.');
      } else {
        showMessage('The session has ended', 'Thank you. You can close this window.');
      }
    },
    error(code, _message, fatal) {
      if (!fatal) {
        console.warn('signaling error', code);
        return;
      }
      if (code === ErrorCode.UNAUTHORIZED && rejoining && session?.name) {
        // The old JoinToken is no longer accepted: become a new attendee under the same name.
        rejoining = false;
        endCall('idle');
        el.nameInput.value = session.name;
        join();
        return;
      }
      if (code === ErrorCode.UNAUTHORIZED) {
        endCall('error');
        showMessage('This link is invalid or has expired', 'Please ask your clinic for a new link.');
      } else if (code === ErrorCode.NOT_FOUND) {
        endCall('ended');
        showMessage('The session has ended', 'This meeting has ended or does not exist.');
      } else {
        endCall('error');
        showMessage('Could not join the session', 'The session is full or the server is busy. Please try again shortly.', {
          rejoin: true,
        });
      }
    },
    disconnected() {
      const wasJoined = testHook.state === 'joined' || testHook.state === 'reconnecting';
      endCall('error');
      showMessage(
        wasJoined ? 'Connection lost' : 'Could not connect',
        'The connection to the video server could not be restored. Check your network and rejoin.',
        { rejoin: true },
      );
    },
  };
  try {
    call = await makeCall(on);
    await call.start();
  } catch (err) {
    console.warn('starting the call failed:', err?.name || 'error');
    on.unreachable();
  }
}

function stopLocal() {
  stopStream(localStream);
  localStream = null;
  el.previewVideo.srcObject = null;
  el.selfVideo.srcObject = null;
}

/** Tears the call down (socket, peer connection, camera) and moves to `state`. */
function endCall(state) {
  if (call && !call.finished) call.leave();
  el.lobbyDevices.append(el.devicePicker);
  clearTiles();
  stopLocal();
  setState(state);
}

function leave() {
  if (!call) return;
  endCall('left');
  showMessage('You left the session', 'You can rejoin while the visit is still open.', { rejoin: true });
}

async function rejoin() {
  if (!session) return;
  el.rejoinButton.hidden = true;
  el.messageTitle.textContent = 'Rejoining…';
  el.messageText.textContent = '';
  rejoining = true;
  mediaReady = acquireMedia();
  await mediaReady;
  startCall();
}

// ---- controls ---------------------------------------------------------------------------------------------

el.muteButton.addEventListener('click', () => {
  if (!hasTrack('audio')) return;
  audioMuted = !audioMuted;
  applyLocalMediaState();
  call?.sendMediaState(audioMuted, videoMuted);
});

el.videoButton.addEventListener('click', () => {
  if (!hasTrack('video')) return;
  videoMuted = !videoMuted;
  applyLocalMediaState();
  call?.sendMediaState(audioMuted, videoMuted);
});

el.leaveButton.addEventListener('click', leave);
el.cameraSelect.addEventListener('change', switchDevices);
el.microphoneSelect.addEventListener('change', switchDevices);
el.rejoinButton.addEventListener('click', rejoin);
el.form.addEventListener('submit', join);
el.nameInput.addEventListener('input', () => {
  if (!el.joinError.hidden && validName(el.nameInput.value.trim())) notice(el.joinError, '');
});

// Leaving the page (closing the tab) is a leave too, so the others see the count drop at once.
window.addEventListener('pagehide', () => {
  if (call && !call.finished) call.leave();
});

// ---- start ------------------------------------------------------------------------------------------------

if (!isMeetingId(meetingId)) {
  setState('error');
  showMessage(
    'This link is invalid',
    'The video visit link is incomplete or damaged. Open the whole link from your invitation, or ask your clinic for a new one.',
  );
} else {
  setState('idle');
  showScreen('lobby');
  mediaReady = acquireMedia();
  if (presetName) el.nameInput.value = presetName;
  el.nameInput.focus();
}
