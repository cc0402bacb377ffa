// Holds pusher-js clients open for a test written in another language (the Python SDK tests).
//
//   node lib/hold-clients.mjs PORT SPEC_JSON
//
// SPEC_JSON is a list of clients: [{"user": {"user_id": "...", "user_info": {...}}?,
// "signin": {"id": "...", ...}?, "channels": ["name", ...]}, ...]. A client with "signin" signs
// in with that user data (pusher-js signin(), signed by the Node SDK) before subscribing. Once
// every client is signed in and subscribed to all its channels the script prints
// {"ready": true, "socket_ids": [...]} on one line; afterwards every event a client receives
// (except pusher_internal:*) is printed as {"client": i, "event", "channel", "data"}, every
// connection state change as {"client": i, "state"} and every WebSocket close as
// {"client": i, "close": {"code", "reason"}}. It exits when its standard input closes, or on
// SIGTERM.

import { pusherClient, subscribe, disconnectAll, connected, signIn } from './harness.mjs';

const [portArg, specArg] = process.argv.slice(2);
const server = { port: Number(portArg), wsHost: '127.0.0.1' };
const spec = JSON.parse(specArg);

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const clients = [];

function quit(code) {
  disconnectAll(clients);
  setTimeout(() => process.exit(code), 100);
}
process.stdin.on('end', () => quit(0));
process.stdin.on('close', () => quit(0));
process.stdin.resume();
process.on('SIGTERM', () => quit(0));

try {
  spec.forEach((s, i) => {
    const c = pusherClient(server, { user: s.user, signin: s.signin });
    clients.push(c);
    c.connection.bind('state_change', ({ current }) => out({ client: i, state: current }));
    let closes = 0;
    const reportCloses = () => {
      while (closes < c.closes.length) {
        const { code, reason } = c.closes[closes];
        closes += 1;
        out({ client: i, close: { code, reason } });
      }
    };
    c._waiters.add(reportCloses);
    c.connection.bind('message', (m) => {
      if (m.event.startsWith('pusher_internal:') || m.event === 'pusher:connection_established') return;
      out({ client: i, event: m.event, channel: m.channel, data: m.data });
    });
  });
  await Promise.all(clients.map((c) => connected(c)));
  for (let i = 0; i < spec.length; i += 1) {
    if (spec[i].signin) await signIn(clients[i]);
    for (const ch of spec[i].channels) await subscribe(clients[i], ch);
  }
  out({ ready: true, socket_ids: clients.map((c) => c.connection.socket_id) });
} catch (e) {
  out({ ready: false, error: String(e && e.stack ? e.stack : e) });
  quit(1);
}
