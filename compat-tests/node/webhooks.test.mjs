// Webhooks, checked by the official Node server SDK: a local HTTP receiver hands every request
// Crier posts to `pusher.webhook({headers, rawBody})` and records `isValid()`, `getTime()` and
// `getEvents()`. Real pusher-js (and laravel-echo) clients produce channel_occupied /
// channel_vacated, member_added / member_removed, client_event, cache_miss and
// subscription_count. Every webhook must be valid for the app's key and secret, and invalid for
// a wrong secret or a changed body (so the check is able to fail).

import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import Echo from 'laravel-echo';
import {
  APP,
  PusherServer,
  startCrier,
  pusherClient,
  echoOptions,
  record,
  subscribe,
  connected,
  waitState,
  withTimeout,
  disconnectAll,
  uniq,
} from '../lib/harness.mjs';

/** channel_vacated / member_removed debounce used by this file's server. */
const DELAY_MS = 300;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Validators: the app's own SDK, and the same app with a wrong secret. */
const sdkFor = (secret) => new PusherServer({ appId: APP.id, key: APP.key, secret, host: '127.0.0.1', useTLS: false });
const goodSdk = sdkFor(APP.secret);
const wrongSdk = sdkFor('not-the-compat-secret');

// ---------------------------------------------------------------------------------------------
// The receiver: every request, as the SDK sees it.
// ---------------------------------------------------------------------------------------------
/** [{path, method, headers, rawBody, at, valid, time, events, wrongSecretValid, tamperedValid, error}] */
const hooks = [];
const hookWaiters = new Set();

function inspect(req, rawBody) {
  const hook = { path: req.url, method: req.method, headers: req.headers, rawBody, at: Date.now() };
  try {
    const webhook = goodSdk.webhook({ headers: req.headers, rawBody });
    hook.valid = webhook.isValid();
    hook.time = webhook.isBodyValid() ? webhook.getTime() : null;
    hook.events = webhook.isBodyValid() ? webhook.getEvents() : null;
    hook.wrongSecretValid = wrongSdk.webhook({ headers: req.headers, rawBody }).isValid();
    // The same request with one event's channel name changed, the signature kept.
    const parsed = JSON.parse(rawBody);
    parsed.events[0].channel = `x${parsed.events[0].channel}`;
    hook.tamperedValid = goodSdk.webhook({ headers: req.headers, rawBody: JSON.stringify(parsed) }).isValid();
  } catch (e) {
    hook.error = String(e?.stack || e);
  }
  return hook;
}

let receiver;
let hookPort;

function startReceiver() {
  return new Promise((res, rej) => {
    const srv = createServer((req, reply) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        hooks.push(inspect(req, Buffer.concat(chunks).toString('utf8')));
        reply.writeHead(200, { 'content-type': 'text/plain' });
        reply.end('ok');
        for (const w of hookWaiters) w();
      });
    });
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => res(srv));
  });
}

const describeHooks = (path) =>
  hooks
    .filter((h) => !path || h.path === path)
    .slice(-30)
    .map((h) => `  ${h.path} valid=${h.valid} ${h.error ? `error=${h.error} ` : ''}${h.rawBody}`)
    .join('\n') || '  (none)';

/** Every event received on `path`, each with the request it came in. */
const eventsOn = (path = '/hook') => hooks.filter((h) => h.path === path).flatMap((h) => (h.events || []).map((ev) => ({ ev, hook: h })));

/**
 * Resolves with the first {ev, hook} on `path` (already received or later; from the `from`th
 * event on) matching `pred`.
 */
function waitHook(pred, { what, timeout = 5000, path = '/hook', from = 0 } = {}) {
  return new Promise((res, rej) => {
    const check = () => {
      const found = eventsOn(path).slice(from).find(({ ev }) => pred(ev));
      if (found) {
        hookWaiters.delete(check);
        clearTimeout(timer);
        res(found);
      }
    };
    const timer = setTimeout(() => {
      hookWaiters.delete(check);
      rej(new Error(`timed out after ${timeout} ms waiting for webhook ${what}; received on ${path}:\n${describeHooks(path)}`));
    }, timeout);
    hookWaiters.add(check);
    check();
  });
}

/** Events on /hook named `name` for `channel`. */
const named = (name, channel, path = '/hook') => eventsOn(path).filter(({ ev }) => ev.name === name && ev.channel === channel).map(({ ev }) => ev);

/** Asserts what every webhook request must be: valid, signed, JSON, recent. */
function assertGoodRequest(hook) {
  const show = `${hook.path}: ${JSON.stringify(hook.headers)} ${hook.rawBody}`;
  assert.equal(hook.error, undefined, `the SDK threw on ${show}`);
  assert.equal(hook.method, 'POST', show);
  assert.equal(hook.headers['content-type'], 'application/json', `content-type (the Node SDK accepts only exactly "application/json"): ${show}`);
  assert.equal(hook.headers['x-pusher-key'], APP.key, show);
  assert.match(hook.headers['x-pusher-signature'] || '', /^[0-9a-f]{64}$/, `X-Pusher-Signature: ${show}`);
  assert.equal(hook.valid, true, `pusher.webhook(...).isValid() is false for ${show}`);
  assert.equal(hook.wrongSecretValid, false, `valid with a wrong secret: ${show}`);
  assert.equal(hook.tamperedValid, false, `valid with a changed body: ${show}`);
  assert.ok(hook.time instanceof Date && !Number.isNaN(hook.time.getTime()), `getTime(): ${hook.time} for ${show}`);
  assert.ok(Math.abs(hook.at - hook.time.getTime()) < 10000, `time_ms ${hook.time.getTime()} is not close to the arrival ${hook.at}: ${show}`);
  const body = JSON.parse(hook.rawBody);
  assert.equal(typeof body.time_ms, 'number', `time_ms: ${show}`);
  assert.ok(Array.isArray(hook.events) && hook.events.length > 0, `getEvents(): ${show}`);
}

// ---------------------------------------------------------------------------------------------

let server;
const clients = [];
const echos = [];
const client = (opts) => {
  const c = pusherClient(server, opts);
  clients.push(c);
  return c;
};

before(async () => {
  receiver = await startReceiver();
  hookPort = receiver.address().port;
  server = await startCrier({
    // subscription_count on the socket side too (Pusher sends the webhook with subscription
    // counting enabled).
    appOptions: { subscription_count_events: true },
    env: {
      CRIER_APP_WEBHOOKS: JSON.stringify([
        { url: `http://127.0.0.1:${hookPort}/hook` },
        { url: `http://127.0.0.1:${hookPort}/occupied-only`, event_types: ['channel_occupied'] },
      ]),
      CRIER_WEBHOOK_DELAY_MS: String(DELAY_MS),
      CRIER_WEBHOOK_BATCH_WINDOW_MS: '50',
      CRIER_WEBHOOK_RETRY_FIRST_MS: '200',
      CRIER_WEBHOOK_TIMEOUT_MS: '2000',
    },
  });
});
afterEach(() => {
  disconnectAll(clients.splice(0));
  for (const e of echos.splice(0)) e.disconnect();
});
after(async () => {
  await server?.stop();
  await new Promise((r) => (receiver ? receiver.close(r) : r()));
});

describe('webhooks validated by the pusher Node SDK', { timeout: 60000 }, () => {
  it('public channel: channel_occupied, then channel_vacated after the delay', async () => {
    const name = uniq('wh-public-');
    const a = client();
    await connected(a);
    await subscribe(a, name);
    const occupied = await waitHook((ev) => ev.name === 'channel_occupied' && ev.channel === name, { what: `channel_occupied ${name}` });
    assertGoodRequest(occupied.hook);
    assert.deepEqual(occupied.ev, { name: 'channel_occupied', channel: name });

    // A second subscriber: no second channel_occupied.
    const b = client();
    await connected(b);
    await subscribe(b, name);
    b.disconnect();

    const left = Date.now();
    a.unsubscribe(name);
    const vacated = await waitHook((ev) => ev.name === 'channel_vacated' && ev.channel === name, {
      what: `channel_vacated ${name}`,
      timeout: DELAY_MS + 5000,
    });
    assertGoodRequest(vacated.hook);
    assert.deepEqual(vacated.ev, { name: 'channel_vacated', channel: name });
    const waited = vacated.hook.at - left;
    assert.ok(waited >= DELAY_MS - 50, `channel_vacated arrived ${waited} ms after the last unsubscribe, before the ${DELAY_MS} ms delay`);
    assert.equal(named('channel_occupied', name).length, 1, `channel_occupied more than once: ${describeHooks('/hook')}`);
    assert.equal(named('channel_vacated', name).length, 1, `channel_vacated more than once: ${describeHooks('/hook')}`);

    // The target limited to channel_occupied got it too.
    const only = await waitHook((ev) => ev.name === 'channel_occupied' && ev.channel === name, {
      what: `channel_occupied ${name} on /occupied-only`,
      path: '/occupied-only',
    });
    assertGoodRequest(only.hook);
  });

  it('a channel occupied again within the delay sends neither channel_vacated nor a second channel_occupied', async () => {
    const name = uniq('wh-flap-');
    const a = client();
    await connected(a);
    await subscribe(a, name);
    await waitHook((ev) => ev.name === 'channel_occupied' && ev.channel === name, { what: `channel_occupied ${name}` });
    a.unsubscribe(name);
    await subscribe(a, name); // back well within DELAY_MS
    await sleep(DELAY_MS + 300);
    // Now leave for good: exactly one channel_vacated, and still one channel_occupied.
    a.unsubscribe(name);
    await waitHook((ev) => ev.name === 'channel_vacated' && ev.channel === name, { what: `channel_vacated ${name}`, timeout: DELAY_MS + 5000 });
    assert.equal(named('channel_occupied', name).length, 1, `channel_occupied after a short absence:\n${describeHooks('/hook')}`);
    assert.equal(named('channel_vacated', name).length, 1, `channel_vacated for a short absence:\n${describeHooks('/hook')}`);
  });

  it('presence channel: member_added once per user, member_removed after the last socket and the delay', async () => {
    const name = uniq('presence-wh-');
    const ann = { user_id: 'wh-ann', user_info: { name: 'Ann' } };
    const bob = { user_id: 'wh-bob', user_info: { name: 'Bob' } };
    const a1 = client({ user: ann });
    const a2 = client({ user: ann });
    const b = client({ user: bob });
    await Promise.all([a1, a2, b].map((c) => connected(c)));

    await subscribe(a1, name);
    const annAdded = await waitHook((ev) => ev.name === 'member_added' && ev.channel === name && ev.user_id === 'wh-ann', {
      what: `member_added wh-ann on ${name}`,
    });
    assertGoodRequest(annAdded.hook);
    assert.deepEqual(annAdded.ev, { name: 'member_added', channel: name, user_id: 'wh-ann' });
    await waitHook((ev) => ev.name === 'channel_occupied' && ev.channel === name, { what: `channel_occupied ${name}` });

    await subscribe(a2, name); // Ann's second socket: no second member_added
    await subscribe(b, name);
    const bobAdded = await waitHook((ev) => ev.name === 'member_added' && ev.channel === name && ev.user_id === 'wh-bob', {
      what: `member_added wh-bob on ${name}`,
    });
    assertGoodRequest(bobAdded.hook);

    // Bob leaves: member_removed after the delay.
    const bobLeft = Date.now();
    b.disconnect();
    const bobRemoved = await waitHook((ev) => ev.name === 'member_removed' && ev.channel === name && ev.user_id === 'wh-bob', {
      what: `member_removed wh-bob on ${name}`,
      timeout: DELAY_MS + 5000,
    });
    assertGoodRequest(bobRemoved.hook);
    assert.deepEqual(bobRemoved.ev, { name: 'member_removed', channel: name, user_id: 'wh-bob' });
    assert.ok(bobRemoved.hook.at - bobLeft >= DELAY_MS - 50, `member_removed came ${bobRemoved.hook.at - bobLeft} ms after the disconnect`);

    // One of Ann's two sockets leaves: she is still there. Then the other: member_removed, vacated.
    a2.disconnect();
    await sleep(DELAY_MS + 300);
    assert.deepEqual(named('member_removed', name).map((ev) => ev.user_id), ['wh-bob'], 'member_removed while Ann still had a socket');
    a1.unsubscribe(name);
    await waitHook((ev) => ev.name === 'member_removed' && ev.channel === name && ev.user_id === 'wh-ann', {
      what: `member_removed wh-ann on ${name}`,
      timeout: DELAY_MS + 5000,
    });
    await waitHook((ev) => ev.name === 'channel_vacated' && ev.channel === name, { what: `channel_vacated ${name}`, timeout: DELAY_MS + 5000 });

    const members = eventsOn()
      .map(({ ev }) => ev)
      .filter((ev) => ev.channel === name && ev.name.startsWith('member_'))
      .map((ev) => `${ev.name} ${ev.user_id}`)
      .sort();
    assert.deepEqual(members, ['member_added wh-ann', 'member_added wh-bob', 'member_removed wh-ann', 'member_removed wh-bob']);
  });

  it('client_event: private channel (no user_id) and presence channel (with user_id)', async () => {
    const priv = uniq('private-wh-');
    const pres = uniq('presence-wh-ce-');
    const a = client({ user: { user_id: 'wh-typist', user_info: {} } });
    const b = client({ user: { user_id: 'wh-reader', user_info: {} } });
    await Promise.all([connected(a), connected(b)]);
    const [pa] = await Promise.all([subscribe(a, priv), subscribe(b, priv)]);
    const [qa] = await Promise.all([subscribe(a, pres), subscribe(b, pres)]);

    const data = { who: 'a', n: 1, text: 'héllo "quoted"' };
    assert.equal(pa.trigger('client-typing', data), true, 'pusher-js refused to send the client event');
    await b.waitFrame((f) => f.event === 'client-typing' && f.channel === priv, { what: `client-typing on ${priv}` });
    const got = await waitHook((ev) => ev.name === 'client_event' && ev.channel === priv, { what: `client_event on ${priv}` });
    assertGoodRequest(got.hook);
    assert.equal(typeof got.ev.data, 'string', `client_event data must be a string: ${JSON.stringify(got.ev)}`);
    assert.deepEqual(JSON.parse(got.ev.data), data);
    assert.deepEqual(
      { ...got.ev, data: undefined },
      { name: 'client_event', channel: priv, event: 'client-typing', data: undefined, socket_id: a.connection.socket_id },
    );

    assert.equal(qa.trigger('client-wave', { hand: 'left' }), true);
    const waved = await waitHook((ev) => ev.name === 'client_event' && ev.channel === pres, { what: `client_event on ${pres}` });
    assertGoodRequest(waved.hook);
    assert.equal(typeof waved.ev.data, 'string', JSON.stringify(waved.ev));
    assert.deepEqual(JSON.parse(waved.ev.data), { hand: 'left' });
    assert.deepEqual(
      { ...waved.ev, data: undefined },
      { name: 'client_event', channel: pres, event: 'client-wave', data: undefined, socket_id: a.connection.socket_id, user_id: 'wh-typist' },
    );
  });

  it('cache_miss: subscribing to an empty cache channel', async () => {
    const name = uniq('cache-wh-');
    const c = client();
    await connected(c);
    await subscribe(c, name);
    await c.waitFrame((f) => f.event === 'pusher:cache_miss' && f.channel === name, { what: `pusher:cache_miss on ${name}` });
    const miss = await waitHook((ev) => ev.name === 'cache_miss' && ev.channel === name, { what: `cache_miss ${name}` });
    assertGoodRequest(miss.hook);
    assert.deepEqual(miss.ev, { name: 'cache_miss', channel: name });
  });

  it('subscription_count: the channel count as subscribers come and go', async () => {
    const name = uniq('wh-count-');
    const a = client();
    const b = client();
    await Promise.all([connected(a), connected(b)]);
    await subscribe(a, name);
    await subscribe(b, name);
    const two = await waitHook((ev) => ev.name === 'subscription_count' && ev.channel === name && ev.subscription_count === 2, {
      what: `subscription_count 2 on ${name}`,
      timeout: 6000,
    });
    assertGoodRequest(two.hook);
    assert.deepEqual(two.ev, { name: 'subscription_count', channel: name, subscription_count: 2 });
    const from = eventsOn().length;
    b.disconnect();
    const one = await waitHook((ev) => ev.name === 'subscription_count' && ev.channel === name && ev.subscription_count === 1, {
      what: `subscription_count 1 on ${name} after a disconnect`,
      timeout: 6000,
      from,
    });
    assertGoodRequest(one.hook);
    for (const ev of eventsOn()
      .map((x) => x.ev)
      .filter((ev) => ev.name === 'subscription_count' && ev.channel === name)) {
      assert.equal(typeof ev.subscription_count, 'number', JSON.stringify(ev));
    }
  });

  it('laravel-echo joining a presence channel produces a valid member_added', async () => {
    const room = uniq('wh.room.');
    const e = new Echo(echoOptions(server, { user: { user_id: 7, user_info: { id: 7, name: 'Echo' } } }));
    record(e.connector.pusher);
    echos.push(e);
    await waitState(e.connector.pusher, 'connected');
    const here = await withTimeout(new Promise((res) => e.join(room).here(res)), 5000, 'here()');
    assert.deepEqual(here, [{ id: 7, name: 'Echo' }]);
    const added = await waitHook((ev) => ev.name === 'member_added' && ev.channel === `presence-${room}`, { what: `member_added on presence-${room}` });
    assertGoodRequest(added.hook);
    // Pusher's webhooks carry user ids as strings; Laravel's numeric id 7 is "7".
    assert.deepEqual(added.ev, { name: 'member_added', channel: `presence-${room}`, user_id: '7' });
  });

  it('every webhook received was valid; a wrong secret or a changed body never is', async () => {
    assert.ok(hooks.length > 0, 'no webhook received at all');
    for (const hook of hooks) assertGoodRequest(hook);
    // The SDK's check is able to fail: the same request checked with a wrong secret.
    const sample = hooks[0];
    assert.equal(wrongSdk.webhook({ headers: sample.headers, rawBody: sample.rawBody }).isValid(), false);
    assert.equal(goodSdk.webhook({ headers: sample.headers, rawBody: sample.rawBody }).isValid(), true);
    // The limited target got channel_occupied only.
    const onlyKinds = new Set(eventsOn('/occupied-only').map(({ ev }) => ev.name));
    assert.deepEqual([...onlyKinds], ['channel_occupied'], `/occupied-only received:\n${describeHooks('/occupied-only')}`);
    // Nothing unexpected on the main target.
    const known = new Set(['channel_occupied', 'channel_vacated', 'member_added', 'member_removed', 'client_event', 'cache_miss', 'subscription_count']);
    for (const { ev } of eventsOn()) assert.ok(known.has(ev.name), `unknown event ${JSON.stringify(ev)}`);
    assert.equal(
      hooks.filter((h) => h.path !== '/hook' && h.path !== '/occupied-only').length,
      0,
      `requests to other paths:\n${describeHooks()}`,
    );
  });
});
