// The join page: /telehealth-aws.html?meeting=<MeetingId>&invite=<invite token>[&name=<name to pre-fill>][&console=1]
// (the practitioner console's Join button adds `name`, so the practitioner only has to press Join).
//
// lobby (camera preview, devices, name, Join) → create-attendee → the call layer the meeting's provider needs
// → call (tiles, Mute, Stop video, devices, Leave, participant count) → a message screen (left, ended, invalid
// link, error). Nothing about the patient (name, tokens) is written to the console.
//
// What can go wrong with the person's own devices (blocked, missing, busy, unplugged mid-visit, plugged in later)
// is said in one sentence with one next step and at most one button (Try again, Turn on camera, …); the visit
// goes on without them, and the others see "muted" or "video off" rather than a frozen picture. A tab back from
// the background restarts any paused video.
//
// Two call layers, one page: `Call` (call.js: our signaling socket + one RTCPeerConnection to the gateway's SFU)
// for local meetings, `ChimeCall` (chime-call.js: amazon-chime-sdk-js, loaded only when needed) for meetings the
// gateway created on Amazon Chime. Both take the same stream and report the same events.
//
// For tests: window.__telehealth = { pc, state, events } (pc: the RTCPeerConnection once created;
// state: 'idle' | 'joining' | 'joined' | 'reconnecting' | 'left' | 'ended' | 'error'; events: what the page was
// told about the others, [{ type, attendeeId, at }]).

import { consoleCsrfToken, createAttendee, isMeetingId, ApiError } from './api.js';
import { Call } from './call.js';
import { describeProblem, deviceNoun, getLocalMedia, listDevices, stopStream, watchPermissions } from './media.js';
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
  deviceNotice: $('device-notice'),
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
// Opened by the practitioner console's Join: join as the console's session (a host) if this browser holds one.
// Only a hint: the server trusts the session and its CSRF token, never this parameter; a patient's page never
// asks for a session.
const fromConsole = params.get('console') === '1';

let call = null;
let localStream = null;
let mediaReady = null; // Promise of acquireMedia(), started on load and on Rejoin
let audioMuted = true;
let videoMuted = true;
let session = null; // { provider, name, res } of the current attendee (create-attendee's answer), kept for Rejoin
let deviceChoice = {}; // { camera, microphone }: device ids picked by the person
let rejoining = false;
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
//
// The camera and microphone tracks live in `localStream` (null when there are none). What is missing and why is
// `mediaProblem`; the page says so in one sentence with one next step (usually Try again) in the lobby
// (#media-notice) and in the call (#device-notice). A track that ends by itself (a device unplugged, a driver
// failing, the permission withdrawn) is replaced by another device if there is one; otherwise the others are
// told (mediaState: muted or video off) rather than left looking at a frozen picture. A device plugged in later
// is offered.

const KEY = { audio: 'microphone', video: 'camera' };
/** The device id each local track was opened on (a track that has ended may no longer say). */
const deviceOf = new WeakMap();
let mediaProblem = null; // { reason, kinds } | null: what is missing and why (media.js describes it)
let knownDevices = null; // Set of `${kind}:${deviceId}` seen at the last look, to spot a device plugged in
let boundVideoTrack = null; // the camera track the preview and self view were last given
let noticeTimer = null;
let mediaEpoch = 0; // bumped when the local media is dropped (Leave, an error): late answers are thrown away

const inCall = () => !!call && !call.finished;

function liveTrack(kind) {
  return localStream?.getTracks().find((t) => t.kind === kind && t.readyState === 'live') ?? null;
}

function hasTrack(kind) {
  return !!liveTrack(kind);
}

/** Kinds with no working device at the moment. */
function missingKinds() {
  return ['audio', 'video'].filter((k) => !hasTrack(k));
}

function setMuted(kind, muted) {
  if (kind === 'audio') audioMuted = muted;
  else videoMuted = muted;
}

/** Puts `tracks` in `localStream`, each in place of (and stopping) the one of its kind. */
function putTracks(tracks) {
  if (!tracks.length) return;
  localStream ??= new MediaStream();
  for (const track of tracks) {
    for (const old of localStream.getTracks().filter((t) => t.kind === track.kind)) {
      localStream.removeTrack(old);
      old.stop();
    }
    localStream.addTrack(track);
    deviceOf.set(track, track.getSettings?.().deviceId);
    track.addEventListener('ended', () => onTrackEnded(track));
  }
}

/** Shows the local tracks in the preview and self view, and the controls' states. */
function localChanged() {
  const video = liveTrack('video');
  if (video !== boundVideoTrack || el.previewVideo.srcObject !== localStream) {
    boundVideoTrack = video;
    for (const v of [el.previewVideo, el.selfVideo]) {
      v.srcObject = localStream;
      if (localStream) play(v);
    }
  }
  el.previewPlaceholder.hidden = !!video;
  el.previewStatus.textContent = video ? '' : 'Camera off';
  applyLocalMediaState();
}

/** Gives the call the current tracks and tells the others the mute state. */
async function updateCall() {
  if (!inCall()) return;
  await call.replaceLocalStream(localStream);
  call.sendMediaState(audioMuted, videoMuted);
}

/**
 * One notice with at most one button, in `region` (#media-notice in the lobby, #device-notice in the call):
 * `title` what happened, `text` the next step. The box and its button are kept between notices, so a focused
 * Try again keeps the focus when it fails again. `hideAfter` (ms): for news that needs no action.
 */
function showNotice(region, n, { focus = false, hideAfter = 0 } = {}) {
  if (region === el.deviceNotice) clearTimeout(noticeTimer);
  if (!n) {
    const hadFocus = region.contains(document.activeElement);
    region.replaceChildren();
    if (hadFocus) focusMain();
    return;
  }
  let box = region.firstElementChild;
  if (!box) {
    box = document.createElement('div');
    box.className = 'notice notice--warn action-notice';
    const p = document.createElement('p');
    const title = document.createElement('strong');
    const text = document.createElement('span');
    p.append(title, ' ', text);
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'btn btn--small';
    button.addEventListener('click', () => box.action?.());
    box.append(p, button);
    region.append(box);
  }
  const [title, , text] = box.firstElementChild.childNodes;
  title.textContent = n.title;
  text.textContent = n.text || '';
  const button = box.lastElementChild;
  box.action = n.action?.run ?? null;
  button.hidden = !n.action;
  button.textContent = n.action?.label ?? '';
  if (focus && n.action) button.focus({ preventScroll: true });
  if (hideAfter && region === el.deviceNotice) noticeTimer = setTimeout(() => showNotice(region, null), hideAfter);
}

/** Where the focus goes when a notice's button goes away: the screen's main control. */
function focusMain() {
  if (!el.call.hidden) el.leaveButton.focus({ preventScroll: true });
  else if (!el.lobby.hidden) el.nameInput.focus({ preventScroll: true });
}

/** Says what is missing and why, in the lobby and in the call, with Try again. */
function showProblem({ still = false, focus = false } = {}) {
  for (const [region, inCallText] of [
    [el.mediaNotice, false],
    [el.deviceNotice, true],
  ]) {
    if (!mediaProblem) {
      showNotice(region, null);
      continue;
    }
    const d = describeProblem(mediaProblem, { inCall: inCallText, still });
    const action = d.retry ? { label: 'Try again', run: retryMedia } : null;
    const visible = inCallText ? !el.call.hidden : !el.lobby.hidden;
    showNotice(region, { ...d, action }, { focus: focus && visible });
  }
}

function setProblem(problem, opts) {
  mediaProblem = problem && problem.kinds.length ? problem : null;
  showProblem(opts);
}

/** Asks for camera and microphone (on load and on Rejoin). */
async function acquireMedia() {
  el.previewStatus.textContent = 'Starting your camera…';
  stopLocal();
  const epoch = mediaEpoch;
  const { stream, problem } = await getLocalMedia(deviceChoice);
  if (epoch !== mediaEpoch) return stopStream(stream);
  putTracks(stream?.getTracks() ?? []);
  audioMuted = !hasTrack('audio');
  videoMuted = !hasTrack('video');
  localChanged();
  setProblem(problem);
  await fillDevicePicker();
  return localStream;
}

/** Try again: asks once more for what is missing; what comes is switched on, in the lobby or in the call. */
let retrying = false;
async function retryMedia() {
  await mediaReady; // the first answer (or a prompt still open) comes first
  const kinds = missingKinds();
  if (retrying || !kinds.length) {
    if (!kinds.length) setProblem(null);
    return;
  }
  retrying = true;
  const before = mediaProblem;
  const epoch = mediaEpoch;
  try {
    const { stream, problem } = await getLocalMedia(deviceChoice, kinds);
    if (epoch !== mediaEpoch) return stopStream(stream); // left meanwhile
    const got = stream?.getTracks() ?? [];
    putTracks(got);
    for (const t of got) setMuted(t.kind, false);
    localChanged();
    await updateCall();
    const still = !!problem && before?.reason === problem.reason;
    setProblem(problem, { still, focus: true });
    if (got.length && !problem) {
      // Everything works now: the focus goes to the control of what was switched on.
      if (inCall()) (hasTrack('video') && kinds.includes('video') ? el.videoButton : el.muteButton).focus();
      else el.nameInput.focus();
    }
    await fillDevicePicker();
  } finally {
    retrying = false;
  }
}

/** Resolves once the page is visible (a browser may refuse the camera to a page in the background). */
function whenVisible() {
  if (document.visibilityState !== 'hidden') return Promise.resolve();
  return new Promise((resolve) => {
    const on = () => {
      if (document.visibilityState === 'hidden') return;
      document.removeEventListener('visibilitychange', on);
      resolve();
    };
    document.addEventListener('visibilitychange', on);
  });
}

/**
 * A local track ended by itself: the device was unplugged, failed, or its permission was withdrawn. Another
 * device of that kind takes over if there is one; otherwise the others see the camera off or the microphone muted.
 */
async function onTrackEnded(track) {
  if (!localStream?.getTracks().includes(track)) return; // replaced on purpose, or the visit is over
  const kind = track.kind;
  const noun = KEY[kind];
  const lostId = deviceOf.get(track);
  const epoch = mediaEpoch;
  localStream.removeTrack(track);
  // Nothing is sent from a dead track: say so at once (not a frozen picture), then look for another device.
  const wasMuted = kind === 'audio' ? audioMuted : videoMuted;
  setMuted(kind, true);
  localChanged();
  await updateCall();
  await whenVisible();
  const { cameras, microphones } = await listDevices();
  const stillThere = (kind === 'video' ? cameras : microphones).some((d) => d.deviceId === lostId);
  if (!stillThere && deviceChoice[noun] === lostId) deviceChoice[noun] = undefined;
  const { stream: got, problem } = await getLocalMedia({ [noun]: stillThere ? lostId : deviceChoice[noun] }, [kind]);
  const next = got?.getTracks()[0];
  if (epoch !== mediaEpoch || hasTrack(kind)) {
    next?.stop(); // left, or another device was picked, meanwhile
    return;
  }
  const region = el.call.hidden ? el.mediaNotice : el.deviceNotice;
  if (next) {
    putTracks([next]);
    setMuted(kind, wasMuted);
    localChanged();
    await updateCall();
    await fillDevicePicker();
    const same = next.getSettings?.().deviceId === lostId;
    showNotice(
      region,
      same
        ? { title: `Your ${noun} stopped for a moment and is working again.` }
        : {
            title: `Your ${noun} was disconnected, so the visit now uses ${next.label || `another ${noun}`}.`,
            text: `You can pick another one under Camera and microphone.`,
          },
      { hideAfter: 15_000 },
    );
    return;
  }
  await fillDevicePicker();
  const reason = problem?.reason === 'denied' ? 'denied' : 'unplugged';
  mediaProblem = { reason, kinds: missingKinds() };
  const d = describeProblem({ reason, kinds: [kind] }, { inCall: inCall(), missing: missingKinds() });
  // The focus moves only in the call: in the lobby the person may be typing their name.
  showNotice(region, { ...d, action: { label: 'Try again', run: retryMedia } }, { focus: region === el.deviceNotice });
  if (region === el.deviceNotice) showNotice(el.mediaNotice, null);
}

/** Switches one kind to the device `deviceId` (the picker, or a device just plugged in). */
async function useDevice(kind, deviceId, { turnOn = false } = {}) {
  const noun = KEY[kind];
  deviceChoice[noun] = deviceId || undefined;
  const epoch = mediaEpoch;
  const { stream, problem } = await getLocalMedia({ [noun]: deviceId }, [kind]);
  if (epoch !== mediaEpoch) return stopStream(stream);
  const track = stream?.getTracks()[0];
  if (!track) {
    const d = describeProblem(problem, { inCall: inCall() });
    const region = el.call.hidden ? el.mediaNotice : el.deviceNotice;
    showNotice(region, { ...d, action: d.retry ? { label: 'Try again', run: () => useDevice(kind, deviceId, { turnOn }) } : null }, { focus: true });
    await fillDevicePicker();
    return;
  }
  const wasMissing = !hasTrack(kind);
  putTracks([track]);
  if (turnOn || wasMissing) setMuted(kind, false);
  localChanged();
  await updateCall();
  if (mediaProblem) setProblem(missingKinds().length ? { ...mediaProblem, kinds: missingKinds() } : null);
  await fillDevicePicker();
}

/** Devices plugged in or out: the pickers follow; a device plugged in is offered (or, in the lobby, used). */
async function onDeviceChange() {
  const list = await listDevices();
  const before = knownDevices;
  await fillDevicePicker(list);
  if (!before) return;
  const kindOf = (d) => (d.kind === 'videoinput' ? 'video' : 'audio');
  const added = [...list.cameras, ...list.microphones].filter((d) => !before.has(`${d.kind}:${d.deviceId}`));
  if (!added.length) return;
  const missing = [...new Set(added.map(kindOf))].filter((k) => !hasTrack(k)).sort();
  if (!el.lobby.hidden) {
    if (missing.length) retryMedia(); // only a preview: use it at once
    return;
  }
  if (!inCall()) return;
  if (missing.length) {
    const noun = deviceNoun(missing);
    showNotice(
      el.deviceNotice,
      {
        title: `${missing.length > 1 ? 'A camera and a microphone were' : `A ${noun} was`} connected.`,
        text: missing.includes('video') ? 'Turn it on when you are ready to be seen.' : 'Turn it on when you are ready to be heard.',
        action: { label: `Turn on ${noun}`, run: retryMedia },
      },
      { focus: true },
    );
    return;
  }
  const device = added[0];
  const kind = kindOf(device);
  showNotice(
    el.deviceNotice,
    {
      title: `A new ${KEY[kind]} was connected${device.label ? `: ${device.label}` : ''}.`,
      text: `The visit still uses your current ${KEY[kind]}.`,
      action: {
        label: `Use new ${KEY[kind]}`,
        run: () => {
          showNotice(el.deviceNotice, null);
          useDevice(kind, device.deviceId);
        },
      },
    },
    { focus: true },
  );
}

/** The camera and microphone lists, with what is in use selected. Hidden when there is nothing to choose. */
async function fillDevicePicker(list) {
  const { cameras, microphones } = list ?? (await listDevices());
  knownDevices = new Set([...cameras, ...microphones].map((d) => `${d.kind}:${d.deviceId}`));
  const inUse = (kind) => liveTrack(kind)?.getSettings().deviceId;
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
    select.closest('label').hidden = devices.length === 0; // nothing to show (none, or not allowed yet)
  };
  fill(el.cameraSelect, cameras, inUse('video'), 'Camera');
  fill(el.microphoneSelect, microphones, inUse('audio'), 'Microphone');
  el.devicePicker.hidden = cameras.length + microphones.length === 0;
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

// ---- playback ---------------------------------------------------------------------------------------------

/** Plays a video element; if the browser wants a click first, offers one. */
function play(video) {
  video.play().catch((err) => {
    if (err?.name === 'NotAllowedError' && inCall()) offerResume();
  });
}

function offerResume() {
  showNotice(
    el.deviceNotice,
    {
      title: 'The browser paused the video.',
      text: 'Press Resume to see and hear the others again.',
      action: {
        label: 'Resume video',
        run: () => {
          showNotice(el.deviceNotice, null);
          resumePlayback();
        },
      },
    },
    { focus: true },
  );
}

/** Restarts any video the browser paused (a tab back from the background, a phone unlocked). */
function resumePlayback() {
  const videos = [...[...tiles.values()].map((t) => t.video), el.selfVideo, el.previewVideo];
  for (const v of videos) if (v.srcObject && v.paused) play(v);
}

// ---- tiles ------------------------------------------------------------------------------------------------

function updateStage() {
  el.stage.dataset.remotes = String(tiles.size);
}

/**
 * The tile of a remote attendee, made on first sight. `role` comes from our own signaling (`host` or `guest`;
 * absent from Chime and from older gateways): a host's tile says "Clinician", next to the name rather than in
 * it, so the name stays exactly what was given.
 */
function ensureTile(attendeeId, name, role) {
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
    const roleEl = document.createElement('span');
    roleEl.className = 'tile-role';
    roleEl.textContent = 'Clinician';
    roleEl.hidden = true;
    const mic = document.createElement('span');
    mic.className = 'tile-flag tile-flag--mic';
    mic.title = 'Microphone off';
    mic.textContent = 'Muted';
    label.append(nameEl, roleEl, mic);
    root.append(video, placeholder, label);
    el.remoteTiles.append(root);
    tile = { root, video, nameEl, roleEl, avatar, name: '', stream: null, known: false, videoMuted: false };
    tiles.set(attendeeId, tile);
    updateStage();
  }
  if (name) {
    tile.name = name;
    tile.known = true;
  }
  if (role) tile.roleEl.hidden = role !== 'host';
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
  if (!tiles.has(attendeeId) && track.muted) {
    // A stream of nobody we know, with nothing in it yet: no tile until its media comes (or they are announced).
    // The server's answer to our receive-only lines can name tracks that never carry anything and move to someone
    // else's stream at the next offer; a tile for them would flash as "Participant".
    track.addEventListener(
      'unmute',
      () => {
        if (inCall() && stream.getTracks().includes(track)) attachRemoteStream(attendeeId, stream, track);
      },
      { once: true },
    );
    return;
  }
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
  play(tile.video);
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
    const csrf = fromConsole ? await consoleCsrfToken() : '';
    res = await createAttendee({ meetingId, attendeeName: name, invite, csrf });
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
    } else if (!el.message.hidden) {
      // Rejoining from the message screen (the lobby is not on screen): say it there, with Rejoin.
      setState('error');
      stopLocal();
      showMessage('Could not rejoin', err instanceof ApiError ? err.message : 'Something went wrong. Please try again.', {
        rejoin: true,
      });
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
  localChanged();
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
        ensureTile(p.attendeeId, p.name, p.role);
        setTileMedia(p.attendeeId, !!p.audioMuted, !!p.videoMuted);
        setTileReconnecting(p.attendeeId, !!p.reconnecting);
      }
      notice(el.callNotice, '');
      showScreen('call');
      if (mediaProblem) showProblem(); // what is missing, with Try again
      el.leaveButton.focus({ preventScroll: true });
    },
    count: setCount,
    participantJoined(p) {
      logEvent('participantJoined', p.attendeeId);
      ensureTile(p.attendeeId, p.name, p.role);
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
        notice(el.callNotice, '');
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
        mediaReady = acquireMedia(); // endCall stopped the camera
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
  mediaEpoch += 1;
  stopStream(localStream);
  localStream = null;
  boundVideoTrack = null;
  el.previewVideo.srcObject = null;
  el.selfVideo.srcObject = null;
}

/** Tears the call down (socket, peer connection, camera) and moves to `state`. */
function endCall(state) {
  if (call && !call.finished) call.leave();
  el.lobbyDevices.append(el.devicePicker);
  showNotice(el.deviceNotice, null);
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
  el.messageTitle.tabIndex = -1;
  el.messageTitle.focus(); // the focused Rejoin button is gone
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
el.cameraSelect.addEventListener('change', () => useDevice('video', el.cameraSelect.value));
el.microphoneSelect.addEventListener('change', () => useDevice('audio', el.microphoneSelect.value));
el.rejoinButton.addEventListener('click', rejoin);
el.form.addEventListener('submit', join);
el.nameInput.addEventListener('input', () => {
  if (!el.joinError.hidden && validName(el.nameInput.value.trim())) notice(el.joinError, '');
});

navigator.mediaDevices?.addEventListener?.('devicechange', () => onDeviceChange());

// The person allowed the camera or microphone in the browser's settings: in the lobby, use it at once (only a
// preview); in the call, Try again is on screen already.
watchPermissions((kind, state) => {
  if (state === 'granted' && !el.lobby.hidden && !hasTrack(kind)) retryMedia();
});

// Back from the background (another tab, a phone's home screen): the visit went on meanwhile; restart any video
// the browser paused and check the connection now rather than at the next ping.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'visible') return;
  resumePlayback();
  if (inCall()) call.wake?.();
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
