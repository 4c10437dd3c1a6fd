// Conclave's browser client: SIP over WebSocket with JsSIP (sign-in, presence
// of contacts and of oneself, instant messages, audio calls over WebRTC).
// Bundled by esbuild at set-up time into conclave/web/static/app.js; served
// with a strict Content-Security-Policy, so no inline script or style anywhere.
import JsSIP from "jssip";
import SIPMessage from "jssip/lib/SIPMessage";
import RequestSender from "jssip/lib/RequestSender";

const $ = (id) => document.getElementById(id);
const PIDF = "application/pidf+xml";
const LABELS = { available: "Available", busy: "Busy", away: "Away", offline: "Offline" };
const AUDIO_ONLY = { audio: true, video: false };
// The REST API's answers (session token, relay credentials) must come quickly:
// a call waits for them, and without them it still goes ahead on host
// candidates. One budget for both requests.
const API_BUDGET_MS = 5000;
// JsSIP sends the SDP only when ICE gathering completes; a TURN server that
// does not answer would hold a call up for as long as the browser keeps trying.
// Send it once a relay candidate is in, or this long after the first candidate.
const GATHER_MS = 3000;

let ua = null;
let domain = "";
let etag = null;
let credentials = null; // {user, password}: the REST API signs in with them too
let apiToken = null; // {value, until}
let relay = null; // {iceServers, until}
let call = null; // {session, name}: the one call in progress, if any
const watching = new Map(); // address -> {subscriber, item}

function address(name) {
  const text = name.trim();
  return text.includes("@") ? `sip:${text.replace(/^sip:/, "")}` : `sip:${text}@${domain}`;
}

// "bob" for a user of our own domain, "bob@other.test" for anyone else.
function shortName(uri) {
  const text = uri.replace(/^sips?:/, "");
  const at = text.lastIndexOf("@");
  return at > 0 && text.slice(at + 1) === domain ? text.slice(0, at) : text;
}

function say(list, text) {
  const item = document.createElement("li");
  item.textContent = text;
  list.append(item);
}

function pidf(entity, state) {
  const activity = state === "busy" || state === "away" ? `<rpid:${state}/>` : "";
  const person = activity
    ? `<dm:person id="p"><rpid:activities>${activity}</rpid:activities></dm:person>`
    : "";
  return (
    '<?xml version="1.0" encoding="UTF-8"?>' +
    '<presence xmlns="urn:ietf:params:xml:ns:pidf"' +
    ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"' +
    ' xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"' +
    ` entity="${entity}"><tuple id="web"><status><basic>open</basic></status></tuple>` +
    `${person}</presence>`
  );
}

function stateOf(body) {
  if (!body) return "offline";
  const doc = new DOMParser().parseFromString(body, "application/xml");
  const basics = [...doc.getElementsByTagNameNS("urn:ietf:params:xml:ns:pidf", "basic")];
  if (!basics.some((b) => b.textContent.trim() === "open")) return "offline";
  const rpid = "urn:ietf:params:xml:ns:pidf:rpid";
  if (doc.getElementsByTagNameNS(rpid, "busy").length) return "busy";
  if (doc.getElementsByTagNameNS(rpid, "away").length) return "away";
  return "available";
}

// PUBLISH (RFC 3903) of one's own state: JsSIP has no API for it, so the
// request goes through JsSIP's own request sender (which answers challenges).
function publish(state) {
  const headers = ["Event: presence", "Expires: 600", `Content-Type: ${PIDF}`];
  if (etag) headers.push(`SIP-If-Match: ${etag}`);
  const uri = ua.configuration.uri;
  const request = new SIPMessage.OutgoingRequest("PUBLISH", uri, ua, {}, headers);
  request.body = pidf(uri.toString(), state);
  new RequestSender(ua, request, {
    onRequestTimeout: () => {},
    onTransportError: () => {},
    onReceiveResponse: (response) => {
      if (response.status_code === 200) {
        etag = response.getHeader("SIP-ETag") || etag;
        $("my-state").dataset.published = state;
      } else if (response.status_code === 412) {
        etag = null; // the server forgot it: publish afresh
        publish(state);
      }
    },
  }).send();
}

function watch(name) {
  const target = address(name);
  if (watching.has(target)) return;
  const item = document.createElement("li");
  const who = document.createElement("span");
  const state = document.createElement("span");
  who.textContent = target.replace(/^sip:/, "");
  state.className = "state";
  state.textContent = LABELS.offline;
  const dial = document.createElement("button");
  dial.type = "button";
  dial.className = "dial";
  dial.textContent = "Call";
  dial.setAttribute("aria-label", `Call ${shortName(target)}`);
  dial.disabled = call !== null;
  dial.addEventListener("click", () => startCall(target));
  item.append(who, state, dial);
  item.dataset.contact = target;
  $("contacts").append(item);
  const subscriber = ua.subscribe(target, "presence", PIDF, { expires: 600, contentType: PIDF });
  subscriber.on("notify", (_final, _request, body) => {
    state.textContent = LABELS[stateOf(body)];
  });
  subscriber.on("terminated", () => {
    state.textContent = LABELS.offline;
  });
  subscriber.subscribe();
  watching.set(target, { subscriber, item });
}

// --- The media relay (TURN) for calls, from the REST API ------------------
// POST /api/v1/session with the user name and password gives a bearer token;
// GET /api/v1/me/relay with it gives TURN credentials (404: no relay here).
// Any failure at all (no API, 404, a network error, an answer that is not the
// expected JSON, too slow) means "no relay": the call goes ahead with host
// candidates only, which is enough between browsers on the same network.

async function api(path, init, signal) {
  const response = await fetch(path, { ...init, signal, cache: "no-store", credentials: "omit" });
  if (!response.ok) {
    if (response.status === 401) apiToken = null; // expired or revoked: sign in afresh
    return null;
  }
  return response.json(); // not JSON: rejects, which is "no relay" too
}

async function bearer(signal) {
  if (apiToken && apiToken.until > Date.now()) return apiToken.value;
  const answer = await api(
    "/api/v1/session",
    {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: credentials.user, password: credentials.password }),
    },
    signal,
  );
  if (!answer || typeof answer.token !== "string") return null;
  const life = Number(answer.expires_in) > 0 ? Number(answer.expires_in) : 60;
  apiToken = { value: answer.token, until: Date.now() + life * 900 }; // renew at 90 %
  return apiToken.value;
}

async function fetchIceServers() {
  if (relay && relay.until > Date.now()) return relay.iceServers;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), API_BUDGET_MS);
  try {
    const token = await bearer(controller.signal);
    if (!token) return [];
    const answer = await api(
      "/api/v1/me/relay",
      { headers: { Authorization: `Bearer ${token}` } },
      controller.signal,
    );
    const urls = Array.isArray(answer?.urls)
      ? answer.urls.filter((url) => typeof url === "string" && /^(turns?|stun):/.test(url))
      : [];
    if (!urls.length) return [];
    const server = { urls };
    if (typeof answer.username === "string" && typeof answer.credential === "string") {
      server.username = answer.username;
      server.credential = answer.credential;
    } else if (urls.some((url) => url.startsWith("turn"))) {
      return []; // TURN without credentials cannot work, and would be refused by RTCPeerConnection
    }
    const iceServers = [server];
    // Reused until a minute before the credentials expire.
    relay = { iceServers, until: Number(answer.expires) * 1000 - 60_000 };
    return iceServers;
  } catch {
    return [];
  } finally {
    clearTimeout(timer);
  }
}

// --- Calls -----------------------------------------------------------------

function callState(state, text) {
  // state: "idle", "incoming" (Answer/Decline) or "active" (Hang up)
  $("call-status").textContent = text;
  $("incoming").hidden = state !== "incoming";
  $("hangup").hidden = state !== "active";
  for (const button of document.querySelectorAll("#contacts button.dial")) {
    button.disabled = state !== "idle";
  }
}

function finish(which, text) {
  if (call !== which) return;
  call = null;
  window.conclaveCall = null;
  $("remote-audio").srcObject = null;
  callState("idle", text);
}

function whyFailed(session, e, name) {
  const causes = JsSIP.C.causes;
  if (session.direction === "incoming") {
    if (e.originator === "local" && e.cause === causes.REJECTED) return "Call declined";
    if (e.cause === causes.CANCELED || e.cause === causes.NO_ANSWER) return `Missed call from ${name}`;
  }
  if (e.cause === causes.BUSY) return `${name} is busy`;
  if (e.cause === causes.REJECTED) return `${name} declined the call`;
  if (e.cause === causes.UNAVAILABLE) return `${name} is not available`;
  if (e.cause === causes.CANCELED) return "Call ended";
  if (e.cause === causes.USER_DENIED_MEDIA_ACCESS) return "Call failed: no microphone";
  return `Call failed: ${e.cause}`;
}

// The peer connection of the call in progress: its remote audio goes to the
// page's <audio> element, and it is window.conclaveCall, for the browser's
// console (getStats()) and the end-to-end test.
function media(which, connection) {
  if (call !== which) return;
  window.conclaveCall = connection;
  connection.addEventListener("track", (event) => {
    if (call !== which) return;
    const audio = $("remote-audio");
    audio.srcObject = event.streams[0] || new MediaStream([event.track]);
    // Every call starts from a click (Call or Answer), which lets the page play
    // sound; a refusal would leave nothing better to do than stay silent.
    audio.play().catch(() => {});
  });
}

function follow(which) {
  const { session, name } = which;
  if (session.connection) media(which, session.connection);
  session.on("peerconnection", (e) => media(which, e.peerconnection));
  let deadline = null;
  session.on("icecandidate", (e) => {
    if (e.candidate.type === "relay") e.ready();
    else if (deadline === null) deadline = setTimeout(e.ready, GATHER_MS);
  });
  session.on("sdp", (e) => {
    if (e.originator !== "local") return;
    clearTimeout(deadline);
    deadline = null;
  });
  session.on("accepted", () => callState("active", `In call with ${name}`));
  session.on("ended", () => finish(which, "Call ended"));
  session.on("failed", (e) => finish(which, whyFailed(session, e, name)));
}

async function startCall(target) {
  if (call) return;
  const which = { session: null, name: shortName(target) };
  call = which;
  callState("active", `Calling ${which.name}…`);
  const iceServers = await fetchIceServers();
  if (call !== which) return; // hung up meanwhile
  try {
    ua.call(target, {
      mediaConstraints: AUDIO_ONLY,
      pcConfig: { iceServers },
      rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: false },
    }); // newRTCSession (originator "local") adopts the session
  } catch (error) {
    finish(which, `Call failed: ${error.message}`);
  }
}

function incoming(session) {
  const name = shortName(session.remote_identity.uri.toString());
  if (call) {
    session.terminate({ status_code: 486, reason_phrase: "Busy Here" });
    return;
  }
  call = { session, name };
  follow(call);
  callState("incoming", `Incoming call from ${name}`);
}

async function answer() {
  const which = call;
  if (!which?.session || which.session.direction !== "incoming") return;
  callState("active", `Answering ${which.name}…`);
  const iceServers = await fetchIceServers();
  if (call !== which || which.session.isEnded()) return;
  try {
    which.session.answer({ mediaConstraints: AUDIO_ONLY, pcConfig: { iceServers } });
  } catch (error) {
    finish(which, `Call failed: ${error.message}`);
  }
}

function decline() {
  if (call?.session) call.session.terminate({ status_code: 603, reason_phrase: "Decline" });
}

function hangUp() {
  const which = call;
  if (!which) return;
  if (which.session) which.session.terminate(); // "ended" or "failed" follows
  else finish(which, "Call ended"); // still fetching the relay: nothing sent yet
}

function signIn(event) {
  event.preventDefault();
  const user = $("user").value.trim();
  const status = $("signin-status");
  status.textContent = "Signing in…";
  const socket = new JsSIP.WebSocketInterface(`wss://${location.host}/sip`);
  ua = new JsSIP.UA({
    sockets: [socket],
    uri: address(user),
    password: $("password").value,
    register: true,
    session_timers: false,
    user_agent: "Conclave web client",
  });
  // The REST API knows users by name: "alice", even if "alice@domain" was typed.
  credentials = { user: shortName(address(user)), password: $("password").value };
  ua.on("registered", () => {
    $("password").value = "";
    $("signin").hidden = true;
    $("session").hidden = false;
    $("me").textContent = `Signed in as ${address(user).replace(/^sip:/, "")}`;
    publish($("my-state").value);
    fetchIceServers(); // early, so that the first call need not wait for it
  });
  ua.on("registrationFailed", (e) => {
    status.textContent = `Sign-in failed: ${e.cause}`;
    ua.stop();
  });
  ua.on("newRTCSession", (e) => {
    if (e.originator === "remote") incoming(e.session);
    else if (call && call.session === null) {
      call.session = e.session;
      follow(call);
    }
  });
  ua.on("newMessage", (e) => {
    if (e.originator !== "remote") return;
    const from = e.request.from.uri.toString().replace(/^sip:/, "");
    say($("messages"), `${from}: ${e.request.body}`);
  });
  ua.start();
}

function send(event) {
  event.preventDefault();
  const to = address($("to").value);
  const text = $("text").value;
  say($("messages"), `me to ${to.replace(/^sip:/, "")}: ${text}`);
  $("text").value = "";
  ua.sendMessage(to, text, {
    eventHandlers: {
      failed: (e) => say($("messages"), `not delivered (${e.cause})`),
    },
  });
}

async function start() {
  const config = await (await fetch("/client/config.json")).json();
  domain = config.domain;
  $("signin").addEventListener("submit", signIn);
  $("compose").addEventListener("submit", send);
  $("add-contact").addEventListener("submit", (event) => {
    event.preventDefault();
    watch($("contact").value);
    $("contact").value = "";
  });
  $("my-state").addEventListener("change", () => publish($("my-state").value));
  $("answer").addEventListener("click", answer);
  $("decline").addEventListener("click", decline);
  $("hangup").addEventListener("click", hangUp);
  $("signout").addEventListener("click", () => {
    if (ua) ua.stop(); // ends any call too (BYE or CANCEL)
    if (apiToken) {
      // End the REST API session as well; keepalive: it outlives the reload.
      const headers = { Authorization: `Bearer ${apiToken.value}` };
      fetch("/api/v1/session", { method: "DELETE", headers, keepalive: true }).catch(() => {});
    }
    location.reload();
  });
  document.body.dataset.ready = "true";
}

start();
