// Conclave's browser client: SIP over WebSocket with JsSIP (sign-in, presence
// of contacts and of oneself, instant messages). Bundled by esbuild at set-up
// time into conclave/web/static/app.js; served with a strict Content-Security-
// Policy, so no inline script or style anywhere.
import JsSIP from "jssip";
import SIPMessage from "jssip/lib/SIPMessage";
import RequestSender from "jssip/lib/RequestSender";

const $ = (id) => document.getElementById(id);
const PIDF = "application/pidf+xml";
const LABELS = { available: "Available", busy: "Busy", away: "Away", offline: "Offline" };

let ua = null;
let domain = "";
let etag = null;
const watching = new Map(); // address -> {subscriber, item}

function address(name) {
  const text = name.trim();
  return text.includes("@") ? `sip:${text.replace(/^sip:/, "")}` : `sip:${text}@${domain}`;
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
  item.append(who, state);
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
  ua.on("registered", () => {
    $("password").value = "";
    $("signin").hidden = true;
    $("session").hidden = false;
    $("me").textContent = `Signed in as ${address(user).replace(/^sip:/, "")}`;
    publish($("my-state").value);
  });
  ua.on("registrationFailed", (e) => {
    status.textContent = `Sign-in failed: ${e.cause}`;
    ua.stop();
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
  $("signout").addEventListener("click", () => {
    if (ua) ua.stop();
    location.reload();
  });
  document.body.dataset.ready = "true";
}

start();
