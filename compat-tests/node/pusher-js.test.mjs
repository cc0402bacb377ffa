// pusher-js 8 (Node build) + the official Node server SDK against one Crier per file.

import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startCrier,
  serverSdk,
  pusherClient,
  connected,
  subscribe,
  waitUntil,
  pollUntil,
  withTimeout,
  sentinel as sentinelVia,
  disconnectAll,
  uniq,
} from '../lib/harness.mjs';

let server;
let sdk;
const clients = [];
const client = (opts) => {
  const c = pusherClient(server, opts);
  clients.push(c);
  return c;
};

before(async () => {
  server = await startCrier();
  sdk = serverSdk(server);
});
afterEach(() => {
  disconnectAll(clients.splice(0));
});
after(async () => {
  if (server) await server.stop();
});

/** Frames for `channel` with event `event` in `c.frames`, from index `from`. */
const framesOf = (c, event, channel, from = 0) =>
  c.frames.slice(from).filter((f) => f.event === event && (channel === undefined || f.channel === channel));

/** See `sentinel` in lib/harness.mjs: afterwards, `c` has every frame sent to it before. */
const sentinel = (c, channel) => sentinelVia(sdk, c, channel);

describe('pusher-js against Crier', { timeout: 60000 }, () => {
  it('connects with a Pusher-style socket id and a non-zero activity timeout; ping gets pong', async () => {
    const a = client();
    await connected(a);
    assert.match(a.connection.socket_id, /^\d+\.\d+$/);
    // pusher-js takes min(its own 120 s, the server's activity_timeout) and refuses a missing one.
    const t = a.connection.activityTimeout;
    assert.ok(Number.isFinite(t) && t > 0 && t <= 120000, `activityTimeout ${t}`);
    const from = a.frames.length;
    a.send_event('pusher:ping', {});
    await a.waitFrame((f) => f.event === 'pusher:pong', { from, what: 'pusher:pong after pusher:ping' });
  });

  it('public channel: subscribe, then an event triggered through the HTTP API arrives', async () => {
    const a = client();
    const name = uniq('public-news-');
    const ch = await subscribe(a, name);
    const got = new Promise((res) => ch.bind('greeting', res));
    const res = await sdk.trigger(name, 'greeting', { text: 'hello', n: 1, nested: { ok: true } });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), {});
    assert.deepEqual(await withTimeout(got, 5000, 'greeting event'), { text: 'hello', n: 1, nested: { ok: true } });
  });

  it('Laravel-style event names with backslashes and dots are routed verbatim', async () => {
    const a = client();
    const name = uniq('orders.');
    const ch = await subscribe(a, name);
    const got = new Promise((res) => ch.bind('App\\Events\\Order.Shipped', res));
    await sdk.trigger(name, 'App\\Events\\Order.Shipped', { id: 7 });
    assert.deepEqual(await withTimeout(got, 5000, 'App\\Events\\Order.Shipped'), { id: 7 });
  });

  it('one event to several channels reaches each subscriber once, and no one else', async () => {
    const names = [uniq('multi-a-'), uniq('multi-b-'), uniq('multi-c-')];
    const other = uniq('multi-other-');
    const subs = names.map(() => client());
    const all = client(); // subscribed to all three: gets the event once per channel
    const outsider = client();
    await Promise.all(subs.map((c, i) => subscribe(c, names[i])));
    for (const n of names) await subscribe(all, n);
    await subscribe(outsider, other);

    await sdk.trigger(names, 'fanout', { x: 1 });
    for (let i = 0; i < subs.length; i += 1) {
      await subs[i].waitFrame((f) => f.event === 'fanout' && f.channel === names[i], { what: `fanout on ${names[i]}` });
    }
    await waitUntil(all, () => framesOf(all, 'fanout').length === 3, { what: 'fanout on all three channels' });
    assert.deepEqual(framesOf(all, 'fanout').map((f) => f.channel).sort(), [...names].sort());

    // No duplicates: a sentinel published afterwards arrives after everything else.
    for (let i = 0; i < subs.length; i += 1) {
      await sentinel(subs[i], names[i]);
      assert.equal(framesOf(subs[i], 'fanout').length, 1, `subscriber of ${names[i]} got the event more than once`);
    }
    await sentinel(outsider, other);
    assert.equal(framesOf(outsider, 'fanout').length, 0, 'a client on another channel received the event');
  });

  it('socket_id exclusion ("to others"): the sender socket does not get its own event', async () => {
    const name = uniq('to-others-');
    const sender = client();
    const peer = client();
    await subscribe(sender, name);
    await subscribe(peer, name);
    await sdk.trigger(name, 'chat', { m: 'hi' }, { socket_id: sender.connection.socket_id });
    await peer.waitFrame((f) => f.event === 'chat' && f.channel === name, { what: 'chat on the peer' });
    await sentinel(sender, name);
    assert.deepEqual(framesOf(sender, 'chat'), [], 'the excluded socket received the event');
  });

  it('batch trigger delivers the events in order', async () => {
    const a = uniq('batch-a-');
    const b = uniq('batch-b-');
    const c = client();
    await subscribe(c, a);
    await subscribe(c, b);
    const batch = [];
    for (let i = 0; i < 10; i += 1) {
      batch.push({ channel: i % 3 === 0 ? b : a, name: 'seq', data: JSON.stringify({ i }) });
    }
    const res = await sdk.triggerBatch(batch);
    assert.equal(res.status, 200);
    await waitUntil(c, () => framesOf(c, 'seq').length >= 10, { what: '10 batched events' });
    assert.deepEqual(
      framesOf(c, 'seq').map((f) => [f.channel, f.data.i]),
      batch.map((e, i) => [e.channel, i]),
    );
  });

  it('private channel: a valid signature subscribes and receives events', async () => {
    const a = client();
    const name = uniq('private-orders.');
    const ch = await subscribe(a, name);
    const got = new Promise((res) => ch.bind('secret', res));
    await sdk.trigger(name, 'secret', { s: 42 });
    assert.deepEqual(await withTimeout(got, 5000, 'event on private channel'), { s: 42 });
  });

  it('private channel: a wrong signature gives pusher:subscription_error 401, the socket stays open', async () => {
    const a = client({ authSecret: 'not-the-secret' });
    await connected(a);
    const socketId = a.connection.socket_id;
    const name = uniq('private-denied-');
    const ch = a.subscribe(name);
    const err = await withTimeout(new Promise((res) => ch.bind('pusher:subscription_error', res)), 5000, 'pusher:subscription_error');
    assert.equal(err.status, 401, `subscription_error data: ${JSON.stringify(err)}`);
    assert.equal(err.type, 'AuthError', `subscription_error data: ${JSON.stringify(err)}`);
    assert.equal(ch.subscribed, false);
    // The very same socket keeps working.
    const pub = uniq('after-denied-');
    await subscribe(a, pub);
    assert.equal(a.connection.state, 'connected');
    assert.equal(a.connection.socket_id, socketId, 'the socket was replaced');
    // Events on the refused channel are not delivered.
    await sdk.trigger(name, 'leak', { no: true });
    await sentinel(a, pub);
    assert.deepEqual(framesOf(a, 'leak'), [], 'an event of the refused channel was delivered');
    assert.deepEqual(
      a.states.filter((s) => s.current !== 'connected' && s.previous === 'connected'),
      [],
      'the connection left the connected state',
    );
  });

  it('presence: member_added / member_removed, the same user on two sockets counted once', async () => {
    const name = uniq('presence-room.');
    const ann = client({ user: { user_id: 'u-ann', user_info: { name: 'Ann' } } });
    const bob1 = client({ user: { user_id: 'u-bob', user_info: { name: 'Bob' } } });
    const bob2 = client({ user: { user_id: 'u-bob', user_info: { name: 'Bob' } } });

    const annCh = await subscribe(ann, name);
    assert.equal(annCh.members.count, 1);
    assert.equal(annCh.members.me?.id, 'u-ann');
    assert.deepEqual(annCh.members.me?.info, { name: 'Ann' });

    const added = [];
    const removed = [];
    annCh.bind('pusher:member_added', (m) => added.push(m));
    annCh.bind('pusher:member_removed', (m) => removed.push(m));

    const bob1Ch = await subscribe(bob1, name);
    await waitUntil(ann, () => added.length >= 1, { what: 'pusher:member_added for u-bob' });
    assert.deepEqual(added[0], { id: 'u-bob', info: { name: 'Bob' } });
    assert.equal(bob1Ch.members.count, 2);
    assert.deepEqual(bob1Ch.members.get('u-ann'), { id: 'u-ann', info: { name: 'Ann' } });
    assert.equal(bob1Ch.members.me?.id, 'u-bob');

    // Second socket of the same user: no member_added, still two members.
    const bob2Ch = await subscribe(bob2, name);
    assert.equal(bob2Ch.members.count, 2, 'the second socket of u-bob was counted as another member');
    await sentinel(ann, name);
    assert.equal(added.length, 1, `member_added sent again for the second socket: ${JSON.stringify(added)}`);
    assert.equal(annCh.members.count, 2);

    // The HTTP API agrees: two distinct users.
    const users = await (await sdk.get({ path: `/channels/${name}/users` })).json();
    assert.deepEqual(users.users.map((u) => u.id).sort(), ['u-ann', 'u-bob']);
    const info = await (await sdk.get({ path: `/channels/${name}`, params: { info: 'user_count' } })).json();
    assert.equal(info.user_count, 2);

    // First socket of u-bob leaves: u-bob is still there through the other socket.
    bob1.disconnect();
    await waitForSubscriptionCount(name, 2);
    await sentinel(ann, name);
    assert.deepEqual(removed, [], 'member_removed sent while u-bob still had a socket');
    assert.equal(annCh.members.count, 2);

    // Last socket of u-bob leaves.
    bob2.disconnect();
    await waitUntil(ann, () => removed.length >= 1, { what: 'pusher:member_removed for u-bob' });
    assert.equal(removed[0].id, 'u-bob');
    assert.equal(annCh.members.count, 1);
  });

  it('client events: delivered to the others, never echoed, user_id on presence', async () => {
    const priv = uniq('private-chat.');
    const a = client({ user: { user_id: 'u-a' } });
    const b = client({ user: { user_id: 'u-b' } });
    const c = client({ user: { user_id: 'u-c' } });
    const chans = await Promise.all([a, b, c].map((x) => subscribe(x, priv)));

    const bGot = new Promise((res) => chans[1].bind('client-typing', (data, meta) => res({ data, meta })));
    chans[0].trigger('client-typing', { who: 'a', n: 1 });
    const { data } = await withTimeout(bGot, 5000, 'client-typing on b');
    assert.deepEqual(data, { who: 'a', n: 1 });
    await c.waitFrame((f) => f.event === 'client-typing' && f.channel === priv, { what: 'client-typing on c' });
    await sentinel(a, priv);
    assert.deepEqual(framesOf(a, 'client-typing'), [], 'the client event was echoed to its sender');

    // Presence: receivers learn who sent it.
    const pres = uniq('presence-chat.');
    const pa = await subscribe(a, pres);
    const pb = await subscribe(b, pres);
    const waved = new Promise((res) => pb.bind('client-wave', (d, meta) => res({ d, meta })));
    pa.trigger('client-wave', { hand: 'left' });
    const w = await withTimeout(waved, 5000, 'client-wave on b');
    assert.deepEqual(w.d, { hand: 'left' });
    assert.equal(w.meta?.user_id, 'u-a', `metadata was ${JSON.stringify(w.meta)}`);
    await sentinel(a, pres);
    assert.deepEqual(framesOf(a, 'client-wave'), [], 'the presence client event was echoed to its sender');
  });

  it('client events on a public channel are refused with pusher:error and not delivered', async () => {
    const name = uniq('public-chat-');
    const a = client();
    const b = client();
    const ca = await subscribe(a, name);
    await subscribe(b, name);
    const errorsBefore = a.errors.length;
    ca.trigger('client-shout', { loud: true });
    await waitUntil(a, () => a.errors.length > errorsBefore, { what: 'pusher:error after a client event on a public channel' });
    const e = a.errors[errorsBefore];
    assert.equal(e.type, 'PusherError', `error was ${JSON.stringify(e)}`);
    assert.ok(a.frames.some((f) => f.event === 'pusher:error'), 'no pusher:error frame');
    await sentinel(b, name);
    assert.deepEqual(framesOf(b, 'client-shout'), [], 'the refused client event was delivered');
    assert.equal(a.connection.state, 'connected');
  });

  it('unsubscribe stops delivery on that channel only', async () => {
    const a = client();
    const keep = uniq('keep-');
    const drop = uniq('drop-');
    await subscribe(a, keep);
    await subscribe(a, drop);
    a.unsubscribe(drop);
    await pollUntil(async () => (await (await sdk.get({ path: `/channels/${drop}` })).json()).occupied === false, {
      what: `${drop} to become unoccupied`,
    });
    await sdk.trigger(drop, 'gone', {});
    await sentinel(a, keep);
    assert.deepEqual(framesOf(a, 'gone'), []);
  });

  it('trigger with info returns user_count (presence) and subscription_count (public)', async () => {
    const pres = uniq('presence-info.');
    const pub = uniq('public-info-');
    const a = client({ user: { user_id: 'u-1' } });
    const b = client({ user: { user_id: 'u-2' } });
    await subscribe(a, pres);
    await subscribe(b, pres);
    await subscribe(a, pub);
    await subscribe(b, pub);
    const r1 = await (await sdk.trigger(pres, 'x', {}, { info: 'user_count' })).json();
    assert.equal(r1.channels?.[pres]?.user_count, 2, JSON.stringify(r1));
    const r2 = await (await sdk.trigger(pub, 'x', {}, { info: 'subscription_count' })).json();
    assert.equal(r2.channels?.[pub]?.subscription_count, 2, JSON.stringify(r2));
  });

});

/**
 * Waits until the server reports `n` subscriptions on `name`, so that a disconnect is known to
 * be processed before a sentinel is sent. If the server does not report subscription_count for
 * presence channels (the Pusher docs leave it open), falls back to a short settling delay; the
 * assertion itself still rests on the sentinel.
 */
async function waitForSubscriptionCount(name, n) {
  let supported = true;
  await pollUntil(
    async () => {
      let body;
      try {
        body = await (await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } })).json();
      } catch {
        supported = false;
        return true;
      }
      if (body.subscription_count === undefined) {
        supported = false;
        return true;
      }
      return body.subscription_count === n ? body : { ok: false, body };
    },
    { what: `subscription_count ${n} on ${name}` },
  );
  if (!supported) await new Promise((r) => setTimeout(r, 500));
}
