// laravel-echo 2 (ES module) with pusher-js as its client, against one Crier per file.

import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import Echo from 'laravel-echo';
import {
  startCrier,
  serverSdk,
  echoOptions,
  record,
  waitState,
  waitUntil,
  withTimeout,
  sentinel,
  uniq,
} from '../lib/harness.mjs';

let server;
let sdk;
const echos = [];

/** An Echo instance whose pusher-js client is recorded (frames, states, errors). */
function echo(opts = {}) {
  const e = new Echo(echoOptions(server, opts));
  record(e.connector.pusher);
  echos.push(e);
  return e;
}
const pusherOf = (e) => e.connector.pusher;
const ready = (e) => waitState(pusherOf(e), 'connected');
/** Resolves when Echo's `.subscribed()` callback fires; rejects through `.error()`. */
const subscribedVia = (channel, what) =>
  withTimeout(
    new Promise((res, rej) => {
      channel.subscribed(() => res(channel));
      channel.error((err) => rej(new Error(`${what}: .error() fired with ${JSON.stringify(err)}`)));
    }),
    5000,
    `${what}: .subscribed()`,
  );

before(async () => {
  server = await startCrier();
  sdk = serverSdk(server);
});
afterEach(() => {
  for (const e of echos.splice(0)) e.disconnect();
});
after(async () => {
  if (server) await server.stop();
});

describe('laravel-echo against Crier', { timeout: 60000 }, () => {
  it('public channel: listen() with the App.Events namespace and with a leading dot', async () => {
    const e = echo();
    const name = uniq('orders.');
    const ch = e.channel(name);
    const namespaced = new Promise((res) => ch.listen('OrderShipped', res));
    const exact = new Promise((res) => ch.listen('.order.shipped', res));
    await subscribedVia(ch, name);
    // Laravel's broadcaster publishes the class name: App\Events\OrderShipped.
    await sdk.trigger(name, 'App\\Events\\OrderShipped', { order: { id: 1 } });
    await sdk.trigger(name, 'order.shipped', { order: { id: 2 } });
    assert.deepEqual(await withTimeout(namespaced, 5000, 'App\\Events\\OrderShipped'), { order: { id: 1 } });
    assert.deepEqual(await withTimeout(exact, 5000, '.order.shipped'), { order: { id: 2 } });
  });

  it('toOthers: an event published with Echo.socketId() skips that Echo client', async () => {
    const me = echo();
    const other = echo();
    const name = uniq('chat.');
    await Promise.all([subscribedVia(me.channel(name), 'me'), subscribedVia(other.channel(name), 'other')]);
    const otherGot = new Promise((res) => other.channel(name).listen('.Message', res));
    const socketId = me.socketId();
    assert.match(socketId, /^\d+\.\d+$/);
    await sdk.trigger(name, 'Message', { body: 'hi' }, { socket_id: socketId });
    assert.deepEqual(await withTimeout(otherGot, 5000, 'Message on the other client'), { body: 'hi' });
    await sentinel(sdk, pusherOf(me), name);
    assert.deepEqual(
      pusherOf(me).frames.filter((f) => f.event === 'Message'),
      [],
      'the sender (X-Socket-ID) received its own broadcast',
    );
  });

  it('private channel with a valid signature: .subscribed() fires and events arrive', async () => {
    const e = echo();
    const name = uniq('App.Models.User.');
    const ch = e.private(name);
    const got = new Promise((res) => ch.listen('.Notice', res));
    await subscribedVia(ch, `private-${name}`);
    await sdk.trigger(`private-${name}`, 'Notice', { n: 1 });
    assert.deepEqual(await withTimeout(got, 5000, 'Notice'), { n: 1 });
  });

  it("private channel with a wrong signature: Echo's .error() fires, the socket stays connected", async () => {
    const e = echo({ authSecret: 'wrong-secret' });
    await ready(e);
    const p = pusherOf(e);
    const socketId = e.socketId();
    const name = uniq('secret.');
    let subscribedFired = false;
    const err = await withTimeout(
      new Promise((res) => {
        e.private(name)
          .subscribed(() => {
            subscribedFired = true;
          })
          .error(res);
      }),
      5000,
      "Echo's .error() for a bad signature",
    );
    assert.equal(err.status, 401, `.error() got ${JSON.stringify(err)}`);
    assert.equal(err.type, 'AuthError', `.error() got ${JSON.stringify(err)}`);
    assert.equal(subscribedFired, false);
    // Still connected, same socket, and it can subscribe to something else.
    const pub = uniq('after.');
    await subscribedVia(e.channel(pub), pub);
    assert.equal(e.connectionStatus(), 'connected');
    assert.equal(e.socketId(), socketId, 'the socket was replaced after the auth failure');
    assert.deepEqual(
      p.states.filter((s) => s.previous === 'connected'),
      [],
      'the connection left the connected state after the auth failure',
    );
  });

  it('presence: here(), joining() and leaving(); the same user on two sockets joins once', async () => {
    const room = uniq('room.');
    const ann = echo({ user: { user_id: 1, user_info: { id: 1, name: 'Ann' } } });
    const bob1 = echo({ user: { user_id: 2, user_info: { id: 2, name: 'Bob' } } });
    const bob2 = echo({ user: { user_id: 2, user_info: { id: 2, name: 'Bob' } } });

    const joined = [];
    const left = [];
    const annHere = await withTimeout(
      new Promise((res) => {
        ann
          .join(room)
          .here(res)
          .joining((u) => joined.push(u))
          .leaving((u) => left.push(u));
      }),
      5000,
      'here() for Ann',
    );
    assert.deepEqual(annHere, [{ id: 1, name: 'Ann' }]);

    const bobHere = await withTimeout(new Promise((res) => bob1.join(room).here(res)), 5000, 'here() for Bob');
    assert.deepEqual(
      [...bobHere].sort((x, y) => x.id - y.id),
      [
        { id: 1, name: 'Ann' },
        { id: 2, name: 'Bob' },
      ],
    );
    await waitUntil(pusherOf(ann), () => joined.length >= 1, { what: 'joining() for Bob' });
    assert.deepEqual(joined, [{ id: 2, name: 'Bob' }]);

    // Bob's second tab: here() lists two users, Ann sees no second joining().
    const bob2Here = await withTimeout(new Promise((res) => bob2.join(room).here(res)), 5000, 'here() for Bob, second socket');
    assert.equal(bob2Here.length, 2, `here() on the second socket: ${JSON.stringify(bob2Here)}`);
    await sentinel(sdk, pusherOf(ann), `presence-${room}`);
    assert.equal(joined.length, 1, `joining() fired again: ${JSON.stringify(joined)}`);

    // Both of Bob's sockets leave: exactly one leaving().
    bob1.leave(room);
    bob2.disconnect();
    await waitUntil(pusherOf(ann), () => left.length >= 1, { what: 'leaving() for Bob' });
    assert.deepEqual(left, [{ id: 2, name: 'Bob' }]);
    await sentinel(sdk, pusherOf(ann), `presence-${room}`);
    assert.equal(left.length, 1, `leaving() fired twice: ${JSON.stringify(left)}`);
  });

  it('whisper: delivered to the others through listenForWhisper(), not echoed to the sender', async () => {
    const room = uniq('typing.');
    const a = echo({ user: { user_id: 'a', user_info: { name: 'A' } } });
    const b = echo({ user: { user_id: 'b', user_info: { name: 'B' } } });
    const pa = a.private(room);
    const pb = b.private(room);
    const gotPrivate = new Promise((res) => pb.listenForWhisper('typing', res));
    let echoed = false;
    pa.listenForWhisper('typing', () => {
      echoed = true;
    });
    await Promise.all([subscribedVia(pa, 'a private'), subscribedVia(pb, 'b private')]);
    pa.whisper('typing', { name: 'A', typing: true });
    assert.deepEqual(await withTimeout(gotPrivate, 5000, 'whisper on private channel'), { name: 'A', typing: true });
    await sentinel(sdk, pusherOf(a), `private-${room}`);
    assert.equal(echoed, false, 'the whisper was echoed to its sender');

    // Presence channels too, and the receiving pusher-js gets the sender's user_id.
    const ja = a.join(room);
    const jb = b.join(room);
    await Promise.all([
      withTimeout(new Promise((res) => ja.here(res)), 5000, 'here() a'),
      withTimeout(new Promise((res) => jb.here(res)), 5000, 'here() b'),
    ]);
    const gotPresence = new Promise((res) => jb.listenForWhisper('typing', res));
    ja.whisper('typing', { name: 'A', typing: false });
    assert.deepEqual(await withTimeout(gotPresence, 5000, 'whisper on presence channel'), { name: 'A', typing: false });
    const frame = pusherOf(b).frames.find((f) => f.event === 'client-typing' && f.channel === `presence-${room}`);
    assert.equal(frame?.user_id, 'a', `client event frame on presence: ${JSON.stringify(frame)}`);
  });
});
