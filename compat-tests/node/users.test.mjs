// User features with pusher-js 8 (Node build) and the Node server SDK: sign-in
// (`userAuthentication.customHandler` + `authenticateUser`), `#server-to-user-<id>`,
// `sendToUser`, `terminateUserConnections`, "authorized connections" (require_signin) and
// watchlist online/offline events.

import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startCrier,
  serverSdk,
  pusherClient,
  connected,
  subscribe,
  signIn,
  rawUserAuth,
  waitUntil,
  waitState,
  withTimeout,
  sentinel as sentinelVia,
  disconnectAll,
  uniq,
} from '../lib/harness.mjs';

const SIGNIN_TIMEOUT_SECS = 2;

let server; // require_signin off (default), signin_timeout_secs 2, watchlist on (default)
let sdk;
let authServer; // require_signin on, signin_timeout_secs 2, watchlist_events off
let authSdk;
let idle; // an unsigned client on `server`, connected for the whole file
let idleSince;
const clients = [];

before(async () => {
  [server, authServer] = await Promise.all([
    startCrier({ appOptions: { signin_timeout_secs: SIGNIN_TIMEOUT_SECS } }),
    startCrier({ appOptions: { require_signin: true, signin_timeout_secs: SIGNIN_TIMEOUT_SECS, watchlist_events: false } }),
  ]);
  sdk = serverSdk(server);
  authSdk = serverSdk(authServer);
  idle = pusherClient(server);
  await connected(idle);
  idleSince = Date.now();
});
afterEach(() => {
  disconnectAll(clients.splice(0));
});
after(async () => {
  disconnectAll(idle);
  await Promise.all([server?.stop(), authServer?.stop()]);
});

/** A recorded pusher-js client on `srv`; `id` (with `extra` user data) enables signin(). */
function client(srv, { id, extra = {}, ...opts } = {}) {
  const c = pusherClient(srv, { ...(id !== undefined ? { signin: { id, ...extra } } : {}), ...opts });
  clients.push(c);
  return c;
}
async function signedIn(srv, id, extra) {
  const c = client(srv, { id, extra });
  await connected(c);
  await signIn(c);
  return c;
}

const framesOf = (c, event, channel, from = 0) =>
  c.frames.slice(from).filter((f) => f.event === event && (channel === undefined || f.channel === channel));
const userChannel = (id) => `#server-to-user-${id}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Subscribes `c` to a fresh public channel and returns a function that publishes a sentinel
 * there and waits for it: afterwards `c` holds every frame the server queued for it before.
 * (Public, so it works without any of the features under test.)
 */
async function sentinelFor(c, s = sdk) {
  const name = uniq('users-sentinel-');
  await subscribe(c, name);
  return () => sentinelVia(s, c, name);
}

/** Waits for the WebSocket close of `c` and for pusher-js to settle in disconnected/failed. */
async function closedBy(c, what) {
  await waitUntil(c, () => c.closes.length > 0, { what: `${what}: the WebSocket close` });
  await waitUntil(c, () => ['disconnected', 'failed'].includes(c.connection.state), {
    what: `${what}: pusher-js disconnected (now ${c.connection.state})`,
  });
  return c.closes[0];
}

describe('sign-in', { timeout: 30000 }, () => {
  it('signin(): pusher:signin_success echoes user_data; pusher-js then gets #server-to-user-<id>', async () => {
    const userData = { id: 'si-alice', user_info: { name: 'Alice' } };
    const c = client(server, { id: userData.id, extra: { user_info: userData.user_info } });
    await connected(c);
    const ok = await signIn(c);
    // The same string the SDK signed (pusher-js JSON.parse()s it afterwards).
    assert.equal(ok.data.user_data, JSON.stringify(userData));
    assert.deepEqual(c.user.user_data, userData);
    const sub = framesOf(c, 'pusher_internal:subscription_succeeded', userChannel('si-alice'));
    assert.equal(sub.length, 1, 'no subscription_succeeded for the user channel');
    assert.deepEqual(framesOf(c, 'pusher:error'), []);
    assert.equal(c.connection.state, 'connected');
  });

  it('a wrong signature or user data without a non-empty string id: pusher:error 4009, socket stays open', async () => {
    const c = client(server, { id: 'si-late' });
    await connected(c);
    const socketId = c.connection.socket_id;
    const attempts = [
      ['wrong secret', rawUserAuth(socketId, JSON.stringify({ id: 'si-mallory' }), { secret: 'not-the-secret' })],
      ['signature for another socket', rawUserAuth('123.456', JSON.stringify({ id: 'si-mallory' }))],
      ['no id', rawUserAuth(socketId, JSON.stringify({ user_info: { name: 'x' } }))],
      ['empty id', rawUserAuth(socketId, JSON.stringify({ id: '' }))],
      ['numeric id', rawUserAuth(socketId, JSON.stringify({ id: 5 }))],
      ['user_data not JSON', rawUserAuth(socketId, 'not json')],
    ];
    for (const [what, token] of attempts) {
      const from = c.frames.length;
      c.send_event('pusher:signin', token);
      const err = await c.waitFrame((f) => f.event === 'pusher:error' || f.event === 'pusher:signin_success', {
        from,
        what: `pusher:error after a sign-in with ${what}`,
      });
      assert.equal(err.event, 'pusher:error', `sign-in with ${what} was accepted: ${JSON.stringify(err)}`);
      assert.equal(err.data?.code, 4009, `${what}: ${JSON.stringify(err.data)}`);
    }
    // Still the same, open socket; it can sign in properly afterwards.
    const ping = await sentinelFor(c);
    await ping();
    assert.equal(c.connection.socket_id, socketId);
    assert.deepEqual(c.closes, []);
    await signIn(c);
    assert.equal(framesOf(c, 'pusher:signin_success').length, 1);
    assert.equal(c.connection.socket_id, socketId);
  });

  it('#server-to-user-<id> is refused to another user and to a socket that is not signed in', async () => {
    const alice = await signedIn(server, 'su-alice');
    const bob = await signedIn(server, 'su-bob');
    const anon = client(server);
    await connected(anon);
    const aliceSentinel = await sentinelFor(alice);
    const anonSentinel = await sentinelFor(anon);

    for (const [c, channel] of [
      [alice, userChannel('su-bob')],
      [anon, userChannel('su-alice')],
    ]) {
      const from = c.frames.length;
      c.send_event('pusher:subscribe', { auth: '', channel });
      const answer = await c.waitFrame(
        (f) =>
          (f.event === 'pusher_internal:subscription_succeeded' && f.channel === channel) ||
          (f.event === 'pusher:subscription_error' && f.channel === channel) ||
          f.event === 'pusher:error',
        { from, what: `an answer to the subscription to ${channel}` },
      );
      assert.notEqual(answer.event, 'pusher_internal:subscription_succeeded', `${channel} was granted to ${c.connection.socket_id}`);
    }
    await sdk.sendToUser('su-bob', 'for-bob', { secret: 1 });
    await sdk.sendToUser('su-alice', 'for-alice', { secret: 2 });
    await bob.waitFrame((f) => f.event === 'for-bob', { what: 'for-bob on bob' });
    await aliceSentinel();
    await anonSentinel();
    assert.deepEqual(framesOf(alice, 'for-bob'), [], "alice received bob's event");
    assert.deepEqual(framesOf(anon, 'for-alice'), [], "an unsigned socket received alice's event");
    assert.equal(alice.connection.state, 'connected');
    assert.equal(anon.connection.state, 'connected');
  });
});

describe('sendToUser', { timeout: 30000 }, () => {
  it("reaches every socket signed in as that user (pusher.user.bind), and nobody else", async () => {
    const a1 = await signedIn(server, 'stu-alice');
    const a2 = await signedIn(server, 'stu-alice');
    const bob = await signedIn(server, 'stu-bob');
    const anon = client(server);
    // Alice as a presence member only (channel_data), never signed in.
    const presenceOnly = client(server, { user: { user_id: 'stu-alice', user_info: {} } });
    await subscribe(presenceOnly, uniq('presence-stu-'));
    await connected(anon);
    const sentinels = await Promise.all([bob, anon, presenceOnly].map((c) => sentinelFor(c)));

    const got = [a1, a2].map((c) => withTimeout(new Promise((res) => c.user.bind('greeting', res)), 5000, `greeting on ${c.connection.socket_id}`));
    const res = await sdk.sendToUser('stu-alice', 'greeting', { hello: 'alice', n: 1 });
    assert.equal(res.status, 200);
    for (const data of await Promise.all(got)) assert.deepEqual(data, { hello: 'alice', n: 1 });
    for (const c of [a1, a2]) {
      assert.deepEqual(
        framesOf(c, 'greeting').map((f) => f.channel),
        [userChannel('stu-alice')],
      );
    }
    for (const s of sentinels) await s();
    for (const c of [bob, anon, presenceOnly]) {
      assert.deepEqual(framesOf(c, 'greeting'), [], `${c.connection.socket_id} received alice's event`);
    }
    // And bob gets his own.
    const bobGot = withTimeout(new Promise((res) => bob.user.bind('ping', res)), 5000, 'ping on bob');
    await sdk.sendToUser('stu-bob', 'ping', 'plain string');
    assert.equal(await bobGot, 'plain string');
  });
});

describe('terminateUserConnections', { timeout: 30000 }, () => {
  it("closes the user's signed-in sockets with pusher:error + close 4009; no auto-reconnect; others untouched", async () => {
    const a1 = await signedIn(server, 'tu-alice');
    const a2 = await signedIn(server, 'tu-alice');
    const bob = await signedIn(server, 'tu-bob');
    const presenceOnly = client(server, { user: { user_id: 'tu-alice', user_info: {} } });
    const presence = uniq('presence-tu-');
    await subscribe(presenceOnly, presence);
    const bobSentinel = await sentinelFor(bob);
    const presenceSentinel = await sentinelFor(presenceOnly);
    const oldIds = [a1.connection.socket_id, a2.connection.socket_id];

    const res = await sdk.terminateUserConnections('tu-alice');
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), {});

    for (const c of [a1, a2]) {
      const err = await c.waitFrame((f) => f.event === 'pusher:error', { what: 'pusher:error on a terminated socket' });
      assert.equal(err.data?.code, 4009, JSON.stringify(err.data));
      const close = await closedBy(c, 'terminated socket');
      assert.equal(close.code, 4009, `close ${JSON.stringify(close)}`);
    }
    // Others: still connected and served.
    await bobSentinel();
    await presenceSentinel();
    for (const c of [bob, presenceOnly]) {
      assert.equal(c.connection.state, 'connected');
      assert.deepEqual(c.closes, [], `${c.connection.socket_id} was closed`);
      assert.deepEqual(framesOf(c, 'pusher:error'), []);
    }
    const bobGot = withTimeout(new Promise((res) => bob.user.bind('still-here', res)), 5000, 'still-here on bob');
    await sdk.sendToUser('tu-bob', 'still-here', {});
    await bobGot;

    // pusher-js does not come back by itself...
    await sleep(1500);
    for (const c of [a1, a2]) {
      assert.ok(['disconnected', 'failed'].includes(c.connection.state), `state ${c.connection.state}`);
      assert.equal(c.states.filter((st) => st.current === 'connected').length, 1, 'pusher-js reconnected by itself');
      assert.equal(c.states.at(-1).current, c.connection.state);
    }
    // ...but the user may reconnect; pusher-js signs in again on the new socket.
    const from = a1.frames.length;
    a1.connect();
    await waitState(a1, 'connected');
    assert.ok(!oldIds.includes(a1.connection.socket_id));
    await a1.waitFrame((f) => f.event === 'pusher:signin_success', { from, what: 'sign-in again after reconnect' });
    await a1.waitFrame((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === userChannel('tu-alice'), {
      from,
      what: 'user channel again after reconnect',
    });
    const back = withTimeout(new Promise((res) => a1.user.bind('welcome-back', res)), 5000, 'welcome-back');
    await sdk.sendToUser('tu-alice', 'welcome-back', { ok: true });
    assert.deepEqual(await back, { ok: true });
  });
});

describe('watchlist', { timeout: 30000 }, () => {
  /** A signed-in client whose pusher.user.watchlist online/offline events are recorded. */
  async function watcher(id, watchlist) {
    const c = client(server, { id, extra: { watchlist } });
    c.watch = [];
    c.user.watchlist.bind('online', (e) => c.watch.push(['online', [...e.user_ids].sort()]));
    c.user.watchlist.bind('offline', (e) => c.watch.push(['offline', [...e.user_ids].sort()]));
    await connected(c);
    await signIn(c);
    return c;
  }
  const initial = (c) =>
    c.waitFrame((f) => f.event === 'pusher_internal:watchlist_events', { what: 'pusher_internal:watchlist_events after sign-in' });
  const byName = (events) => [...events].map((e) => [e.name, [...e.user_ids].sort()]).sort();

  it('initial online/offline status after sign-in, then online on the first socket and offline after the last', async () => {
    const bob = await signedIn(server, 'wl-bob');
    const alice = await watcher('wl-alice', ['wl-bob', 'wl-carol']);
    const first = await initial(alice);
    assert.equal(first.channel, undefined, 'watchlist_events carries a channel');
    assert.deepEqual(byName(first.data.events), [
      ['offline', ['wl-carol']],
      ['online', ['wl-bob']],
    ]);
    await waitUntil(alice, () => alice.watch.length >= 2, { what: 'pusher-js watchlist online + offline' });
    assert.deepEqual([...alice.watch].sort(), [
      ['offline', ['wl-carol']],
      ['online', ['wl-bob']],
    ]);
    const ping = await sentinelFor(alice);

    const carol1 = await signedIn(server, 'wl-carol');
    await waitUntil(alice, () => alice.watch.length >= 3, { what: 'online for wl-carol' });
    assert.deepEqual(alice.watch[2], ['online', ['wl-carol']]);

    // A second socket of carol, then closing one of two: no change.
    const carol2 = await signedIn(server, 'wl-carol');
    carol1.disconnect();
    await sleep(400);
    await ping();
    assert.equal(alice.watch.length, 3, `unexpected watchlist events: ${JSON.stringify(alice.watch.slice(3))}`);

    carol2.disconnect();
    await waitUntil(alice, () => alice.watch.length >= 4, { what: 'offline for wl-carol after her last socket closed' });
    assert.deepEqual(alice.watch[3], ['offline', ['wl-carol']]);

    bob.disconnect();
    await waitUntil(alice, () => alice.watch.length >= 5, { what: 'offline for wl-bob' });
    assert.deepEqual(alice.watch[4], ['offline', ['wl-bob']]);
  });

  it('only non-empty entries: all watched ids offline gives just an offline entry, all online just online', async () => {
    await signedIn(server, 'wl2-x');
    const none = await watcher('wl2-a', ['wl2-nobody-1', 'wl2-nobody-2']);
    const all = await watcher('wl2-b', ['wl2-x']);
    assert.deepEqual(byName((await initial(none)).data.events), [['offline', ['wl2-nobody-1', 'wl2-nobody-2']]]);
    assert.deepEqual(byName((await initial(all)).data.events), [['online', ['wl2-x']]]);
  });

  it('more than 100 ids: the first 100 are used; pusher:error 4302 after signin_success; socket kept', async () => {
    const ids = Array.from({ length: 120 }, (_, i) => `wl3-${String(i).padStart(3, '0')}`);
    await signedIn(server, 'wl3-005');
    const beyond = await signedIn(server, 'wl3-110'); // watched only past the 100th id
    const big = client(server, { id: 'wl3-big', extra: { watchlist: ids } });
    await connected(big);
    await signIn(big);
    const err = await big.waitFrame((f) => f.event === 'pusher:error', { what: 'pusher:error 4302' });
    assert.equal(err.data?.code, 4302, JSON.stringify(err.data));
    const iOk = big.frames.findIndex((f) => f.event === 'pusher:signin_success');
    assert.ok(big.frames.indexOf(err) > iOk, 'pusher:error 4302 came before pusher:signin_success');
    const events = byName((await initial(big)).data.events);
    assert.deepEqual(events, [
      ['offline', ids.slice(0, 100).filter((id) => id !== 'wl3-005')],
      ['online', ['wl3-005']],
    ]);
    // wl3-110 is not watched: its going offline is not reported.
    const ping = await sentinelFor(big);
    beyond.disconnect();
    await sleep(400);
    await ping();
    assert.equal(framesOf(big, 'pusher_internal:watchlist_events').length, 1, 'an event for an id past the 100th');
    assert.equal(big.connection.state, 'connected');
    assert.deepEqual(big.closes, []);
  });
});

describe('authorized connections (require_signin)', { timeout: 30000 }, () => {
  it(`sockets that neither sign in nor subscribe to private/presence within ${SIGNIN_TIMEOUT_SECS}s get 4009; the others stay; only with require_signin`, async () => {
    const mk = (opts) => client(authServer, opts);
    const idleC = mk();
    const publicOnly = mk();
    const badSignin = mk({ id: 'ac-bad', signinSecret: 'not-the-secret' });
    const signer = mk({ id: 'ac-ok', extra: { watchlist: ['ac-someone'] } });
    const lateSigner = mk({ id: 'ac-late' });
    const priv = mk();
    const pres = mk({ user: { user_id: 'ac-member', user_info: {} } });
    const all = [idleC, publicOnly, badSignin, signer, lateSigner, priv, pres];
    await Promise.all(all.map((c) => connected(c)));
    const t0 = Date.now();
    await Promise.all([
      subscribe(publicOnly, uniq('ac-public-')),
      signIn(signer),
      subscribe(priv, uniq('private-ac-')),
      subscribe(pres, uniq('presence-ac-')),
    ]);
    badSignin.signin();
    await badSignin.waitFrame((f) => f.event === 'pusher:error', { what: 'pusher:error for a bad sign-in' });

    // Nobody is kicked well before the timeout.
    await sleep(Math.max(0, SIGNIN_TIMEOUT_SECS * 500 - (Date.now() - t0)));
    for (const c of all) assert.deepEqual(c.closes, [], `closed before ${SIGNIN_TIMEOUT_SECS / 2}s: ${JSON.stringify(c.closes)}`);
    await signIn(lateSigner);

    for (const [c, what] of [
      [idleC, 'an idle socket'],
      [publicOnly, 'a socket on a public channel only'],
      [badSignin, 'a socket whose sign-in failed'],
    ]) {
      const close = await withTimeout(closedBy(c, what), (SIGNIN_TIMEOUT_SECS + 3) * 1000, `${what} to be closed`);
      assert.equal(close.code, 4009, `${what}: close ${JSON.stringify(close)}`);
      assert.ok(
        c.frames.some((f) => f.event === 'pusher:error' && f.data?.code === 4009),
        `${what}: no pusher:error 4009 before the close`,
      );
    }
    // The authorized ones outlive the timeout and are still served.
    await sleep(Math.max(0, (SIGNIN_TIMEOUT_SECS + 1) * 1000 - (Date.now() - t0)));
    for (const c of [signer, lateSigner, priv, pres]) {
      assert.equal(c.connection.state, 'connected', `${c.connection.socket_id}: ${c.connection.state}`);
      assert.deepEqual(c.closes, []);
    }
    const got = withTimeout(new Promise((res) => signer.user.bind('hello', res)), 5000, 'sendToUser on the authorized server');
    await authSdk.sendToUser('ac-ok', 'hello', { n: 1 });
    assert.deepEqual(await got, { n: 1 });
    // watchlist_events = false on this app: a watchlist in user_data is ignored.
    const ping = await sentinelFor(signer, authSdk);
    await ping();
    assert.deepEqual(framesOf(signer, 'pusher_internal:watchlist_events'), [], 'watchlist events with watchlist_events = false');
    // On the other server (same signin_timeout_secs, require_signin off) an unsigned socket stays.
    await sleep(Math.max(0, (SIGNIN_TIMEOUT_SECS + 1) * 1000 - (Date.now() - idleSince)));
    assert.equal(idle.connection.state, 'connected', 'timed out although require_signin is off');
    assert.deepEqual(idle.closes, []);
    assert.deepEqual(framesOf(idle, 'pusher:error'), []);
    // Kicked sockets are not reconnected by pusher-js.
    for (const c of [idleC, publicOnly, badSignin]) {
      assert.equal(c.states.filter((st) => st.current === 'connected').length, 1, 'pusher-js reconnected after 4009');
      assert.ok(['disconnected', 'failed'].includes(c.connection.state), `state ${c.connection.state}`);
    }
  });
});
