// Camera and microphone. Asks for both at once (one permission prompt); when that fails, finds out which one is
// missing and why, and still returns the other, so a laptop without a camera can still send audio and a browser
// that blocks only the camera still sends the microphone. Never throws: returns what it got and, if something is
// missing, a `problem` the page turns into a plain-language notice (`describeProblem`).

const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24, max: 30 } };
const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
const BASE = { audio: AUDIO, video: VIDEO };
const PERMISSION = { audio: 'microphone', video: 'camera' };

/**
 * Why a device could not be used:
 * 'denied' (the browser or the person blocked it), 'not-found' (none plugged in), 'busy' (another application has
 * it, or it failed to start), 'insecure' (no camera API here: the page is not on https), 'failed' (anything else).
 */
export function reasonOf(err) {
  switch (err?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'denied';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'not-found';
    case 'NotReadableError':
    case 'AbortError':
      return 'busy';
    default:
      return 'failed';
  }
}

/** 'camera', 'microphone', or 'camera and microphone' for a list of kinds. */
export function deviceNoun(kinds) {
  if (kinds.includes('audio') && kinds.includes('video')) return 'camera and microphone';
  return kinds.includes('video') ? 'camera' : 'microphone';
}

const ALLOW_STEP = 'click the lock or camera icon beside the web address at the top of this window, choose Allow, then press Try again.';

/**
 * A notice for the person: `title` says what happened in one sentence, `text` the next step; `retry` says whether
 * a Try again button makes sense. `reason` is one of `reasonOf`'s, or 'unplugged' (a device that was working went
 * away). `inCall`: the person is in the visit already (no "join now"); `still`: the same problem again after Try
 * again; `missing`: every kind missing now, when more than `kinds` (for what the others get).
 * @param {{reason: string, kinds: string[]}} problem
 * @returns {{title: string, text: string, retry: boolean}}
 */
export function describeProblem({ reason, kinds }, { inCall = false, still = false, missing = kinds } = {}) {
  const both = kinds.includes('audio') && kinds.includes('video');
  const noun = deviceNoun(kinds);
  const them = both ? 'them' : 'it';
  // What the others get without it.
  const effect =
    missing.includes('audio') && missing.includes('video')
      ? inCall
        ? 'so the others cannot see or hear you'
        : 'but you can still join to see and hear the others'
      : missing.includes('video')
        ? 'so the others will hear you but not see you'
        : 'so the others will see you but not hear you';
  const orJoin = inCall ? '' : ' You can also join now without ' + them + '.';
  switch (reason) {
    case 'denied':
      return {
        title: `Your browser is ${still ? 'still ' : ''}blocking your ${noun}, ${effect}.`,
        text: `To allow ${them}, ${ALLOW_STEP}`,
        retry: true,
      };
    case 'unplugged':
      return {
        title: `Your ${noun} ${both ? 'were' : 'was'} disconnected, ${effect}.`,
        text: `Plug ${them} back in, then press Try again.`,
        retry: true,
      };
    case 'not-found':
      return {
        title: `${still ? 'Still no' : 'No'} ${both ? 'camera or microphone' : noun} was found, ${effect}.`,
        text: `Plug one in, then press Try again.${both ? '' : orJoin}`,
        retry: true,
      };
    case 'busy':
      return {
        title: `Your ${noun} ${both ? 'are' : 'is'} in use by another application, ${effect}.`,
        text: `Close the other application (for example another video call), then press Try again.`,
        retry: true,
      };
    case 'insecure':
      return {
        title: `This browser cannot use your ${noun} on this page, ${effect}.`,
        text: 'Open the link exactly as you received it (it starts with https), or try another browser.',
        retry: false,
      };
    default:
      return {
        title: `Your ${noun} could not be started, ${effect}.`,
        text: 'Press Try again. If it keeps happening, restart your browser.',
        retry: true,
      };
  }
}

/** Constraints for one kind, on a chosen device if there is one. */
function constraintsFor(kind, deviceId) {
  return deviceId ? { ...BASE[kind], deviceId: { exact: deviceId } } : BASE[kind];
}

/**
 * Cameras and microphones the browser will name (labels and ids appear once access has been granted).
 * @returns {Promise<{cameras: MediaDeviceInfo[], microphones: MediaDeviceInfo[]}>}
 */
export async function listDevices() {
  try {
    const all = await navigator.mediaDevices.enumerateDevices();
    return {
      cameras: all.filter((d) => d.kind === 'videoinput' && d.deviceId),
      microphones: all.filter((d) => d.kind === 'audioinput' && d.deviceId),
    };
  } catch {
    return { cameras: [], microphones: [] };
  }
}

/** The permission state ('granted' | 'denied' | 'prompt') of `kind`, or null where the browser cannot say. */
async function permissionState(kind) {
  try {
    return (await navigator.permissions.query({ name: PERMISSION[kind] })).state;
  } catch {
    return null;
  }
}

/**
 * Calls `onChange(kind, state)` when the person changes the camera or microphone permission in the browser (so
 * the page can try again by itself). Does nothing where the browser cannot tell.
 */
export async function watchPermissions(onChange) {
  for (const kind of ['audio', 'video']) {
    try {
      const status = await navigator.permissions.query({ name: PERMISSION[kind] });
      status.addEventListener('change', () => onChange(kind, status.state));
    } catch {
      /* not supported here */
    }
  }
}

/**
 * Asks for `kinds` ('audio', 'video'), each on the chosen device if there is one.
 * @param {{camera?: string, microphone?: string}} choice device ids picked by the person (default devices otherwise)
 * @param {string[]} kinds
 * @returns {Promise<{stream: MediaStream|null, problem: {reason: string, kinds: string[]}|null}>}
 */
export async function getLocalMedia(choice = {}, kinds = ['audio', 'video']) {
  const constraints = {
    audio: kinds.includes('audio') && constraintsFor('audio', choice.microphone),
    video: kinds.includes('video') && constraintsFor('video', choice.camera),
  };
  if (!navigator.mediaDevices?.getUserMedia) return { stream: null, problem: { reason: 'insecure', kinds } };
  let err;
  try {
    return { stream: await navigator.mediaDevices.getUserMedia(constraints), problem: null };
  } catch (e) {
    err = e;
  }
  if (kinds.length < 2) return { stream: null, problem: { reason: reasonOf(err), kinds } };
  // Both at once failed: find out which one is missing, and keep the other.
  const denied = reasonOf(err) === 'denied';
  const got = [];
  const missing = [];
  let reason = reasonOf(err);
  for (const kind of kinds) {
    // After a refusal, ask again only for what the browser already allows (never a second prompt).
    if (denied && (await permissionState(kind)) !== 'granted') {
      missing.push(kind);
      continue;
    }
    try {
      got.push(...(await navigator.mediaDevices.getUserMedia({ [kind]: constraints[kind] })).getTracks());
    } catch (e) {
      missing.push(kind);
      if (!denied) reason = reasonOf(e);
    }
  }
  if (!missing.length) {
    // Each alone worked although both together did not (a race with a device coming back): keep both.
    return { stream: new MediaStream(got), problem: null };
  }
  return { stream: got.length ? new MediaStream(got) : null, problem: { reason, kinds: missing } };
}

export function stopStream(stream) {
  stream?.getTracks().forEach((t) => t.stop());
}
