// A misbehaving client (raw WebSocket through the `ws` package, and raw TCP) must not disturb
// the well-behaved pusher-js clients next to it.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import {
  APP,
  startCrier,
  serverSdk,
  pusherClient,
  subscribe,
  sentinel,
  withTimeout,
  disconnectAll,
  uniq,
} from '../lib/harness.mjs';

const require = createRequire(import.meta.url);
const WebSocket = require('ws');

let server;
let sdk;
const clients = [];

before(async () => {
  server = await startCrier();
  sdk = serverSdk(server);
});
after(async () => {
  disconnectAll(clients);
  if (server) await server.stop();
});

/** Opens a raw WebSocket to the app and resolves once connection_established arrived. */
function rawSocket(query = 'protocol=7&client=garbage&version=0') {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/app/${APP.key}?${query}`);
  ws.received = [];
  ws.closed = new Promise((res) => ws.once('close', (code, reason) => res({ code, reason: String(reason) })));
  ws.on('error', () => {});
  return withTimeout(
    new Promise((res, rej) => {
      ws.on('message', (data, isBinary) => {
        const text = String(data);
        ws.received.push(text);
        if (!isBinary && text.includes('pusher:connection_established')) res(ws);
      });
      ws.once('close', (code) => rej(new Error(`raw socket closed with ${code} before connection_established`)));
    }),
    5000,
    'connection_established on the raw socket',
  );
}

describe('garbage from one client does not disturb its neighbours', { timeout: 60000 }, () => {
  it('invalid JSON, binary junk, bad frames and raw TCP junk leave other clients untouched', async () => {
    const name = uniq('calm-');
    const priv = uniq('private-calm-');
    const pres = uniq('presence-calm-');
    const neighbour = pusherClient(server, { user: { user_id: 'n1', user_info: { name: 'N' } } });
    clients.push(neighbour);
    await subscribe(neighbour, name);
    await subscribe(neighbour, priv);
    await subscribe(neighbour, pres);
    const socketId = neighbour.connection.socket_id;
    const framesBefore = neighbour.frames.length;

    const ws = await rawSocket();
    const junk = [
      'not json at all',
      '{',
      '[]',
      'null',
      '42',
      '"just a string"',
      '{"event":123}',
      '{"event":null,"data":{}}',
      '{"data":{"channel":"x"}}',
      '{"event":"pusher:subscribe"}',
      '{"event":"pusher:subscribe","data":"not json"}',
      '{"event":"pusher:subscribe","data":{"channel":123}}',
      `{"event":"pusher:subscribe","data":{"channel":"${priv}","auth":"garbage"}}`,
      `{"event":"pusher:subscribe","data":{"channel":"${pres}","auth":"${APP.key}:00","channel_data":"{not json"}}`,
      `{"event":"pusher:subscribe","data":{"channel":"${'x'.repeat(5000)}"}}`,
      '{"event":"pusher:unsubscribe","data":{"channel":"never-subscribed"}}',
      `{"event":"client-evil","channel":"${name}","data":{"x":1}}`,
      `{"event":"client-evil","channel":"${priv}","data":{"x":1}}`,
      '{"event":"pusher:unknown","data":{}}',
      '{"event":"pusher_internal:member_added","channel":"' + pres + '","data":"{\\"user_id\\":\\"evil\\"}"}',
      '{"event":"pusher:ping","data":' + '['.repeat(5000) + ']'.repeat(5000) + '}',
    ];
    for (const j of junk) ws.send(j);
    ws.send(randomBytes(512)); // a binary frame of random bytes
    ws.send(Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1]), { binary: false }); // invalid UTF-8 in a text frame

    // A raw TCP client that never speaks HTTP, and one that upgrades and then sends non-frames.
    const tcp1 = net.connect(server.port, '127.0.0.1');
    tcp1.on('error', () => {});
    tcp1.write(randomBytes(4096));
    tcp1.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n' + '\0'.repeat(100));
    const tcp2 = net.connect(server.port, '127.0.0.1');
    tcp2.on('error', () => {});
    tcp2.write(
      `GET /app/${APP.key}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    tcp2.write(randomBytes(8192));

    // A second raw socket that sends a message larger than the server's limit.
    const big = await rawSocket();
    big.send(JSON.stringify({ event: 'pusher:ping', data: { pad: 'x'.repeat(600 * 1024) } }));

    // The neighbour still gets public, private and presence events, on the same socket.
    for (const ch of [name, priv, pres]) await sentinel(sdk, neighbour, ch);
    const got = neighbour.frames.slice(framesBefore);
    assert.deepEqual(
      got.filter((f) => f.event !== 'compat-sentinel'),
      [],
      `the neighbour received unexpected frames: ${JSON.stringify(got)}`,
    );
    assert.equal(neighbour.connection.state, 'connected');
    assert.equal(neighbour.connection.socket_id, socketId);
    assert.deepEqual(neighbour.states.filter((s) => s.previous === 'connected'), []);

    // The presence channel was not polluted by the injected member.
    const users = await (await sdk.get({ path: `/channels/${pres}/users` })).json();
    assert.deepEqual(users.users.map((u) => u.id), ['n1']);

    // A new well-behaved client can still connect and subscribe.
    const fresh = pusherClient(server);
    clients.push(fresh);
    await subscribe(fresh, name);

    // The server is still running.
    assert.equal(server.running, true, `the server exited:\n${server.logs()}`);
    tcp1.destroy();
    tcp2.destroy();
    ws.terminate();
    big.terminate();
  });

  it('the garbage socket itself either survives or is closed with a WebSocket close code', async () => {
    const ws = await rawSocket();
    ws.send('{not json');
    ws.send('{"event":"pusher:ping","data":{}}');
    // Either the server answers the ping (socket kept) or it closes the socket with a code.
    const outcome = await withTimeout(
      Promise.race([
        new Promise((res) =>
          ws.on('message', (d) => {
            if (String(d).includes('pusher:pong')) res({ kept: true });
          }),
        ),
        ws.closed.then((c) => ({ kept: false, ...c })),
      ]),
      5000,
      'a pong or a close after invalid JSON',
    );
    if (!outcome.kept) {
      assert.ok(outcome.code >= 1000 && outcome.code !== 1006, `closed without a close frame (code ${outcome.code})`);
    }
    ws.terminate();
  });
});
