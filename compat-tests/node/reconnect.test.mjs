// pusher-js reconnects by itself after Crier restarts on the same port, and re-subscribes.

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import {
  APP,
  startCrier,
  serverSdk,
  pusherClient,
  subscribe,
  waitUntil,
  withTimeout,
  sentinel,
  disconnectAll,
  uniq,
} from '../lib/harness.mjs';

const require = createRequire(import.meta.url);
const WebSocket = require('ws');

const servers = [];
const clients = [];
after(async () => {
  disconnectAll(clients);
  for (const s of servers) await s.stop();
});

describe('restart', { timeout: 90000 }, () => {
  it('SIGTERM closes sockets with 4200; pusher-js reconnects and re-subscribes to the restarted server', async () => {
    const first = await startCrier();
    servers.push(first);
    const port = first.port;

    const pub = uniq('rc-public-');
    const priv = uniq('private-rc-');
    const pres = uniq('presence-rc-');
    const c = pusherClient(first, { user: { user_id: 'rc-user', user_info: { name: 'R' } } });
    clients.push(c);
    await subscribe(c, pub);
    await subscribe(c, priv);
    const presCh = await subscribe(c, pres);
    const oldSocketId = c.connection.socket_id;
    const succeeded = (name) =>
      c.frames.filter((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === name).length;
    assert.deepEqual([succeeded(pub), succeeded(priv), succeeded(pres)], [1, 1, 1]);

    // A raw observer to see the close code the server uses on shutdown.
    const observer = new WebSocket(`ws://127.0.0.1:${port}/app/${APP.key}?protocol=7&client=observer`);
    observer.on('error', () => {});
    const observerClosed = new Promise((res) => observer.once('close', (code, reason) => res({ code, reason: String(reason) })));
    await withTimeout(
      new Promise((res) => observer.on('message', (d) => String(d).includes('connection_established') && res())),
      5000,
      'observer connection_established',
    );

    const t0 = Date.now();
    const stopped = await first.stop();
    console.log(`stop took ${stopped.ms} ms`);
    assert.equal(stopped.killed, false, `the server ignored SIGTERM for 8 s and had to be killed\n${first.logs()}`);
    assert.ok(stopped.ms < 6000, `SIGTERM took ${stopped.ms} ms to stop the server`);
    const close = await withTimeout(observerClosed, 5000, 'observer close');
    assert.equal(close.code, 4200, `close on SIGTERM was ${JSON.stringify(close)}`);
    await waitUntil(c, () => c.connection.state !== 'connected', { what: 'pusher-js to notice the shutdown' });

    // Restart on the same port; pusher-js must come back by itself.
    const second = await startCrier({ port });
    console.log(`restarted at +${Date.now() - t0} ms, state ${c.connection.state}`);
    servers.push(second);
    await waitUntil(c, () => c.connection.state === 'connected' && c.connection.socket_id !== oldSocketId, {
      // pusher-js's immediate retry after 4200 meets a closed port; its next attempt comes when
      // its 15 s connect timeout expires (doubling after that), so allow two rounds.
      timeout: 40000,
      what: 'pusher-js to reconnect to the restarted server',
    });
    console.log(`reconnected at +${Date.now() - t0} ms; states ${JSON.stringify(c.states.map((s) => s.current))}`);
    await waitUntil(c, () => succeeded(pub) >= 2 && succeeded(priv) >= 2 && succeeded(pres) >= 2, {
      timeout: 10000,
      what: 'the three channels to be re-subscribed',
    });
    assert.equal(presCh.members.count, 1);
    assert.equal(presCh.members.me?.id, 'rc-user');

    // And events flow again on all three channels.
    const sdk = serverSdk(second);
    for (const ch of [pub, priv, pres]) await sentinel(sdk, c, ch);
    const users = await (await sdk.get({ path: `/channels/${pres}/users` })).json();
    assert.deepEqual(users.users, [{ id: 'rc-user' }]);
    observer.terminate();
  });
});
