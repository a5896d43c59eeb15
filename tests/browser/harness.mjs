// What the browser tests share: starting the real gateway binary (and the fake Chime), polling with a deadline,
// the JSON API, and headless Debian Chromium with fake camera and microphone.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const gatewayBin = path.resolve(repoRoot, process.env.GATEWAY_BIN || 'target/debug/telehealth-gateway');
export const fakeChimeBin = path.resolve(repoRoot, process.env.FAKE_CHIME_BIN || 'target/debug/fake-chime');
export const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const artifacts = path.join(repoRoot, 'target', 'browser-artifacts');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value, or fails with `what` after `timeout` ms. */
export async function eventually(fn, { timeout = 20_000, interval = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await sleep(interval);
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Runs `bin` with `env`, collecting stdout and stderr. */
function run(bin, args, env, cwd) {
  const proc = spawn(bin, args, { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
  const chunks = [];
  proc.stdout.on('data', (c) => chunks.push(c));
  proc.stderr.on('data', (c) => chunks.push(c));
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  return { proc, exited, output: () => Buffer.concat(chunks).toString('utf8') };
}

/**
 * Starts the gateway on a free loopback port with its data in `dir`, and waits for /healthz.
 * `env` adds to (or overrides) the defaults. With `netns`, it runs inside that network namespace and listens on
 * `host` there; `port` restarts a gateway where it was. Resolves to `{ proc, exited, output(), baseUrl, port }`.
 */
export async function startGateway(dir, env = {}, { netns = null, host = '127.0.0.1', https = false, port = null } = {}) {
  port ??= await freePort();
  const baseUrl = `http://${host}:${port}`;
  // Pages on an address other than loopback need a secure context for the camera: HTTPS, with the certificate
  // the gateway generates at first start.
  const httpsPort = https ? await freePort() : null;
  fs.mkdirSync(path.join(dir, 'certs'), { recursive: true });
  const [bin, args] = netns ? ['ip', ['netns', 'exec', netns, gatewayBin]] : [gatewayBin, []];
  const server = run(
    bin,
    args,
    {
      PATH: process.env.PATH,
      HOME: process.env.HOME || dir,
      HTTP_ADDR: `${host}:${port}`,
      HTTPS_ADDR: https ? `${host}:${httpsPort}` : 'off',
      DATA_DIR: dir,
      CERTS_DIR: path.join(dir, 'certs'),
      WEB_DIR: path.join(repoRoot, 'web'),
      RTC_BIND_IPS: '127.0.0.1',
      // No RUST_LOG: the log must be clean at the gateway's default level.
      ...env,
    },
    dir,
  );
  let exitedEarly = null;
  server.exited.then((e) => (exitedEarly = e));
  await eventually(
    async () => {
      if (exitedEarly) throw new Error(`gateway exited (${JSON.stringify(exitedEarly)}):\n${server.output()}`);
      const res = await fetch(`${baseUrl}/healthz`).catch(() => null);
      return res?.status === 200;
    },
    { timeout: 30_000, interval: 200, what: 'GET /healthz to answer 200' },
  ).catch((err) => {
    throw exitedEarly ? new Error(`gateway exited early (${JSON.stringify(exitedEarly)}):\n${server.output()}`) : err;
  });
  return { ...server, baseUrl, port, httpsUrl: https ? `https://${host}:${httpsPort}` : null };
}

/**
 * Starts a real SMTP server (aiosmtpd, tests/support/smtp_sink.py, from the venv scripts/smtp-sink-setup makes)
 * on a free loopback port, writing each message it accepts to `dir` as n.eml. Resolves to
 * `{ url, proc, messages() }`; `messages()` gives the raw texts received so far, in order.
 */
export async function startSmtpSink(dir) {
  execFileSync('bash', [path.join(repoRoot, 'scripts', 'smtp-sink-setup')], { stdio: 'inherit' });
  const port = await freePort();
  fs.mkdirSync(dir, { recursive: true });
  const python = path.join(repoRoot, 'target', 'smtp-venv', 'bin', 'python');
  const sink = run(python, [path.join(repoRoot, 'tests', 'support', 'smtp_sink.py'), '--port', String(port), '--dir', dir], { PATH: process.env.PATH }, dir);
  await eventually(
    () =>
      new Promise((resolve) => {
        const socket = net.connect(port, '127.0.0.1', () => {
          socket.end();
          resolve(true);
        });
        socket.on('error', () => resolve(false));
      }),
    { timeout: 15_000, what: 'the SMTP sink to listen' },
  );
  const messages = () =>
    fs
      .readdirSync(dir)
      .filter((f) => /^\d+\.eml$/.test(f))
      .sort((a, b) => parseInt(a, 10) - parseInt(b, 10))
      .map((f) => fs.readFileSync(path.join(dir, f), 'utf8'));
  return { ...sink, url: `smtp://127.0.0.1:${port}`, messages };
}

/** A received message's headers and its text body, quoted-printable or base64 undone (what a mail reader shows). */
export function readMail(raw) {
  const split = raw.indexOf('\r\n\r\n');
  const headers = raw.slice(0, split);
  let body = raw.slice(split + 4);
  const encoding = headers.match(/^Content-Transfer-Encoding:\s*(\S+)/im)?.[1]?.toLowerCase();
  if (encoding === 'quoted-printable') {
    const bytes = Buffer.from(
      body.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/gi, (_, hex) => String.fromCharCode(parseInt(hex, 16))),
      'latin1',
    );
    body = bytes.toString('utf8');
  } else if (encoding === 'base64') {
    body = Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
  }
  return { headers, body: body.replace(/\r\n/g, '\n') };
}

/** Starts the fake Chime SDK Meetings service (tests/fake-chime) on a free loopback port. */
export async function startFakeChime(env = {}) {
  const fake = run(fakeChimeBin, [], { PATH: process.env.PATH, ...env }, repoRoot);
  const url = await eventually(() => fake.output().match(/listening on (http:\/\/127\.0\.0\.1:\d+)/)?.[1], {
    timeout: 10_000,
    what: 'the fake Chime to listen',
  });
  const control = async (p, body) => {
    const res = await fetch(url + p, body ? { method: 'POST', body: JSON.stringify(body) } : {});
    return res.status === 200 ? res.json() : res.status;
  };
  return { ...fake, url, state: () => control('/_fake/state'), fail: (rule) => control('/_fake/fail', rule) };
}

/** POST /api/aws-chime-video. */
export async function api(baseUrl, body, key) {
  const res = await fetch(`${baseUrl}/api/aws-chime-video`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
  });
  const json = await res.json().catch(() => null);
  return { status: res.status, json };
}

/**
 * A page in its own browser context (its own camera permission, cookies and storage), with its console and
 * errors collected into `log` as `[name] ...` lines.
 */
export async function openPage(browser, baseUrl, name, log = []) {
  // A self-signed certificate (the gateway's own, generated at first start) is accepted, as a clinic would.
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ignoreHTTPSErrors: true });
  await context.grantPermissions(['camera', 'microphone'], { origin: baseUrl });
  const page = await context.newPage();
  page.on('console', (m) => log.push(`[${name}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[${name}] pageerror: ${e.message}`));
  return page;
}

/**
 * One page per name (`openPage`), each on the join `link` with its name filled in and its camera preview up
 * (`prepareJoin`), in order; nobody has clicked Join yet.
 */
export async function preparePages(browser, baseUrl, link, names, log = []) {
  const pages = [];
  for (const name of names) {
    const page = await openPage(browser, baseUrl, name, log);
    await prepareJoin(page, link, name);
    pages.push(page);
  }
  return pages;
}

/** Clicks Join on every page at once. */
export const joinAll = (pages) => Promise.all(pages.map((p) => p.getByRole('button', { name: 'Join' }).click()));

/**
 * Inbound media of the join page's peer connection: totals, and each remote stream's own counters
 * (`streams`: kind, framesDecoded, framesPerSecond, bytesReceived, packetsReceived, packetsLost).
 */
export function inboundStats(page) {
  return page.evaluate(async () => {
    const pc = window.__telehealth?.pc;
    if (!pc) return null;
    const out = { framesDecoded: 0, videoStreams: 0, audioPackets: 0, audioStreams: 0, streams: [] };
    (await pc.getStats()).forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      out.streams.push({
        id: s.id,
        kind: s.kind,
        framesDecoded: s.framesDecoded || 0,
        framesPerSecond: s.framesPerSecond || 0,
        bytesReceived: s.bytesReceived || 0,
        packetsReceived: s.packetsReceived || 0,
        packetsLost: s.packetsLost || 0,
        freezeCount: s.freezeCount || 0,
      });
      if (s.kind === 'video') {
        out.videoStreams++;
        out.framesDecoded += s.framesDecoded || 0;
      } else if (s.kind === 'audio') {
        out.audioStreams++;
        out.audioPackets += s.packetsReceived || 0;
      }
    });
    return out;
  });
}

/**
 * Waits until `page` decodes `video` remote videos (each growing) and receives `audio` audio streams: at least
 * that many, or with `exact` that many and no more. `what` names the wait in the failure message.
 */
export function receivesMedia(page, what, { video = 1, audio = video, exact = false, timeout = 30_000, interval = 200 } = {}) {
  const enough = (n, want) => (exact ? n === want : n >= want);
  return eventually(
    async () => {
      const live = await liveStreams(page, 1000);
      return enough(live.video.length, video) && enough(live.audio, audio);
    },
    { timeout, interval, what },
  );
}

/** The selected candidate pair of the page's peer connection: each side's protocol, address, port and type. */
export function selectedPair(page) {
  return page.evaluate(async () => {
    const stats = await window.__telehealth.pc.getStats();
    let selected = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) selected = stats.get(s.selectedCandidatePairId);
    });
    const side = (c) => ({
      protocol: c?.protocol,
      address: c?.address ?? c?.ip,
      port: c?.port,
      type: c?.candidateType,
      relayProtocol: c?.relayProtocol,
    });
    return { local: side(selected && stats.get(selected.localCandidateId)), remote: side(selected && stats.get(selected.remoteCandidateId)) };
  });
}

/**
 * A visit over HTTPS between a practitioner's page in `browsers[0]` and a patient's in `browsers[1]`: creates the
 * meeting, joins both and waits until each decodes the other's video and hears audio. Returns the two pages and
 * how long that took from the Join clicks (`mediaMs`).
 */
export async function twoPageVisit({ server, apiKey, browsers, pageConsole, label }) {
  const { status, json } = await api(server.baseUrl, { action: 'create-meeting' }, apiKey);
  if (status !== 200) throw new Error(`create-meeting: ${status} ${JSON.stringify(json)}`);
  const link = server.httpsUrl + json.link;
  const names = ['Dr. Adeyemi', 'Kim Patient'];
  const pages = [];
  for (const [i, browser] of browsers.entries()) {
    const page = await openPage(browser, server.httpsUrl, names[i], pageConsole);
    await prepareJoin(page, link, names[i]);
    pages.push(page);
  }
  const clicked = Date.now();
  await joinAll(pages);
  for (const [i, page] of pages.entries()) {
    await receivesMedia(page, `${label}: ${names[i]} decodes the other's video and hears audio`, { exact: true });
  }
  return { pages, mediaMs: Date.now() - clicked };
}

/**
 * `page.goto`, again when Chromium cancels the load with ERR_NETWORK_CHANGED: another test file running beside
 * this one adds or removes its namespace's veth pair, and Chromium cancels whatever is loading when the
 * machine's addresses change. A real network change, not our failure; any other error stands.
 */
export async function gotoSteadily(page, url, attempts = 3) {
  for (let i = 1; ; i++) {
    try {
      return await page.goto(url);
    } catch (err) {
      if (i >= attempts || !String(err?.message).includes('ERR_NETWORK_CHANGED')) throw err;
      await sleep(500);
    }
  }
}

/** Opens the join link, fills the name and waits for the camera preview (so timings measure joining only). */
export async function prepareJoin(page, url, name) {
  await gotoSteadily(page, url);
  await page.getByLabel('Your name').fill(name);
  await eventually(() => page.evaluate(() => document.getElementById('preview-video').readyState >= 2), {
    what: `${name}: local camera preview`,
  });
}

/**
 * The remote streams that are live over the next `ms`: video whose framesDecoded grows (with its frames per
 * second and kbit/s in that window) and the number of audio streams whose packetsReceived grows. Streams of
 * someone who left stop growing and are not counted.
 */
export async function liveStreams(page, ms = 2000) {
  const first = await inboundStats(page);
  await sleep(ms);
  const then = await inboundStats(page);
  const before = new Map((first?.streams ?? []).map((s) => [s.id, s]));
  const grew = (s, field) => before.has(s.id) && s[field] > before.get(s.id)[field];
  const streams = then?.streams ?? [];
  return {
    video: streams
      .filter((s) => s.kind === 'video' && grew(s, 'framesDecoded'))
      .map((s) => ({
        fps: ((s.framesDecoded - before.get(s.id).framesDecoded) * 1000) / ms,
        kbps: ((s.bytesReceived - before.get(s.id).bytesReceived) * 8) / ms,
      })),
    audio: streams.filter((s) => s.kind === 'audio' && grew(s, 'packetsReceived')).length,
  };
}

/**
 * Chromium. `netns`: run it inside that network namespace (through `ip netns exec`, by a wrapper script, since
 * Playwright starts the executable itself); `loopback`: whether it may pair with loopback candidates (a real
 * browser does not); `fakeUi`: camera and microphone prompts are answered Allow by themselves (without it, a page
 * gets them only where its context was granted them, as in a real browser, and can be refused them).
 */
export async function launchBrowser({ netns = null, loopback = true, fakeUi = true, args = [] } = {}) {
  let executablePath = chromiumPath;
  let wrapperDir = null;
  if (netns) {
    wrapperDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chromium-netns-'));
    executablePath = path.join(wrapperDir, 'chromium');
    fs.writeFileSync(executablePath, `#!/bin/sh\nexec ip netns exec ${netns} ${chromiumPath} "$@"\n`, { mode: 0o755 });
  }
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--use-fake-device-for-media-stream',
      ...(fakeUi ? ['--use-fake-ui-for-media-stream'] : []),
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
      // The SFU may offer only loopback candidates (RTC_BIND_IPS=127.0.0.1); let Chrome pair with them directly.
      ...(loopback ? ['--allow-loopback-in-peer-connection'] : []),
      ...args,
    ],
  });
  if (wrapperDir) browser.on('disconnected', () => fs.rmSync(wrapperDir, { recursive: true, force: true }));
  return browser;
}

export function checkPrerequisites(...bins) {
  for (const bin of [gatewayBin, ...bins]) {
    if (!fs.existsSync(bin)) throw new Error(`${bin} not found: run cargo build --workspace --bins first`);
  }
  if (!fs.existsSync(chromiumPath)) throw new Error(`Chromium not found at ${chromiumPath}: apt-get install chromium`);
  fs.mkdirSync(artifacts, { recursive: true });
}

/**
 * A network namespace like a clinic machine with no uplink: loopback and one veth interface with one static
 * address, and no default route (so no DNS, no internet, no multicast or IPv6 route). The veth's other end stays
 * in this namespace with an address on the same /24, so the test itself can reach the server; nothing else is
 * routed. Needs root (`ip netns`). Resolves to `{ name, address, outerAddress, remove() }`: `address` is the
 * namespace's own, `outerAddress` the veth end outside it (this machine, as seen from inside).
 */
export function makeNetns() {
  const id = process.pid % 100000;
  // Test files run one after another, each in its own process: the pid keeps their namespaces apart.
  const name = `thgw-air-${id}`;
  const [outer, inner] = [`thgw${id}o`, `thgw${id}i`];
  const subnet = `10.213.${id % 250}`;
  const ip = (...args) => execFileSync('ip', args, { stdio: 'pipe' });
  const remove = () => {
    for (const args of [['link', 'del', outer], ['netns', 'del', name]]) {
      try {
        ip(...args);
      } catch {
        /* already gone */
      }
    }
  };
  remove();
  try {
    ip('netns', 'add', name);
    // No IPv6 in there (the offline LAN has none), which also spares Chromium the address change when IPv6
    // duplicate-address detection ends a second after the link comes up (it fails loads with
    // ERR_NETWORK_CHANGED).
    ip('netns', 'exec', name, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
    ip('link', 'add', outer, 'type', 'veth', 'peer', 'name', inner);
    ip('link', 'set', inner, 'netns', name);
    ip('netns', 'exec', name, 'sysctl', '-qw', `net.ipv6.conf.${inner}.disable_ipv6=1`);
    // The outer end too: its IPv6 link-local address would appear a second later, in the namespace where the
    // other browsers run.
    execFileSync('sysctl', ['-qw', `net.ipv6.conf.${outer}.disable_ipv6=1`], { stdio: 'pipe' });
    ip('-n', name, 'addr', 'add', `${subnet}.2/24`, 'dev', inner);
    ip('-n', name, 'link', 'set', 'lo', 'up');
    ip('-n', name, 'link', 'set', inner, 'up');
    ip('addr', 'add', `${subnet}.1/24`, 'dev', outer);
    ip('link', 'set', outer, 'up');
  } catch (err) {
    remove();
    throw new Error(`could not create network namespace ${name} (needs root and iproute2): ${err.stderr || err}`);
  }
  return { name, address: `${subnet}.2`, outerAddress: `${subnet}.1`, remove };
}

/**
 * The end of a test file: saves the pages' console lines and the server's output under `artifacts` (as
 * `<prefix>page-console.log` and `<prefix>server.log`), closes the browser, kills a server still running, waits
 * for it and removes its data folder.
 */
export async function teardown({ prefix = '', browser, server, tmp, pageConsole = [] }) {
  if (pageConsole.length) fs.writeFileSync(path.join(artifacts, `${prefix}page-console.log`), pageConsole.join('\n') + '\n');
  await browser?.close().catch(() => {});
  if (server) {
    fs.writeFileSync(path.join(artifacts, `${prefix}server.log`), server.output());
    if (server.proc.exitCode === null && server.proc.signalCode === null) server.proc.kill('SIGKILL');
    await server.exited;
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
}
