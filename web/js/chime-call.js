// One visit on Amazon Chime: the same interface as `Call` (call.js), built on amazon-chime-sdk-js v3, bundled into
// ../vendor/amazon-chime-sdk.js (no CDN). The page loads this module only for a meeting the gateway says is Chime's,
// so local visits never download the SDK.
//
// Chime's media and signaling go to the meeting's MediaPlacement URLs, not through the gateway; the gateway only
// hears from this page through presence reports (joined, a heartbeat, left), which is how attendee-minutes (and
// their cost) are counted for Chime meetings.
//
// Events (`on`): joined, count, participantJoined, participantLeft, mediaState, remoteTile, ended, left,
// unreachable, connectionState. Nothing about the patient (name, tokens) is logged: the SDK's logger is off.

import {
  ConsoleLogger,
  DefaultDeviceController,
  DefaultMeetingSession,
  LogLevel,
  MeetingSessionConfiguration,
  MeetingSessionStatusCode,
} from '../vendor/amazon-chime-sdk.js';
import { reportPresence } from './api.js';

/** How long to wait for Chime to accept the session before telling the person it cannot be reached. */
const START_TIMEOUT_MS = 15_000;

/** The display name in a Chime ExternalUserId (`<prefix>#<name>`, as the gateway makes them). */
export function displayName(externalUserId) {
  const s = String(externalUserId || '');
  const hash = s.indexOf('#');
  return (hash >= 0 ? s.slice(hash + 1) : s) || 'Participant';
}

/** Content-share attendees (`<attendeeId>#content`) are not people: they count for nothing and get no tile. */
function isContent(attendeeId) {
  return String(attendeeId).endsWith('#content');
}

export class ChimeCall {
  /**
   * @param {object} opts
   * @param {object} opts.meeting Chime's Meeting object (from create-attendee)
   * @param {object} opts.attendee Chime's Attendee object
   * @param {{token: string, heartbeatSecs: number}|undefined} opts.presence the gateway's presence token
   * @param {MediaStream|null} opts.localStream
   * @param {() => {audioMuted: boolean, videoMuted: boolean}} opts.mediaState
   * @param {object} opts.on event handlers
   */
  constructor({ meeting, attendee, presence, localStream, mediaState, on }) {
    this.meeting = meeting;
    this.attendee = attendee;
    this.presence = presence;
    this.localStream = localStream;
    this.mediaState = mediaState;
    this.on = on;
    this.pc = null; // the local path's RTCPeerConnection; Chime keeps its own
    this.finished = false;
    this.present = new Map(); // attendeeId → display name (everyone in the meeting, this page included)
    this.sessionId = null;
    this.heartbeat = null;
    this.startTimer = null;
  }

  async start() {
    const logger = new ConsoleLogger('chime', LogLevel.OFF);
    const devices = new DefaultDeviceController(logger, { enableWebAudio: false });
    const configuration = new MeetingSessionConfiguration({ Meeting: this.meeting }, { Attendee: this.attendee });
    this.session = new DefaultMeetingSession(configuration, logger, devices);
    const av = this.session.audioVideo;
    this.av = av;

    av.addObserver({
      audioVideoDidStart: () => this.#started(),
      audioVideoDidStop: (status) => this.#stopped(status),
      videoTileDidUpdate: (tile) => this.#tile(tile),
      videoTileWasRemoved: () => {},
      connectionDidBecomePoor: () => this.on.connectionState?.('disconnected'),
      connectionDidBecomeGood: () => this.on.connectionState?.('connected'),
    });
    av.realtimeSubscribeToAttendeeIdPresence((attendeeId, present, externalUserId) => {
      if (isContent(attendeeId)) return;
      this.#presence(attendeeId, present, externalUserId);
    });

    this.audioElement = document.createElement('audio');
    this.audioElement.autoplay = true;
    this.audioElement.hidden = true;
    document.body.append(this.audioElement);
    await av.bindAudioElement(this.audioElement);

    await this.#useLocalMedia(this.localStream);
    this.startTimer = setTimeout(() => {
      if (this.finished || this.started) return;
      this.#finish();
      this.on.unreachable?.();
    }, START_TIMEOUT_MS);
    av.start();
  }

  /** Feeds this page's camera and microphone (the stream the page already shows) to Chime. */
  async #useLocalMedia(stream) {
    const av = this.av;
    const audio = stream?.getAudioTracks().filter((t) => t.readyState === 'live') ?? [];
    const video = stream?.getVideoTracks().filter((t) => t.readyState === 'live') ?? [];
    if (audio.length) await av.startAudioInput(new MediaStream(audio));
    else await av.stopAudioInput();
    if (video.length) await av.startVideoInput(new MediaStream(video));
    else await av.stopVideoInput();
  }

  /** The page switched camera or microphone (it then sends its mute state, as for `Call`). */
  async replaceLocalStream(stream) {
    this.localStream = stream;
    if (!this.av || this.finished) return;
    await this.#useLocalMedia(stream);
  }

  sendMediaState(audioMuted, videoMuted) {
    const av = this.av;
    if (!av || this.finished) return;
    if (audioMuted) av.realtimeMuteLocalAudio();
    else av.realtimeUnmuteLocalAudio();
    const hasVideo = !!this.localStream?.getVideoTracks().some((t) => t.readyState === 'live');
    if (videoMuted || !hasVideo) av.stopLocalVideoTile();
    else av.startLocalVideoTile();
  }

  leave() {
    if (this.finished) return;
    this.#finish();
  }

  #finish() {
    this.finished = true;
    clearTimeout(this.startTimer);
    clearInterval(this.heartbeat);
    this.heartbeat = null;
    if (this.sessionId) this.#report('left');
    try {
      this.av?.stop();
    } catch {
      /* already stopped */
    }
    this.audioElement?.remove();
  }

  #started() {
    if (this.finished) return;
    this.started = true;
    clearTimeout(this.startTimer);
    const { audioMuted, videoMuted } = this.mediaState();
    this.sendMediaState(audioMuted, videoMuted);
    this.on.joined?.({ count: Math.max(1, this.present.size), participants: [] });
    this.#report('joined');
    const every = Math.max(5, Number(this.presence?.heartbeatSecs) || 30) * 1000;
    this.heartbeat = setInterval(() => this.#report('heartbeat'), every);
  }

  #stopped(status) {
    if (this.finished) return;
    const code = status?.statusCode?.();
    this.#finish();
    if (code === MeetingSessionStatusCode.Left) {
      this.on.left?.();
    } else if (code === MeetingSessionStatusCode.MeetingEnded || code === MeetingSessionStatusCode.AudioCallEnded) {
      this.on.ended?.('deleted');
    } else if (
      code === MeetingSessionStatusCode.AudioJoinedFromAnotherDevice ||
      code === MeetingSessionStatusCode.AudioAuthenticationRejected
    ) {
      this.on.ended?.(code === MeetingSessionStatusCode.AudioJoinedFromAnotherDevice ? 'replaced' : 'deleted');
    } else {
      this.on.unreachable?.();
    }
  }

  #presence(attendeeId, present, externalUserId) {
    const self = attendeeId === this.attendee.AttendeeId;
    const known = this.present.has(attendeeId);
    if (present && !known) {
      this.present.set(attendeeId, displayName(externalUserId));
      if (!self) {
        this.on.participantJoined?.({ attendeeId, name: displayName(externalUserId), audioMuted: false, videoMuted: true });
        this.av.realtimeSubscribeToVolumeIndicator(attendeeId, (id, _volume, muted) => {
          if (muted !== null && muted !== undefined) this.on.mediaState?.(id, !!muted, null);
        });
      }
    } else if (!present && known) {
      this.present.delete(attendeeId);
      if (!self) {
        this.av.realtimeUnsubscribeFromVolumeIndicator(attendeeId);
        this.on.participantLeft?.(attendeeId);
      }
    } else {
      return;
    }
    this.on.count?.(this.present.size);
  }

  #tile(tile) {
    if (!tile?.boundAttendeeId || tile.localTile || tile.isContent || isContent(tile.boundAttendeeId)) return;
    const attendeeId = tile.boundAttendeeId;
    this.on.remoteTile?.(attendeeId, {
      active: !!tile.active && !tile.paused,
      bind: (videoElement) => this.av.bindVideoElement(tile.tileId, videoElement),
    });
  }

  #report(event) {
    if (!this.presence?.token) return;
    reportPresence({ token: this.presence.token, event, sessionId: this.sessionId })
      .then((res) => {
        if (res?.sessionId) this.sessionId = res.sessionId;
      })
      .catch(() => {
        /* usage reporting must never disturb the visit */
      });
  }
}
