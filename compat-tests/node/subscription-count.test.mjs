// subscription_count_events: pusher_internal:subscription_count as pusher-js 8 sees it
// (`pusher:subscription_count` on the channel, `channel.subscriptionCount`), throttled to once per
// second per channel with the latest count winning; never on presence channels; off by default.

import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startCrier,
  serverSdk,
  pusherClient,
  subscribe,
  waitUntil,
  sentinel as sentinelVia,
  disconnectAll,
  uniq,
} from '../lib/harness.mjs';

let server; // subscription_count_events = true
let sdk;
let plainServer; // default: off
let plainSdk;
const clients = [];

before(async () => {
  [server, plainServer] = await Promise.all([startCrier({ appOptions: { subscription_count_events: true } }), startCrier()]);
  sdk = serverSdk(server);
  plainSdk = serverSdk(plainServer);
});
afterEach(() => {
  disconnectAll(clients.splice(0));
});
after(async () => {
  await Promise.all([server?.stop(), plainServer?.stop()]);
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const countFrames = (c, name) => c.frames.filter((f) => f.event === 'pusher_internal:subscription_count' && f.channel === name);

/** A client subscribed to `name` that records every pusher:subscription_count it emits, with time. */
async function counted(name, srv = server, user) {
  const c = pusherClient(srv, { user });
  clients.push(c);
  c.counts = [];
  const ch = c.subscribe(name);
  ch.bind('pusher:subscription_count', (d) => c.counts.push({ n: d.subscription_count, at: Date.now() }));
  await subscribe(c, name);
  c.ch = ch;
  return c;
}
const last = (c) => c.counts.at(-1)?.n;
const settlesAt = (c, n, what) =>
  waitUntil(c, () => last(c) === n && c.ch.subscriptionCount === n, {
    timeout: 4000,
    what: `${what}: subscription count ${n} (last seen ${last(c)}, subscriptionCount ${c.ch.subscriptionCount})`,
  });

describe('subscription counts', { timeout: 30000 }, () => {
  it('public, private and encrypted channels: every subscriber gets the current count as it changes', async () => {
    await Promise.all(
      ['sc-public-', 'private-sc-', 'private-encrypted-sc-'].map(async (prefix) => {
        const name = uniq(prefix);
        const a = await counted(name);
        await settlesAt(a, 1, `${name} a alone`);
        const b = await counted(name);
        const c = await counted(name);
        for (const x of [a, b, c]) await settlesAt(x, 3, `${name} three subscribers`);
        c.unsubscribe(name);
        for (const x of [a, b]) await settlesAt(x, 2, `${name} after an unsubscribe`);
        b.disconnect();
        await settlesAt(a, 1, `${name} after a disconnect`);
        const frame = countFrames(a, name).at(-1);
        assert.deepEqual(frame.data, { subscription_count: 1 });
      }),
    );
  });

  it('at most one count event per second per channel; the latest count wins', async () => {
    const name = uniq('sc-burst-');
    const w = await counted(name);
    await settlesAt(w, 1, 'watcher alone');
    // A burst of changes well inside one second: +6, -2.
    const burst = await Promise.all(Array.from({ length: 6 }, () => counted(name)));
    burst[0].unsubscribe(name);
    burst[1].disconnect();
    const tBurst = Date.now();
    await settlesAt(w, 5, 'watcher after the burst');
    const settled = w.counts.at(-1).at;
    assert.ok(settled - tBurst < 2500, `the latest count took ${settled - tBurst} ms`);
    await sleep(1300);
    assert.equal(last(w), 5, `a later event changed the count: ${JSON.stringify(w.counts)}`);
    const gaps = w.counts.slice(1).map((x, i) => x.at - w.counts[i].at);
    assert.ok(
      gaps.every((g) => g >= 850),
      `count events closer than a second apart: ${JSON.stringify(w.counts.map((x) => x.n))} gaps ${JSON.stringify(gaps)} ms`,
    );
    assert.ok(w.counts.length <= 4, `too many count events for one burst: ${JSON.stringify(w.counts.map((x) => x.n))}`);
    // Every remaining subscriber agrees.
    for (const x of burst.slice(2)) await settlesAt(x, 5, 'a burst subscriber');
  });

  it('presence channels never get subscription_count (a public channel beside them does)', async () => {
    const name = uniq('presence-sc-');
    const control = uniq('sc-control-');
    const a = await counted(name, server, { user_id: 'sc-a', user_info: {} });
    const b = await counted(name, server, { user_id: 'sc-b', user_info: {} });
    const c = await counted(name, server, { user_id: 'sc-c', user_info: {} });
    await subscribe(c, control);
    await subscribe(a, control);
    c.disconnect();
    await sleep(1300);
    await waitUntil(a, () => countFrames(a, control).at(-1)?.data?.subscription_count === 1, {
      what: `control: subscription count 1 on ${control}`,
    });
    for (const x of [a, b]) {
      await sentinelVia(sdk, x, name);
      assert.deepEqual(countFrames(x, name), [], 'pusher_internal:subscription_count on a presence channel');
      assert.ok(!x.ch.subscriptionCount, `subscriptionCount ${x.ch.subscriptionCount}`);
    }
  });

  it('off by default (subscription_count_events unset), on where enabled', async () => {
    const name = uniq('sc-off-');
    const a = await counted(name, plainServer);
    const b = await counted(name, plainServer);
    const on = await counted(name, server); // same name on the enabled server, as a control
    b.unsubscribe(name);
    await settlesAt(on, 1, 'control on the enabled server');
    await sleep(1300);
    await sentinelVia(plainSdk, a, name);
    assert.deepEqual(countFrames(a, name), [], 'subscription_count sent although the app did not enable it');
    assert.deepEqual(a.counts, []);
  });
});
