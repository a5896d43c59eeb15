// Camera and microphone. Asks for both; if that fails for a reason other than a refusal, tries each alone,
// so a laptop without a camera can still send audio. Never throws: returns what it got and, if something
// is missing, a message saying why and how to fix it.

const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24, max: 30 } };
const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

function explain(err) {
  switch (err?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return (
        'Camera and microphone access is blocked. To allow it, click the camera or lock icon in the ' +
        "browser's address bar, choose Allow, then reload this page. You can still join to see and hear the others."
      );
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No camera or microphone was found. Plug one in and reload, or join without one to see and hear the others.';
    case 'NotReadableError':
    case 'AbortError':
      return 'Your camera or microphone is in use by another application. Close it and reload, or join without it.';
    default:
      return 'Your camera and microphone could not be started. You can still join to see and hear the others.';
  }
}

/** Constraints for one kind, on a chosen device if there is one. */
function constraintsFor(base, deviceId) {
  return deviceId ? { ...base, deviceId: { exact: deviceId } } : base;
}

/**
 * Cameras and microphones the browser will name (labels appear once access has been granted).
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

/**
 * @param {{camera?: string, microphone?: string}} choice device ids picked by the person (default devices otherwise)
 * @returns {Promise<{stream: MediaStream|null, notice: string|null}>}
 */
export async function getLocalMedia(choice = {}) {
  const audio = constraintsFor(AUDIO, choice.microphone);
  const video = constraintsFor(VIDEO, choice.camera);
  if (!navigator.mediaDevices?.getUserMedia) {
    return {
      stream: null,
      notice:
        'This browser cannot use the camera here (a secure https connection is needed). ' +
        'You can still join to see and hear the others.',
    };
  }
  try {
    return { stream: await navigator.mediaDevices.getUserMedia({ audio, video }), notice: null };
  } catch (err) {
    if (err?.name === 'NotAllowedError' || err?.name === 'SecurityError') return { stream: null, notice: explain(err) };
    // One device may be missing or busy: try each alone.
    for (const [constraints, missing] of [
      [{ audio }, 'No camera is available, so you will join with audio only.'],
      [{ video }, 'No microphone is available, so the others will not hear you.'],
    ]) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia(constraints);
        return { stream, notice: missing };
      } catch {
        /* try the next */
      }
    }
    return { stream: null, notice: explain(err) };
  }
}

export function stopStream(stream) {
  stream?.getTracks().forEach((t) => t.stop());
}
