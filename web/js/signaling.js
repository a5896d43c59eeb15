// The signaling socket, mirrored from the Rust crate `signaling/src/messages.rs` (the single definition of
// the protocol). Every frame is one JSON object with a `type` tag; names here must match that file.
//
// Negotiation (see the crate's docs): the client sends the first `offer`; the server answers. From then on
// only the server offers (renegotiation when other participants' tracks come or go) and the client answers.

/** Frames the client sends (`ClientMessage`). */
export const ClientType = Object.freeze({
  JOIN: 'join',
  OFFER: 'offer',
  ANSWER: 'answer',
  CANDIDATE: 'candidate',
  MEDIA_STATE: 'mediaState',
  REQUEST_KEYFRAME: 'requestKeyframe',
  LEAVE: 'leave',
  PING: 'ping',
});

/** Frames the server sends (`ServerMessage`). */
export const ServerType = Object.freeze({
  JOINED: 'joined',
  OFFER: 'offer',
  ANSWER: 'answer',
  CANDIDATE: 'candidate',
  PARTICIPANT_JOINED: 'participantJoined',
  PARTICIPANT_LEFT: 'participantLeft',
  PARTICIPANT_COUNT: 'participantCount',
  PARTICIPANT_RECONNECTING: 'participantReconnecting',
  PARTICIPANT_RESUMED: 'participantResumed',
  MEDIA_STATE: 'mediaState',
  PONG: 'pong',
  LEFT: 'left',
  SERVER_RESTARTING: 'serverRestarting',
  MEETING_ENDED: 'meetingEnded',
  ERROR: 'error',
});

/** `EndReason` of `meetingEnded`. */
export const EndReason = Object.freeze({
  DELETED: 'deleted',
  SERVER_SHUTDOWN: 'serverShutdown',
  REPLACED: 'replaced',
});

/** `ErrorCode` of `error` (PascalCase on the wire, like the HTTP API's codes). */
export const ErrorCode = Object.freeze({
  BAD_REQUEST: 'BadRequest',
  UNAUTHORIZED: 'Unauthorized',
  NOT_FOUND: 'NotFound',
  CONFLICT: 'Conflict',
  UNPROCESSABLE_ENTITY: 'UnprocessableEntity',
  SERVICE_UNAVAILABLE: 'ServiceUnavailable',
  SERVICE_FAILURE: 'ServiceFailure',
});

/** Errors after which the server closes the socket (`ErrorCode::is_fatal`). */
export function isFatal(code) {
  return code === ErrorCode.UNAUTHORIZED || code === ErrorCode.NOT_FOUND || code === ErrorCode.SERVICE_UNAVAILABLE;
}

// Constructors for client frames, so field names live in one place.
export const msg = Object.freeze({
  join: (token, audioMuted, videoMuted) => ({ type: ClientType.JOIN, token, audioMuted, videoMuted }),
  /** `restart`: the offer is for a new peer connection replacing the current one. */
  offer: (sdp, restart = false) => (restart ? { type: ClientType.OFFER, sdp, restart } : { type: ClientType.OFFER, sdp }),
  answer: (sdp) => ({ type: ClientType.ANSWER, sdp }),
  /** `c` is an RTCIceCandidate, or null at the end of gathering. */
  candidate: (c) => ({
    type: ClientType.CANDIDATE,
    candidate: c
      ? {
          candidate: c.candidate,
          sdpMid: c.sdpMid ?? undefined,
          sdpMLineIndex: c.sdpMLineIndex ?? undefined,
          usernameFragment: c.usernameFragment ?? undefined,
        }
      : null,
  }),
  mediaState: (audioMuted, videoMuted) => ({ type: ClientType.MEDIA_STATE, audioMuted, videoMuted }),
  requestKeyframe: () => ({ type: ClientType.REQUEST_KEYFRAME }),
  leave: () => ({ type: ClientType.LEAVE }),
  ping: (ts) => ({ type: ClientType.PING, ts }),
});

/** The server's signaling URL: the meeting's `MediaPlacement.SignalingUrl` if it is a ws(s) URL, else this origin's `/ws`. */
export function signalingUrl(meeting, loc = window.location) {
  const fromMeeting = meeting?.MediaPlacement?.SignalingUrl;
  if (typeof fromMeeting === 'string' && /^wss?:\/\//i.test(fromMeeting)) return fromMeeting;
  return (loc.protocol === 'https:' ? 'wss' : 'ws') + '://' + loc.host + '/ws';
}

/**
 * One WebSocket carrying typed JSON frames.
 * `onMessage(frame)` gets every server frame; `onClose({ code, reason, wasClean })` fires once.
 */
export class SignalingSocket {
  constructor(url, { onOpen, onMessage, onClose }) {
    this.closed = false;
    this.ws = new WebSocket(url);
    this.ws.addEventListener('open', () => onOpen?.());
    this.ws.addEventListener('message', (ev) => {
      if (this.closed) return; // a socket we gave up on (a newer one replaces it)
      if (typeof ev.data !== 'string') return; // the protocol is text frames only
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        console.warn('signaling: undecodable frame ignored');
        return;
      }
      if (frame && typeof frame.type === 'string') onMessage?.(frame);
    });
    this.ws.addEventListener('close', (ev) => {
      if (this.closed) return;
      this.closed = true;
      onClose?.({ code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
    });
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Closes without reporting through `onClose` (the caller already knows). */
  close() {
    this.closed = true;
    try {
      this.ws.close(1000);
    } catch {
      /* already closing */
    }
  }
}
