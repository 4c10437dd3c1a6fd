// A JsSIP user agent driven from Node over SIP WebSocket (RFC 7118): the
// browser client's SIP stack without the browser, as a test peer.
//
//   node jssip_peer.js WSS_URL SIP_URI PASSWORD [ORIGIN]
//
// Prints one JSON object per line on stdout ({"event": ...}); reads commands,
// one JSON object per line, on stdin: {"message": {"to": URI, "body": TEXT}},
// {"subscribe": {"target": URI}} (presence), {"quit": true}. The CA to trust comes from NODE_EXTRA_CA_CERTS.
"use strict";

const readline = require("readline");
const WS = require("ws");
const [url, uri, password, origin] = process.argv.slice(2);

// JsSIP opens `new WebSocket(url, "sip")`, as a browser would; send the page's
// Origin too when one is given (a browser always does).
global.WebSocket = class extends WS {
  constructor(address, protocols) {
    super(address, protocols, origin ? { origin } : {});
  }
};
const JsSIP = require("jssip");

function emit(event, fields) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

const ua = new JsSIP.UA({
  sockets: [new JsSIP.WebSocketInterface(url)],
  uri,
  password,
  register: true,
  register_expires: 600,
  session_timers: false,
  user_agent: "JsSIP test peer",
});
ua.on("connected", () => emit("connected", {}));
ua.on("disconnected", () => emit("disconnected", {}));
ua.on("registered", () => emit("registered", {}));
ua.on("registrationFailed", (e) => emit("registrationFailed", { cause: e.cause }));
ua.on("newMessage", (e) => {
  if (e.originator === "remote") {
    emit("message", { from: e.request.from.uri.toString(), body: e.request.body });
  }
});
ua.start();

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  if (command.message) {
    const { to, body } = command.message;
    ua.sendMessage(to, body, {
      eventHandlers: {
        succeeded: (e) => emit("sent", { status: e.response.status_code }),
        failed: (e) => emit("sendFailed", { cause: e.cause }),
      },
    });
  } else if (command.subscribe) {
    const subscriber = ua.subscribe(command.subscribe.target, "presence", "application/pidf+xml", {
      expires: 600,
      contentType: "application/pidf+xml",
    });
    subscriber.on("active", () => emit("subscribed", {}));
    subscriber.on("notify", (isFinal, request, body) => emit("notify", { final: isFinal, body }));
    subscriber.on("terminated", (code, reason) => emit("unsubscribed", { code, reason }));
    subscriber.subscribe();
  } else if (command.quit) {
    ua.stop();
    setTimeout(() => process.exit(0), 500);
  }
});
