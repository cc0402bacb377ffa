// Cache channels (cache-, private-cache-, presence-cache-) with pusher-js 8 (Node build) and the
// Node server SDK: last API event replayed to new subscribers, pusher:cache_miss, client events
// not cached, GET /channels/{name}?info=cache, TTL. (private-encrypted-cache-: encrypted.test.mjs)

import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startCrier,
  serverSdk,
  pusherClient,
  subscribe,
  subscribed,
  waitUntil,
  sentinel as sentinelVia,
  disconnectAll,
  uniq,
} from '../lib/harness.mjs';

const SHORT_TTL = 2;

let server; // default cache_ttl_secs (1800)
let sdk;
let shortServer; // cache_ttl_secs = 2
let shortSdk;
const clients = [];

before(async () => {
  [server, shortServer] = await Promise.all([startCrier(), startCrier({ appOptions: { cache_ttl_secs: SHORT_TTL } })]);
  sdk = serverSdk(server);
  shortSdk = serverSdk(shortServer);
});
afterEach(() => {
  disconnectAll(clients.splice(0));
});
after(async () => {
  await Promise.all([server?.stop(), shortServer?.stop()]);
});

const USER = { user_id: 'cache-user', user_info: { name: 'C' } };
function client(srv = server) {
  const c = pusherClient(srv, { user: USER });
  clients.push(c);
  return c;
}
const framesOf = (c, event, channel, from = 0) =>
  c.frames.slice(from).filter((f) => f.event === event && (channel === undefined || f.channel === channel));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Subscribes a new client to `name`, recording what pusher-js emits on the channel
 * (`pusher:cache_miss` and every other event, in order) from the very start.
 */
async function newSubscriber(name, srv = server) {
  const c = client(srv);
  const ch = c.subscribe(name);
  c.emitted = [];
  ch.bind_global((event, data) => {
    if (event !== 'pusher:subscription_succeeded') c.emitted.push([event, data]);
  });
  await subscribed(c, ch);
  return { c, ch };
}

/** A sentinel on a separate public channel of `c`, so it does not become `name`'s cached event. */
async function sideSentinel(c, s = sdk) {
  const side = uniq('side-');
  await subscribe(c, side);
  await sentinelVia(s, c, side);
}

/** The frames `c` got on `name` after pusher_internal:subscription_succeeded, in order. */
function afterSucceeded(c, name) {
  const i = c.frames.findIndex((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === name);
  assert.ok(i >= 0, `no subscription_succeeded on ${name}`);
  return c.frames.slice(i + 1);
}

const KINDS = [
  ['cache-', 'public'],
  ['private-cache-', 'private'],
  ['presence-cache-', 'presence'],
];

describe('cache channels', { timeout: 30000 }, () => {
  it('empty cache channel: pusher:cache_miss on the channel right after subscription_succeeded', async () => {
    for (const [prefix] of KINDS) {
      const name = uniq(`${prefix}miss-`);
      const { c } = await newSubscriber(name);
      await waitUntil(c, () => c.emitted.length > 0, { what: `pusher:cache_miss on ${name}` });
      assert.deepEqual(
        c.emitted.map(([e]) => e),
        ['pusher:cache_miss'],
      );
      const next = afterSucceeded(c, name);
      assert.equal(next[0]?.event, 'pusher:cache_miss', `first frame after subscription_succeeded: ${JSON.stringify(next[0])}`);
      assert.equal(next[0]?.channel, name);
      await sentinelVia(sdk, c, name);
      assert.equal(framesOf(c, 'pusher:cache_miss').length, 1, 'cache_miss sent more than once');
    }
  });

  it('the last API event is sent to each new subscriber right after subscription_succeeded (single, batch)', async () => {
    for (const [prefix] of KINDS) {
      // Published while nobody is subscribed; the second one wins.
      const name = uniq(`${prefix}state-`);
      await sdk.trigger(name, 'state', { v: 1 });
      await sdk.trigger(name, 'state', { v: 2, text: 'latest' });
      for (let round = 0; round < 2; round += 1) {
        const { c } = await newSubscriber(name);
        await waitUntil(c, () => c.emitted.length > 0, { what: `cached event on ${name}` });
        const next = afterSucceeded(c, name);
        assert.deepEqual(
          { event: next[0]?.event, channel: next[0]?.channel, data: next[0]?.data },
          { event: 'state', channel: name, data: { v: 2, text: 'latest' } },
        );
        await sideSentinel(c);
        assert.deepEqual(
          c.emitted,
          [['state', { v: 2, text: 'latest' }]],
          `round ${round}: ${JSON.stringify(c.emitted)}`,
        );
      }
    }

    // Published while someone is subscribed: live delivery once, no replay; the next subscriber
    // gets the latest one. A batch counts as well.
    const name = uniq('cache-live-');
    const { c: first } = await newSubscriber(name);
    await sdk.trigger(name, 'tick', { n: 1 });
    await sdk.triggerBatch([
      { channel: name, name: 'tick', data: { n: 2 } },
      { channel: uniq('cache-other-'), name: 'tick', data: { n: 99 } },
      { channel: name, name: 'tock', data: 'plain text' },
    ]);
    await sentinelVia(sdk, first, name);
    assert.deepEqual(
      first.emitted.filter(([e]) => e !== 'compat-sentinel' && e !== 'pusher:cache_miss'),
      [
        ['tick', { n: 1 }],
        ['tick', { n: 2 }],
        ['tock', 'plain text'],
      ],
    );
    assert.equal(first.emitted[0][0], 'pusher:cache_miss');
    // The sentinel itself is now the last API event of `name`.
    const { c: second } = await newSubscriber(name);
    await waitUntil(second, () => second.emitted.length > 0, { what: 'cached event after batch' });
    assert.equal(second.emitted[0][0], 'compat-sentinel');
    const name2 = uniq('cache-batch-');
    await sdk.triggerBatch([
      { channel: name2, name: 'tick', data: { n: 1 } },
      { channel: name2, name: 'tock', data: 'plain text' },
    ]);
    const { c: third } = await newSubscriber(name2);
    await waitUntil(third, () => third.emitted.length > 0, { what: 'cached event from a batch' });
    assert.deepEqual(third.emitted[0], ['tock', 'plain text']);
  });

  it('client events are not cached', async () => {
    for (const prefix of ['private-cache-', 'presence-cache-']) {
      const name = uniq(`${prefix}client-`);
      const { c: a, ch: chA } = await newSubscriber(name);
      const { c: b } = await newSubscriber(name);
      chA.trigger('client-typing', { who: 'a' });
      await b.waitFrame((f) => f.event === 'client-typing' && f.channel === name, { what: 'client-typing on b' });
      const { c: late } = await newSubscriber(name);
      await waitUntil(late, () => late.emitted.length > 0, { what: `cache_miss on ${name} after a client event` });
      assert.deepEqual(late.emitted.map(([e]) => e), ['pusher:cache_miss'], `${name}: ${JSON.stringify(late.emitted)}`);

      // After an API event and another client event, the API event is what is cached.
      await sdk.trigger(name, 'server-state', { s: 1 });
      await b.waitFrame((f) => f.event === 'server-state', { what: 'server-state on b' });
      chA.trigger('client-typing', { who: 'a', again: true });
      await b.waitFrame((f) => f.event === 'client-typing' && f.data?.again, { what: 'second client-typing on b' });
      const { c: later } = await newSubscriber(name);
      await waitUntil(later, () => later.emitted.length > 0, { what: `cached event on ${name}` });
      assert.deepEqual(later.emitted[0], ['server-state', { s: 1 }]);
      await sentinelVia(sdk, later, name);
      assert.deepEqual(framesOf(later, 'client-typing'), [], 'a client event was replayed');
      assert.deepEqual(framesOf(a, 'client-typing'), [], 'a client event was echoed to its sender');
    }
  });

  it('only the cache- prefixes cache: other channels get neither cache_miss nor a replay (prefix, not substring)', async () => {
    // Control: a cache channel published the same way replays.
    const control = uniq('cache-control-');
    await sdk.trigger(control, 'old', { stale: true });
    const { c: ctl } = await newSubscriber(control);
    await waitUntil(ctl, () => ctl.emitted.length > 0, { what: `replay on ${control}` });
    assert.deepEqual(ctl.emitted[0], ['old', { stale: true }]);
    for (const name of [uniq('my-cache-'), uniq('plain-'), uniq('private-nocache-'), uniq('presence-nocache-'), uniq('x-private-cache-')]) {
      await sdk.trigger(name, 'old', { stale: true });
      const { c } = await newSubscriber(name);
      await sentinelVia(sdk, c, name);
      assert.deepEqual(
        c.emitted.filter(([e]) => e !== 'compat-sentinel'),
        [],
        `${name} behaved like a cache channel: ${JSON.stringify(c.emitted)}`,
      );
    }
  });

  it('GET /channels/{name}?info=cache: null when empty, else {data: the data string, ttl}', async () => {
    const info = async (name, s = sdk) => {
      const res = await s.get({ path: `/channels/${name}`, params: { info: 'cache' } });
      assert.equal(res.status, 200);
      return res.json();
    };
    const name = uniq('cache-info-');
    const empty = await info(name);
    assert.ok('cache' in empty, `no "cache" attribute: ${JSON.stringify(empty)}`);
    assert.equal(empty.cache, null, JSON.stringify(empty));

    const payload = { price: 10.5, tags: ['a', 'b'], text: 'ünï' };
    await sdk.trigger(name, 'price', payload);
    const full = await info(name);
    assert.equal(typeof full.cache?.data, 'string', JSON.stringify(full));
    assert.equal(full.cache.data, JSON.stringify(payload), 'cache.data is not the published data string');
    assert.ok(Number.isFinite(full.cache.ttl) && full.cache.ttl > 1790 && full.cache.ttl <= 1800, `ttl ${full.cache.ttl}`);

    const priv = uniq('private-cache-info-');
    await sdk.trigger(priv, 'p', 'just a string');
    const p = await info(priv);
    assert.equal(p.cache?.data, 'just a string', JSON.stringify(p));

    // Together with subscription_count, on an occupied channel.
    const { c } = await newSubscriber(name);
    await waitUntil(c, () => c.emitted.length > 0, { what: 'cached price' });
    assert.deepEqual(c.emitted[0], ['price', payload]);
    const both = await (await sdk.get({ path: `/channels/${name}`, params: { info: 'cache,subscription_count' } })).json();
    assert.equal(both.occupied, true, JSON.stringify(both));
    assert.equal(both.subscription_count, 1, JSON.stringify(both));
    assert.equal(both.cache?.data, JSON.stringify(payload), JSON.stringify(both));
  });

  it(`cache_ttl_secs: the cached event expires (ttl ${SHORT_TTL}s)`, async () => {
    const name = uniq('cache-ttl-');
    await shortSdk.trigger(name, 'brief', { b: 1 });
    const before = await (await shortSdk.get({ path: `/channels/${name}`, params: { info: 'cache' } })).json();
    assert.equal(before.cache?.data, JSON.stringify({ b: 1 }), JSON.stringify(before));
    assert.ok(before.cache.ttl > 0 && before.cache.ttl <= SHORT_TTL, `ttl ${before.cache.ttl}`);
    const { c: fresh } = await newSubscriber(name, shortServer);
    await waitUntil(fresh, () => fresh.emitted.length > 0, { what: 'cached event before expiry' });
    assert.deepEqual(fresh.emitted[0], ['brief', { b: 1 }]);

    await sleep(SHORT_TTL * 1000 + 700);
    const afterTtl = await (await shortSdk.get({ path: `/channels/${name}`, params: { info: 'cache' } })).json();
    assert.equal(afterTtl.cache, null, `still cached after the ttl: ${JSON.stringify(afterTtl)}`);
    const { c: late } = await newSubscriber(name, shortServer);
    await waitUntil(late, () => late.emitted.length > 0, { what: 'cache_miss after expiry' });
    assert.deepEqual(late.emitted.map(([e]) => e), ['pusher:cache_miss']);
  });
});
