// The official Node server SDK (pusher 5.x) against Crier's HTTP API, with pusher-js clients
// holding the channels open.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { APP, startCrier, serverSdk, pusherClient, subscribe, pollUntil, disconnectAll, uniq } from '../lib/harness.mjs';

let server;
let sdk;
const clients = [];
const names = {};

before(async () => {
  server = await startCrier();
  sdk = serverSdk(server);
  names.public = uniq('api-public-');
  names.private = uniq('private-api-');
  names.presence = uniq('presence-api-');
  names.presenceEmpty = uniq('presence-api-empty-');
  const u1a = pusherClient(server, { user: { user_id: 'user-1', user_info: { name: 'One' } } });
  const u1b = pusherClient(server, { user: { user_id: 'user-1', user_info: { name: 'One' } } });
  const u2 = pusherClient(server, { user: { user_id: 'user-2', user_info: { name: 'Two' } } });
  clients.push(u1a, u1b, u2);
  await subscribe(u1a, names.public);
  await subscribe(u1b, names.public);
  await subscribe(u2, names.public);
  await subscribe(u1a, names.private);
  await subscribe(u1a, names.presence);
  await subscribe(u1b, names.presence);
  await subscribe(u2, names.presence);
  // Subscribed and left again: must not be listed as occupied.
  const ch = await subscribe(u2, names.presenceEmpty);
  u2.unsubscribe(ch.name);
});
after(async () => {
  disconnectAll(clients);
  if (server) await server.stop();
});

const getJson = async (path, params) => {
  const res = await sdk.get({ path, params });
  assert.equal(res.status, 200);
  return res.json();
};

describe('HTTP API through the Node server SDK', { timeout: 60000 }, () => {
  it('GET /channels lists the occupied channels only', async () => {
    const body = await pollUntil(
      async () => {
        const b = await getJson('/channels');
        return b.channels && !(names.presenceEmpty in b.channels) ? b : { ok: false, b };
      },
      { what: 'the unsubscribed presence channel to disappear from /channels' },
    );
    assert.equal(typeof body.channels, 'object');
    assert.ok(!Array.isArray(body.channels), '"channels" must be an object, not an array');
    for (const n of [names.public, names.private, names.presence]) {
      assert.ok(n in body.channels, `${n} missing from ${JSON.stringify(body)}`);
    }
  });

  it('GET /channels?filter_by_prefix=presence-&info=user_count counts distinct users', async () => {
    const body = await getJson('/channels', { filter_by_prefix: 'presence-', info: 'user_count' });
    assert.deepEqual(Object.keys(body.channels).filter((n) => !n.startsWith('presence-')), []);
    assert.equal(body.channels[names.presence]?.user_count, 2, JSON.stringify(body));
  });

  it('GET /channels/{name} reports occupied and subscription_count', async () => {
    const pub = await getJson(`/channels/${names.public}`, { info: 'subscription_count' });
    assert.equal(pub.occupied, true);
    assert.equal(pub.subscription_count, 3, JSON.stringify(pub));
    const pres = await getJson(`/channels/${names.presence}`, { info: 'user_count' });
    assert.equal(pres.occupied, true);
    assert.equal(pres.user_count, 2, JSON.stringify(pres));
    const empty = await getJson(`/channels/${uniq('never-used-')}`);
    assert.deepEqual(empty, { occupied: false });
  });

  it('GET /channels/{presence}/users lists each user once', async () => {
    const body = await getJson(`/channels/${names.presence}/users`);
    assert.deepEqual(body.users.map((u) => u.id).sort(), ['user-1', 'user-2']);
  });

  it('GET /channels/{public}/users is a 400', async () => {
    await assert.rejects(sdk.get({ path: `/channels/${names.public}/users` }), (err) => {
      assert.equal(err.status, 400, `status ${err.status}, body ${err.body}`);
      return true;
    });
  });

  it('a wrong secret gives 401 for trigger and for GET, with a JSON error body', async () => {
    const bad = serverSdk(server, { secret: 'wrong-secret' });
    await assert.rejects(bad.trigger(names.public, 'x', {}), (err) => {
      assert.equal(err.status, 401, `trigger: status ${err.status}, body ${err.body}`);
      assert.equal(typeof JSON.parse(err.body).error, 'string', `body ${err.body}`);
      return true;
    });
    await assert.rejects(bad.get({ path: '/channels' }), (err) => {
      assert.equal(err.status, 401, `get: status ${err.status}, body ${err.body}`);
      return true;
    });
    await assert.rejects(bad.triggerBatch([{ channel: names.public, name: 'x', data: '{}' }]), (err) => {
      assert.equal(err.status, 401, `batch: status ${err.status}, body ${err.body}`);
      return true;
    });
  });

  it('an unknown app id gives 404 and a wrong key 401', async () => {
    const other = serverSdk(server, { appId: '999999' });
    await assert.rejects(other.get({ path: '/channels' }), (err) => {
      assert.ok([401, 404].includes(err.status), `unknown app: status ${err.status}, body ${err.body}`);
      return true;
    });
    const wrongKey = serverSdk(server, { key: 'not-' + APP.key });
    await assert.rejects(wrongKey.get({ path: '/channels' }), (err) => {
      assert.equal(err.status, 401, `wrong key: status ${err.status}, body ${err.body}`);
      return true;
    });
  });

  it('oversized event data gives 413', async () => {
    const big = 'x'.repeat(200 * 1024);
    await assert.rejects(sdk.trigger(names.public, 'big', big), (err) => {
      assert.equal(err.status, 413, `status ${err.status}, body ${err.body}`);
      return true;
    });
  });
});
