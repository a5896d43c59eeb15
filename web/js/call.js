// One visit: the signaling socket plus ONE RTCPeerConnection to the gateway's SFU.
//
// The client offers once (its own camera and microphone) right after `joined`; afterwards the server offers
// whenever other participants' tracks come or go, and we answer. Every SDP step runs through one promise
// chain so a server offer never interleaves with our own negotiation. Remote ICE candidates that arrive
// before the matching remote description are queued and added once it is set.
//
// Forwarded tracks carry the publisher's AttendeeId as their MediaStream id; `onRemoteStream` hands the
// page (attendeeId, stream) so it can put the stream in that attendee's tile.

import { SignalingSocket, ServerType, msg, isFatal } from './signaling.js';

const PING_INTERVAL_MS = 15_000;

export class Call {
  /**
   * @param {object} opts
   * @param {string} opts.url signaling WebSocket URL
   * @param {string} opts.token the attendee's JoinToken
   * @param {MediaStream|null} opts.localStream
   * @param {() => {audioMuted: boolean, videoMuted: boolean}} opts.mediaState
   * @param {object} opts.on event handlers (all optional): joined, count, participantJoined, participantLeft,
   *   mediaState, remoteStream, ended, error, left, disconnected, connectionState
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
  }

  start() {
    this.socket = new SignalingSocket(this.url, {
      onOpen: () => {
        const { audioMuted, videoMuted } = this.mediaState();
        this.socket.send(msg.join(this.token, audioMuted, videoMuted));
      },
      onMessage: (frame) => this.#handle(frame),
      onClose: () => {
        if (this.finished) return;
        this.#finish();
        this.on.disconnected?.();
      },
    });
    this.pingTimer = setInterval(() => this.socket.send(msg.ping(Date.now())), PING_INTERVAL_MS);
  }

  /** The page switched camera or microphone: the new tracks replace the old ones, without renegotiation. */
  async replaceLocalStream(stream) {
    this.localStream = stream;
    if (!this.pc || this.finished) return;
    for (const t of this.pc.getTransceivers()) {
      const kind = t.receiver.track?.kind;
      if (!kind || t.direction === 'recvonly' || !t.sender) continue;
      const next = stream?.getTracks().find((track) => track.kind === kind) ?? null;
      await t.sender.replaceTrack(next);
    }
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
    // Give the `leave` frame a moment to flush before the socket closes.
    const socket = this.socket;
    setTimeout(() => socket?.close(), 200);
    if (this.pc) {
      this.pc.getReceivers().forEach((r) => r.track?.stop());
      this.pc.close();
    }
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
        this.attendeeId = frame.attendeeId;
        this.on.joined?.(frame);
        this.#createPeerConnection();
        this.#enqueue(() => this.#sendOffer());
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
      case ServerType.MEDIA_STATE:
        this.on.mediaState?.(frame.attendeeId, !!frame.audioMuted, !!frame.videoMuted);
        break;
      case ServerType.PONG:
        break;
      case ServerType.LEFT:
        this.on.left?.();
        break;
      case ServerType.MEETING_ENDED:
        this.#finish();
        this.on.ended?.(frame.reason);
        break;
      case ServerType.ERROR: {
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
    // No iceServers: the SFU is reachable directly (offline clinic, LAN or loopback).
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.pc = pc;
    const stream = this.localStream;
    const tracks = stream ? stream.getTracks() : [];
    for (const track of tracks) pc.addTrack(track, stream);
    // Without a microphone or camera we still want to receive the others.
    if (!tracks.some((t) => t.kind === 'audio')) pc.addTransceiver('audio', { direction: 'recvonly' });
    if (!tracks.some((t) => t.kind === 'video')) pc.addTransceiver('video', { direction: 'recvonly' });

    pc.addEventListener('icecandidate', (ev) => this.socket.send(msg.candidate(ev.candidate)));
    pc.addEventListener('track', (ev) => {
      const remote = ev.streams[0];
      if (!remote) return;
      this.on.remoteStream?.(remote.id, remote, ev.track);
      if (ev.track.kind === 'video') this.#watchFirstFrame(ev.receiver);
    });
    pc.addEventListener('connectionstatechange', () => this.on.connectionState?.(pc.connectionState));
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

  async #sendOffer() {
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    this.socket.send(msg.offer(this.pc.localDescription.sdp));
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
