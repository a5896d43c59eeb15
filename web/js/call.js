// One visit: the signaling socket plus ONE RTCPeerConnection to the gateway's SFU.
//
// The client offers once (its own camera and microphone) right after `joined`; afterwards the server offers
// whenever other participants' tracks come or go, and we answer. Every SDP step runs through one promise
// chain so a server offer never interleaves with our own negotiation. Remote ICE candidates that arrive
// before the matching remote description are queued and added once it is set.
//
// Forwarded tracks carry the publisher's AttendeeId as their MediaStream id; `onRemoteStream` hands the
// page (attendeeId, stream) so it can put the stream in that attendee's tile.
//
// Reconnection: a socket that closes without the visit being over (a network blip, a network change, a proxy,
// the server restarting) is reopened with the same JoinToken, with exponential backoff and jitter. The server
// keeps our place for its resume window: `joined` then says `resumed` and a peer connection that still works is
// kept. A failed peer connection (here or after a resume) is replaced by a new one (`offer` with `restart`); a
// `joined` that is not resumed (the server restarted, or the window passed) starts media afresh.

import { SignalingSocket, ServerType, ErrorCode, msg, isFatal } from './signaling.js';

const PING_INTERVAL_MS = 5_000;
/** No pong for this long: the socket is dead even if the browser has not noticed (a silently dropped path). */
const PONG_TIMEOUT_MS = 12_000;
const RECONNECT_FIRST_MS = 250;
const RECONNECT_MAX_MS = 2_000;
/** After this long without getting back in, the page says the connection is lost and offers Rejoin. */
const RECONNECT_GIVE_UP_MS = 120_000;

export class Call {
  /**
   * @param {object} opts
   * @param {string} opts.url signaling WebSocket URL
   * @param {string} opts.token the attendee's JoinToken
   * @param {MediaStream|null} opts.localStream
   * @param {() => {audioMuted: boolean, videoMuted: boolean}} opts.mediaState
   * @param {object} opts.on event handlers (all optional): joined, count, participantJoined, participantLeft,
   *   participantReconnecting, participantResumed, mediaState, remoteStream, ended, error, left, disconnected
   *   (gave up reconnecting), reconnecting (the socket dropped; trying again), connectionState
   */
  constructor({ url, token, localStream, mediaState, on }) {
    this.url = url;
    this.token = token;
    this.localStream = localStream;
    this.mediaState = mediaState;
    this.on = on;
    this.pc = null;
    this.attendeeId = null;
    this.chain = Promise.resolve();
    this.pendingCandidates = [];
    this.pingTimer = null;
    this.finished = false;
    this.joinedOnce = false;
    this.attempt = 0; // reconnect attempts since the last `joined`
    this.awaySince = null; // when the socket was lost, while reconnecting
    this.retryAfterMs = 0; // the server's hint (serverRestarting)
    this.reconnectTimer = null;
    this.lastPong = Date.now();
    this.own = {}; // kind → our own RTCRtpTransceiver
    this.mediaOutdated = false; // the page has a kind the peer connection does not send: restart it on `joined`
  }

  start() {
    this.#connect();
    this.pingTimer = setInterval(() => this.#keepAlive(), PING_INTERVAL_MS);
    this.onOnline = () => this.#networkChanged();
    window.addEventListener('online', this.onOnline);
  }

  #connect() {
    this.lastPong = Date.now();
    this.socket = new SignalingSocket(this.url, {
      onOpen: () => {
        const { audioMuted, videoMuted } = this.mediaState();
        this.socket.send(msg.join(this.token, audioMuted, videoMuted));
      },
      onMessage: (frame) => this.#handle(frame),
      onClose: () => {
        if (this.finished) return;
        this.#reconnectLater();
      },
    });
  }

  /** The socket is gone but the visit is not over: try again, sooner at first, never in lockstep with others. */
  #reconnectLater() {
    if (this.finished || this.reconnectTimer) return;
    this.awaySince ??= Date.now();
    // Never in at all (the server cannot be reached): say so soon rather than after the whole give-up time.
    const hopeless = !this.joinedOnce && this.attempt >= 3;
    if (hopeless || Date.now() - this.awaySince > RECONNECT_GIVE_UP_MS) {
      this.#finish();
      this.on.disconnected?.();
      return;
    }
    this.on.reconnecting?.();
    const backoff = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** this.attempt);
    const delay = Math.max(this.retryAfterMs, backoff * (0.5 + Math.random()));
    this.retryAfterMs = 0;
    this.attempt += 1;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (!this.finished) this.#connect();
    }, delay);
  }

  /** Pings, and treats a socket that stopped answering as lost (a silently dropped path is not noticed otherwise). */
  #keepAlive() {
    if (!this.socket?.isOpen) return;
    if (Date.now() - this.lastPong > PONG_TIMEOUT_MS) {
      this.socket.close();
      this.#reconnectLater();
      return;
    }
    this.socket.send(msg.ping(Date.now()));
  }

  /** The browser reports a network change: reconnect now rather than at the next backoff step. */
  #networkChanged() {
    if (this.finished) return;
    if (this.reconnectTimer) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      this.attempt = 0;
      this.#connect();
    } else if (this.pc && ['failed', 'disconnected'].includes(this.pc.connectionState)) {
      this.#restartMedia();
    }
  }

  /**
   * The page switched camera or microphone, lost one (no track of that kind any more), or got one it did not have.
   * The new tracks replace the old ones without renegotiation; a kind this connection was not sending at all (the
   * page joined without it) needs a new peer connection that sends it (an `offer` with `restart`), since only the
   * server offers on a running one.
   */
  async replaceLocalStream(stream) {
    this.localStream = stream;
    if (!this.pc || this.finished) return;
    let restart = false;
    for (const kind of ['audio', 'video']) {
      const t = this.own[kind];
      const next = stream?.getTracks().find((track) => track.kind === kind && track.readyState === 'live') ?? null;
      if (!t || t.direction === 'recvonly') {
        restart ||= !!next;
        continue;
      }
      await t.sender.replaceTrack(next);
    }
    if (restart) {
      this.mediaOutdated = true; // if the socket is down now, the restart happens on `joined`
      this.#restartMedia();
    }
  }

  /** The page is visible again (or the device woke up): check the connection now rather than at the next ping. */
  wake() {
    if (this.finished) return;
    this.#networkChanged();
    this.#keepAlive();
  }

  sendMediaState(audioMuted, videoMuted) {
    this.socket?.send(msg.mediaState(audioMuted, videoMuted));
  }

  /** Leaves politely: `leave`, then close everything (the server answers `left` and closes the socket). */
  leave() {
    if (this.finished) return;
    this.socket?.send(msg.leave());
    this.#finish();
  }

  #finish() {
    this.finished = true;
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.onOnline) window.removeEventListener('online', this.onOnline);
    // Give the `leave` frame a moment to flush before the socket closes.
    const socket = this.socket;
    setTimeout(() => socket?.close(), 200);
    this.#closePeerConnection();
  }

  #closePeerConnection() {
    const pc = this.pc;
    this.pc = null;
    this.pendingCandidates = [];
    if (!pc) return;
    pc.getReceivers().forEach((r) => r.track?.stop());
    pc.close();
  }

  /** A new peer connection in place of one that failed; the server drops the old one when it sees `restart`. */
  #restartMedia() {
    if (this.finished || !this.socket?.isOpen) return; // after the reconnect, `joined` decides
    this.#closePeerConnection();
    this.#createPeerConnection();
    this.#enqueue(() => this.#sendOffer(true));
  }

  #onJoined(frame) {
    const reconnect = this.joinedOnce;
    this.joinedOnce = true;
    this.attempt = 0;
    this.awaySince = null;
    this.attendeeId = frame.attendeeId;
    // TURN servers the gateway hands out (with a fresh credential each join); used by the next peer connection.
    this.iceServers = Array.isArray(frame.iceServers) ? frame.iceServers : [];
    this.on.joined?.(frame);
    // A connection still waiting for the answer to its own offer may have lost it with the socket.
    const alive =
      this.pc && !['failed', 'closed'].includes(this.pc.connectionState) && this.pc.signalingState !== 'have-local-offer';
    // Media never stopped; the server repeats what we missed (unless the page has a device the connection lacks).
    if (reconnect && frame.resumed && alive && !this.mediaOutdated) return;
    if (reconnect && frame.resumed) {
      this.#restartMedia();
      return;
    }
    // A first join, or the server no longer knew us: everything starts afresh.
    this.#closePeerConnection();
    this.chain = Promise.resolve();
    this.#createPeerConnection();
    this.#enqueue(() => this.#sendOffer());
  }

  #enqueue(step) {
    this.chain = this.chain.then(step).catch((err) => {
      console.warn('negotiation step failed:', err?.name || err);
    });
    return this.chain;
  }

  #handle(frame) {
    if (this.finished && frame.type !== ServerType.LEFT) return;
    switch (frame.type) {
      case ServerType.JOINED:
        this.#onJoined(frame);
        break;
      case ServerType.ANSWER:
        this.#enqueue(async () => {
          await this.pc.setRemoteDescription({ type: 'answer', sdp: frame.sdp });
          await this.#flushCandidates();
        });
        break;
      case ServerType.OFFER:
        this.#enqueue(() => this.#answerOffer(frame.sdp));
        break;
      case ServerType.CANDIDATE:
        this.#addRemoteCandidate(frame.candidate);
        break;
      case ServerType.PARTICIPANT_JOINED:
        this.on.participantJoined?.(frame.participant);
        this.on.count?.(frame.count);
        break;
      case ServerType.PARTICIPANT_LEFT:
        this.on.participantLeft?.(frame.attendeeId);
        this.on.count?.(frame.count);
        break;
      case ServerType.PARTICIPANT_COUNT:
        this.on.count?.(frame.count);
        break;
      case ServerType.PARTICIPANT_RECONNECTING:
        this.on.participantReconnecting?.(frame.attendeeId);
        break;
      case ServerType.PARTICIPANT_RESUMED:
        this.on.participantResumed?.(frame.attendeeId);
        break;
      case ServerType.SERVER_RESTARTING:
        // Not the end of the visit: the socket closes next, and we come back once the server is up again.
        this.retryAfterMs = Number(frame.retryAfterMs) || 1000;
        break;
      case ServerType.MEDIA_STATE:
        this.on.mediaState?.(frame.attendeeId, !!frame.audioMuted, !!frame.videoMuted);
        break;
      case ServerType.PONG:
        this.lastPong = Date.now();
        break;
      case ServerType.LEFT:
        this.on.left?.();
        break;
      case ServerType.MEETING_ENDED:
        this.#finish();
        this.on.ended?.(frame.reason);
        break;
      case ServerType.ERROR: {
        // Busy or restarting while we reconnect: keep trying (the socket closes, and we come back later).
        if (this.joinedOnce && frame.code === ErrorCode.SERVICE_UNAVAILABLE) break;
        const fatal = isFatal(frame.code);
        if (fatal) this.#finish();
        this.on.error?.(frame.code, frame.message, fatal);
        break;
      }
      default:
        // A newer server may send frames this page does not know; ignoring them is safe.
        break;
    }
  }

  #createPeerConnection() {
    // The SFU is reachable directly (its UDP and TCP candidates); TURN servers only when the gateway names some.
    const pc = new RTCPeerConnection({ iceServers: this.iceServers ?? [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.pc = pc;
    this.mediaOutdated = false;
    const stream = this.localStream;
    const tracks = stream ? stream.getTracks().filter((t) => t.readyState === 'live') : [];
    // Our own transceivers, one per kind (the server's offers add one per track of the others).
    this.own = {};
    for (const kind of ['audio', 'video']) {
      const track = tracks.find((t) => t.kind === kind);
      if (track) {
        const sender = pc.addTrack(track, stream);
        this.own[kind] = pc.getTransceivers().find((t) => t.sender === sender);
      } else {
        // Without a microphone or camera we still want to receive the others.
        this.own[kind] = pc.addTransceiver(kind, { direction: 'recvonly' });
      }
    }

    pc.addEventListener('icecandidate', (ev) => this.pc === pc && this.socket.send(msg.candidate(ev.candidate)));
    pc.addEventListener('track', (ev) => {
      const remote = ev.streams[0];
      if (!remote) return;
      this.on.remoteStream?.(remote.id, remote, ev.track);
      if (ev.track.kind === 'video') this.#watchFirstFrame(ev.receiver);
    });
    pc.addEventListener('connectionstatechange', () => {
      if (this.pc !== pc) return;
      this.on.connectionState?.(pc.connectionState);
      if (pc.connectionState === 'failed') this.#restartMedia();
    });
  }

  /** Asks for a keyframe if a newly received video track has decoded nothing after a moment. */
  #watchFirstFrame(receiver) {
    const check = async (attempt) => {
      if (this.finished || this.pc?.connectionState === 'closed') return;
      try {
        const stats = await receiver.getStats();
        for (const s of stats.values()) {
          if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0) return;
        }
      } catch {
        return;
      }
      this.socket.send(msg.requestKeyframe());
      if (attempt < 5) setTimeout(() => check(attempt + 1), 1500);
    };
    setTimeout(() => check(0), 1500);
  }

  async #sendOffer(restart = false) {
    const pc = this.pc;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    if (this.pc === pc) this.socket.send(msg.offer(pc.localDescription.sdp, restart));
  }

  async #answerOffer(sdp) {
    await this.pc.setRemoteDescription({ type: 'offer', sdp });
    await this.#flushCandidates();
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    this.socket.send(msg.answer(this.pc.localDescription.sdp));
  }

  #addRemoteCandidate(candidate) {
    if (!candidate || !candidate.candidate) return;
    if (!this.pc || !this.pc.remoteDescription) {
      this.pendingCandidates.push(candidate);
      return;
    }
    this.pc.addIceCandidate(candidate).catch((err) => console.warn('remote candidate refused:', err?.name || err));
  }

  async #flushCandidates() {
    const queued = this.pendingCandidates.splice(0);
    for (const c of queued) {
      try {
        await this.pc.addIceCandidate(c);
      } catch (err) {
        console.warn('remote candidate refused:', err?.name || err);
      }
    }
  }
}
