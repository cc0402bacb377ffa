// End-to-end encrypted channels (private-encrypted-*): the Node SDK with
// encryptionMasterKeyBase64 encrypts, pusher-js 8 (its Node build bundles tweetnacl) and
// laravel-echo decrypt with the shared_secret from the SDK's authorizeChannel. Crier only relays.

import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { createHash } from 'node:crypto';
import Echo from 'laravel-echo';
import {
  ENCRYPTION_MASTER_KEY_B64,
  startCrier,
  serverSdk,
  pusherClient,
  echoOptions,
  record,
  subscribe,
  subscribed,
  waitState,
  waitUntil,
  withTimeout,
  sentinel as sentinelVia,
  disconnectAll,
  uniq,
} from '../lib/harness.mjs';

const require = createRequire(import.meta.url);
const nacl = require('tweetnacl'); // what the SDK itself encrypts with

let server;
let sdk; // with the master key
const clients = [];
const echos = [];

before(async () => {
  server = await startCrier();
  sdk = serverSdk(server, { encryptionMasterKeyBase64: ENCRYPTION_MASTER_KEY_B64 });
});
afterEach(() => {
  disconnectAll(clients.splice(0));
  for (const e of echos.splice(0)) e.disconnect();
});
after(async () => {
  if (server) await server.stop();
});

function client(opts) {
  const c = pusherClient(server, opts);
  clients.push(c);
  // Raw text of every WebSocket message, to check that the ciphertext is relayed verbatim.
  c.raw = [];
  c.connection.bind('state_change', ({ current }) => {
    if (current === 'connected') c.connection.connection?.transport?.bind('message', (m) => c.raw.push(String(m.data)));
  });
  return c;
}
const framesOf = (c, event, channel, from = 0) =>
  c.frames.slice(from).filter((f) => f.event === event && (channel === undefined || f.channel === channel));

/** Subscribes and records what pusher-js emits on the channel (decrypted data), in order. */
async function encSubscriber(name, opts) {
  const c = client(opts);
  const ch = c.subscribe(name);
  c.emitted = [];
  ch.bind_global((event, data) => {
    if (event !== 'pusher:subscription_succeeded') c.emitted.push([event, data]);
  });
  await subscribed(c, ch);
  return { c, ch };
}

/** Sentinel on an encrypted channel: published encrypted, waited for decrypted. */
async function encSentinel(c, name) {
  const tag = uniq('es');
  await sdk.trigger(name, 'compat-sentinel', { tag });
  await waitUntil(c, () => c.emitted.some(([e, d]) => e === 'compat-sentinel' && d?.tag === tag), {
    what: `decrypted sentinel on ${name}`,
  });
}

/** The SDK's per-channel key: SHA-256(channel name ‖ master key). */
const sharedSecret = (channel) =>
  createHash('sha256').update(channel).update(Buffer.from(ENCRYPTION_MASTER_KEY_B64, 'base64')).digest();

describe('encrypted channels', { timeout: 30000 }, () => {
  it('pusher-js decrypts what the SDK publishes (trigger and batch); the frame carries only nonce + ciphertext', async () => {
    const name = uniq('private-encrypted-orders-');
    const { c, ch } = await encSubscriber(name);
    assert.equal(ch.constructor.name, 'EncryptedChannel', 'pusher-js did not create an encrypted channel');
    const payload = { card: '4111', amount: 12.5, note: 'ünïcode ✓' };
    const res = await sdk.trigger(name, 'paid', payload);
    assert.equal(res.status, 200);
    await waitUntil(c, () => c.emitted.some(([e]) => e === 'paid'), { what: 'decrypted paid event' });
    assert.deepEqual(c.emitted.find(([e]) => e === 'paid')[1], payload);
    const frame = framesOf(c, 'paid', name)[0];
    assert.deepEqual(Object.keys(frame.data).sort(), ['ciphertext', 'nonce'], JSON.stringify(frame));
    assert.ok(!JSON.stringify(frame).includes('4111'), 'plaintext on the wire');

    await sdk.triggerBatch([
      { channel: name, name: 'b1', data: { i: 1 } },
      { channel: uniq('plain-'), name: 'b1', data: { i: 99 } },
      { channel: name, name: 'b2', data: 'a string' },
    ]);
    await waitUntil(c, () => c.emitted.some(([e]) => e === 'b2'), { what: 'decrypted batch events' });
    assert.deepEqual(
      c.emitted.filter(([e]) => e === 'b1' || e === 'b2'),
      [
        ['b1', { i: 1 }],
        ['b2', 'a string'],
      ],
    );
  });

  it('the data string is relayed byte for byte', async () => {
    const name = uniq('private-encrypted-verbatim-');
    const { c } = await encSubscriber(name);
    const nonce = nacl.randomBytes(24);
    const box = nacl.secretbox(Buffer.from(JSON.stringify({ exact: true })), nonce, sharedSecret(name));
    // Unusual but valid JSON spacing and key order: a re-encoding server would change it.
    const data = `{ "ciphertext" : "${Buffer.from(box).toString('base64')}",\n  "nonce":"${Buffer.from(nonce).toString('base64')}" }`;
    const res = await sdk.post({ path: '/events', body: { name: 'verbatim', channels: [name], data } });
    assert.equal(res.status, 200);
    await waitUntil(c, () => c.emitted.some(([e]) => e === 'verbatim'), { what: 'decrypted verbatim event' });
    assert.deepEqual(c.emitted.find(([e]) => e === 'verbatim')[1], { exact: true });
    const raw = c.raw.map((r) => JSON.parse(r)).find((m) => m.event === 'verbatim');
    assert.equal(raw.data, data, 'the data string was altered');
  });

  it('authorised like private channels: a wrong signature gets subscription_error 401', async () => {
    const c = client({ authSecret: 'not-the-secret' });
    const name = uniq('private-encrypted-denied-');
    const ch = c.subscribe(name);
    const err = await withTimeout(new Promise((res) => ch.bind('pusher:subscription_error', res)), 5000, 'pusher:subscription_error');
    assert.equal(err.status, 401, JSON.stringify(err));
    await sdk.trigger(name, 'leak', { no: true });
    const pub = uniq('after-denied-');
    await subscribe(c, pub);
    await sentinelVia(sdk, c, pub);
    assert.deepEqual(framesOf(c, 'leak'), []);
    assert.equal(c.connection.state, 'connected');
  });

  it('client events on encrypted channels are refused and not delivered', async () => {
    for (const prefix of ['private-encrypted-', 'private-encrypted-cache-']) {
      const name = uniq(`${prefix}chat-`);
      const { c: a, ch: chA } = await encSubscriber(name);
      const { c: b } = await encSubscriber(name);
      // pusher-js itself will not send one...
      assert.throws(() => chA.trigger('client-typing', { t: 1 }), /not currently supported/);
      // ...so send the frame through its connection, as another client could.
      const errorsBefore = a.errors.length;
      a.send_event('client-typing', { plain: 'text' }, name);
      await waitUntil(a, () => a.errors.length > errorsBefore, { what: `pusher:error after a client event on ${name}` });
      assert.ok(a.frames.some((f) => f.event === 'pusher:error'), 'no pusher:error frame');
      await encSentinel(b, name);
      assert.deepEqual(framesOf(b, 'client-typing'), [], `the client event on ${name} was delivered`);
      assert.equal(a.connection.state, 'connected');
    }
  });

  it('a publish to an encrypted channel plus another channel is refused with 400; nothing delivered', async () => {
    const enc = uniq('private-encrypted-multi-');
    const other = uniq('plain-multi-');
    const { c: encSub } = await encSubscriber(enc);
    const plainSub = client();
    await subscribe(plainSub, other);
    // The SDK refuses this itself (sdk.trigger throws), so post the body directly.
    assert.throws(() => sdk.trigger([enc, other], 'x', {}), /multiple channels/);
    const err = await sdk
      .post({ path: '/events', body: { name: 'mixed', channels: [enc, other], data: JSON.stringify({ leak: true }) } })
      .then(
        (r) => ({ status: r.status }),
        (e) => e,
      );
    assert.equal(err.status, 400, `status ${err.status} ${err.body ?? ''}`);
    await encSentinel(encSub, enc);
    await sentinelVia(sdk, plainSub, other);
    assert.deepEqual(framesOf(encSub, 'mixed'), []);
    assert.deepEqual(framesOf(plainSub, 'mixed'), []);
  });

  it('private-encrypted-cache-: cache_miss, then the cached ciphertext decrypts for a new subscriber', async () => {
    const name = uniq('private-encrypted-cache-state-');
    const { c: first } = await encSubscriber(name);
    await waitUntil(first, () => first.emitted.length > 0, { what: 'cache_miss' });
    assert.equal(first.emitted[0][0], 'pusher:cache_miss');
    await sdk.trigger(name, 'state', { secret: 'cached' });
    const info = await (await sdk.get({ path: `/channels/${name}`, params: { info: 'cache' } })).json();
    assert.equal(typeof info.cache?.data, 'string', JSON.stringify(info));
    assert.deepEqual(Object.keys(JSON.parse(info.cache.data)).sort(), ['ciphertext', 'nonce'], 'cache holds something else than the ciphertext');
    const { c: second } = await encSubscriber(name);
    await waitUntil(second, () => second.emitted.length > 0, { what: 'cached encrypted event' });
    assert.deepEqual(second.emitted[0], ['state', { secret: 'cached' }]);
  });

  it('laravel-echo encryptedPrivate() listens and decrypts', async () => {
    const e = new Echo(echoOptions(server));
    echos.push(e);
    record(e.connector.pusher);
    await waitState(e.connector.pusher, 'connected');
    const base = uniq('echo-enc-');
    const ch = e.encryptedPrivate(base);
    const got = new Promise((res) => ch.listen('.Secret.Arrived', res));
    await withTimeout(new Promise((res) => ch.subscribed(res)), 5000, 'Echo encryptedPrivate .subscribed()');
    await sdk.trigger(`private-encrypted-${base}`, 'Secret.Arrived', { code: 42 });
    assert.deepEqual(await withTimeout(got, 5000, 'decrypted event through Echo'), { code: 42 });
  });
});
