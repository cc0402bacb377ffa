// Three Crier nodes joined through one throw-away redis-server (same prefix), driven by
// pusher-js, laravel-echo and the Node server SDK, each client on a different node: the cluster
// must behave as one server. Fails (never skips) when redis-server is not installed.

import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import Echo from 'laravel-echo';
import {
  startCrier,
  startRedis,
  serverSdk,
  pusherClient,
  echoOptions,
  record,
  subscribe,
  waitState,
  waitUntil,
  pollUntil,
  withTimeout,
  sentinel,
  disconnectAll,
  uniq,
} from '../lib/harness.mjs';

/** After a sentinel, how long a duplicate still gets to show up before counts are taken. */
const QUIET_MS = 400;

let redis;
/** Nodes A, B, C (handles from startCrier) and an SDK publishing through each. */
const node = {};
const sdk = {};
const clients = [];
const echos = [];

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

/** A pusher-js client connected to node `n` ('A', 'B' or 'C'). */
function client(n, opts = {}) {
  const c = pusherClient(node[n], opts);
  c.node = n;
  clients.push(c);
  return c;
}

/** A laravel-echo instance (pusher-js inside, recorded) connected to node `n`. */
function echo(n, opts = {}) {
  const e = new Echo(echoOptions(node[n], opts));
  record(e.connector.pusher);
  e.connector.pusher.node = n;
  echos.push(e);
  return e;
}
const pusherOf = (e) => e.connector.pusher;

/** Resolves when Echo's `.subscribed()` fires; rejects through `.error()` or on timeout. */
const subscribedVia = (channel, what) =>
  withTimeout(
    new Promise((res, rej) => {
      channel.subscribed(() => res(channel));
      channel.error((err) => rej(new Error(`${what}: .error() fired with ${JSON.stringify(err)}`)));
    }),
    5000,
    `${what}: .subscribed()`,
  );

/** Frames of `event` on `channel` recorded by pusher-js client `c`. */
const framesOf = (c, event, channel) => c.frames.filter((f) => f.event === event && f.channel === channel);

/**
 * Everything sent to the given clients before now has arrived: a sentinel published through
 * node `via` reaches each of them (publishes of one node cross Redis in order), then a quiet
 * period for anything that would take another path.
 */
async function settle(via, pairs) {
  for (const [c, channel] of pairs) await sentinel(sdk[via], c, channel);
  await pause(QUIET_MS);
}

const usersOf = async (via, channel) => {
  const body = await (await sdk[via].get({ path: `/channels/${channel}/users` })).json();
  return body.users.map((u) => u.id).sort();
};

before(async () => {
  redis = await startRedis();
  const prefix = `compat-${process.pid}-${Date.now()}`;
  const started = await Promise.all(
    ['A', 'B', 'C'].map((n) => startCrier({ cluster: { redisUrl: redis.url, prefix, nodeId: `compat-${n.toLowerCase()}` } })),
  );
  ['A', 'B', 'C'].forEach((n, i) => {
    node[n] = started[i];
    sdk[n] = serverSdk(started[i]);
  });
});
afterEach(() => {
  disconnectAll(clients.splice(0));
  for (const e of echos.splice(0)) e.disconnect();
});
after(async () => {
  disconnectAll(clients.splice(0));
  for (const e of echos.splice(0)) e.disconnect();
  await Promise.all(Object.values(node).map((s) => s.stop()));
  if (redis) await redis.stop();
});

describe('cluster 1: API publishes across nodes (public, private, socket_id)', { timeout: 60000 }, () => {
  it('three distinct nodes on distinct ports, all joined through the same Redis', () => {
    const ports = new Set(Object.values(node).map((s) => s.port));
    assert.equal(ports.size, 3, `ports ${[...ports]}`);
    for (const n of ['A', 'B', 'C']) {
      assert.match(node[n].logs(), new RegExp(`cluster: node compat-${n.toLowerCase()} joined through Redis at ${redis.url.replace(/[.]/g, '\\.')}`));
    }
  });

  it('public channel: pusher-js on A and Echo on B each get an API publish through C (or A, or B) exactly once', async () => {
    const name = uniq('cluster-orders.');
    const a = client('A');
    const chA = await subscribe(a, name);
    const gotA = [];
    chA.bind('Shipped', (d) => gotA.push(d));
    chA.bind('App\\Events\\OrderShipped', (d) => gotA.push(d));

    const b = echo('B');
    const chB = b.channel(name);
    const gotB = [];
    chB.listen('.Shipped', (d) => gotB.push(d)); // exact name
    chB.listen('OrderShipped', (d) => gotB.push(d)); // App\Events namespace
    await subscribedVia(chB, `${name} on B`);

    await sdk.C.trigger(name, 'Shipped', { id: 1 });
    await sdk.C.trigger(name, 'App\\Events\\OrderShipped', { id: 2 });
    await waitUntil(a, () => gotA.length >= 2, { what: 'both events on pusher-js (node A)' });
    await waitUntil(pusherOf(b), () => gotB.length >= 2, { what: 'both events on Echo (node B)' });
    await settle('C', [
      [a, name],
      [pusherOf(b), name],
    ]);
    assert.deepEqual(gotA, [{ id: 1 }, { id: 2 }], 'pusher-js on A: each event once, in order');
    assert.deepEqual(gotB, [{ id: 1 }, { id: 2 }], 'Echo on B: each event once, in order');

    // Published on a subscriber's own node: local delivery plus Redis must not make two.
    for (const via of ['A', 'B']) {
      await sdk[via].trigger(name, 'Shipped', { via });
      await waitUntil(a, () => gotA.some((d) => d.via === via), { what: `event published through ${via} on A` });
      await waitUntil(pusherOf(b), () => gotB.some((d) => d.via === via), { what: `event published through ${via} on B` });
      await settle(via, [
        [a, name],
        [pusherOf(b), name],
      ]);
      assert.equal(gotA.filter((d) => d.via === via).length, 1, `pusher-js on A got the publish through ${via} ${JSON.stringify(gotA)}`);
      assert.equal(gotB.filter((d) => d.via === via).length, 1, `Echo on B got the publish through ${via} ${JSON.stringify(gotB)}`);
    }
    assert.equal(framesOf(a, 'Shipped', name).length, 3);
    assert.equal(framesOf(pusherOf(b), 'Shipped', name).length, 3);
  });

  it('private channel: Echo private() on B (customHandler auth) and pusher-js on A, published through C, once each', async () => {
    const name = uniq('App.Models.Order.');
    const b = echo('B');
    const chB = b.private(name);
    const gotB = [];
    chB.listen('.StatusChanged', (d) => gotB.push(d));
    await subscribedVia(chB, `private-${name} on B`);

    const a = client('A');
    const chA = await subscribe(a, `private-${name}`);
    const gotA = [];
    chA.bind('StatusChanged', (d) => gotA.push(d));

    await sdk.C.trigger(`private-${name}`, 'StatusChanged', { status: 'paid' });
    await waitUntil(a, () => gotA.length >= 1, { what: 'StatusChanged on pusher-js (node A)' });
    await waitUntil(pusherOf(b), () => gotB.length >= 1, { what: 'StatusChanged on Echo (node B)' });
    await settle('C', [
      [a, `private-${name}`],
      [pusherOf(b), `private-${name}`],
    ]);
    assert.deepEqual(gotA, [{ status: 'paid' }]);
    assert.deepEqual(gotB, [{ status: 'paid' }]);

    // A wrong signature on node B is still refused there, and the socket stays.
    const bad = echo('B', { authSecret: 'wrong-secret' });
    const err = await withTimeout(new Promise((res) => bad.private(name).error(res)), 5000, ".error() for a wrong signature on B");
    assert.equal(err.status, 401, JSON.stringify(err));
    assert.equal(bad.connectionStatus(), 'connected');
  });

  it('socket_id exclusion crosses nodes: a publish through C skips the excluded socket on A or B only', async () => {
    const name = uniq('cluster-chat.');
    const a = client('A');
    await subscribe(a, name);
    const b = echo('B');
    const gotB = [];
    const chB = b.channel(name);
    chB.listen('.Msg', (d) => gotB.push(d));
    await subscribedVia(chB, `${name} on B`);

    await sdk.C.trigger(name, 'Msg', { n: 1 }, { socket_id: b.socketId() }); // Echo's toOthers
    await sdk.C.trigger(name, 'Msg', { n: 2 }, { socket_id: a.connection.socket_id });
    await a.waitFrame((f) => f.event === 'Msg' && f.data?.n === 1, { what: 'Msg 1 on A' });
    await waitUntil(pusherOf(b), () => gotB.length >= 1, { what: 'Msg 2 on B' });
    await settle('C', [
      [a, name],
      [pusherOf(b), name],
    ]);
    assert.deepEqual(
      framesOf(a, 'Msg', name).map((f) => f.data),
      [{ n: 1 }],
      'A: Msg 1 once, Msg 2 (excluding A) never',
    );
    assert.deepEqual(gotB, [{ n: 2 }], 'B: Msg 2 once, Msg 1 (excluding B) never');
  });

});

describe('cluster 2: presence and channel state are cluster-wide', { timeout: 60000 }, () => {
  it('presence: members, joining() and leaving() are cluster-wide; one user on two nodes counts once', async () => {
    const room = uniq('cluster-room.');
    const channel = `presence-${room}`;
    const ANN = { user_id: 'ann', user_info: { id: 'ann', name: 'Ann' } };
    const BOB = { user_id: 'bob', user_info: { id: 'bob', name: 'Bob' } };

    // Ann: Echo on node A.
    const ann = echo('A', { user: ANN });
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
      'here() for Ann on A',
    );
    assert.deepEqual(annHere, [ANN.user_info], 'here() for Ann on A, first in the room');
    const annMembers = () => pusherOf(ann).channel(channel).members;

    // Bob's first socket: pusher-js on node B sees Ann, Ann sees Bob join.
    const bob1 = client('B', { user: BOB });
    const bob1Ch = await subscribe(bob1, channel);
    const bob1Seen = {};
    bob1Ch.members.each((m) => {
      bob1Seen[m.id] = m.info;
    });
    assert.deepEqual(
      bob1Seen,
      { ann: ANN.user_info, bob: BOB.user_info },
      'subscription_succeeded on node B lists every member of the cluster (Ann is on node A)',
    );
    assert.equal(bob1Ch.members.count, 2);
    assert.equal(bob1Ch.members.me?.id, 'bob');
    await waitUntil(pusherOf(ann), () => joined.length >= 1, { what: "joining() on A for Bob (on B)" });
    assert.deepEqual(joined, [BOB.user_info]);

    // Bob's second socket, on node C: two members there too, no second joining() for Ann.
    const bob2 = client('C', { user: BOB });
    const bob2Ch = await subscribe(bob2, channel);
    assert.equal(bob2Ch.members.count, 2, `members on node C: ${JSON.stringify(bob2Ch.members.members)}`);
    assert.deepEqual(bob2Ch.members.get('ann'), { id: 'ann', info: ANN.user_info });
    await settle('C', [[pusherOf(ann), channel]]);
    assert.deepEqual(joined, [BOB.user_info], 'joining() fired again for the second socket of Bob (on C)');
    assert.equal(annMembers().count, 2);

    // The HTTP API on any node gives cluster totals.
    assert.deepEqual(
      await pollUntil(async () => {
        const ids = await usersOf('C', channel);
        return ids.length === 2 ? ids : { ok: false, ids };
      }, { timeout: 3000, what: `GET /channels/${channel}/users on node C listing ann and bob` }),
      ['ann', 'bob'],
    );
    assert.deepEqual(await usersOf('A', channel), ['ann', 'bob'], 'users on node A');
    // Counts may be aggregated with a short lag: poll, bounded.
    const info = await pollUntil(
      async () => {
        const body = await (await sdk.B.get({ path: `/channels/${channel}`, params: { info: 'user_count' } })).json();
        return body.user_count === 2 ? body : { ok: false, body };
      },
      { timeout: 3000, what: `user_count 2 for ${channel} on node B` },
    );
    assert.equal(info.occupied, true);

    // Bob's socket on B goes: he is still there through C. No leaving() for Ann.
    bob1.disconnect();
    await waitState(bob1, 'disconnected');
    await settle('B', [[pusherOf(ann), channel]]);
    await pause(600); // the close is noticed by node B first; give it time to tell the others
    assert.deepEqual(left, [], "leaving() fired while Bob still had a socket (on node C)");
    assert.equal(annMembers().count, 2);
    assert.deepEqual(await usersOf('A', channel), ['ann', 'bob'], 'users on node A after one of Bob’s sockets left');

    // Bob's last socket (on C) goes: exactly one leaving() on A.
    bob2.disconnect();
    await waitUntil(pusherOf(ann), () => left.length >= 1, { timeout: 5000, what: "leaving() on A for Bob's last socket (on C)" });
    assert.deepEqual(left, [BOB.user_info]);
    await settle('C', [[pusherOf(ann), channel]]);
    await settle('B', [[pusherOf(ann), channel]]);
    assert.deepEqual(left, [BOB.user_info], 'leaving() fired more than once');
    assert.equal(annMembers().count, 1);
    assert.deepEqual(
      await pollUntil(async () => {
        const ids = await usersOf('B', channel);
        return ids.length === 1 ? ids : { ok: false, ids };
      }, { timeout: 3000, what: `GET /channels/${channel}/users on node B listing only ann` }),
      ['ann'],
    );
  });

  it('presence: one user joining on B and C at the same moment is added once; leaving on both at once, removed once', async () => {
    const channel = uniq('presence-cluster-race.');
    const watcher = client('A', { user: { user_id: 'watcher', user_info: { name: 'W' } } });
    const ch = await subscribe(watcher, channel);
    const events = [];
    ch.bind('pusher:member_added', (m) => events.push(['added', m.id]));
    ch.bind('pusher:member_removed', (m) => events.push(['removed', m.id]));
    const ROUNDS = 5;
    for (let r = 0; r < ROUNDS; r += 1) {
      const user = { user_id: `racer-${r}`, user_info: { round: r } };
      const onB = client('B', { user });
      const onC = client('C', { user });
      const [chB, chC] = await Promise.all([subscribe(onB, channel), subscribe(onC, channel)]);
      assert.equal(chB.members.count, 2, `round ${r}: members on B ${JSON.stringify(chB.members.members)}`);
      assert.equal(chC.members.count, 2, `round ${r}: members on C ${JSON.stringify(chC.members.members)}`);
      await waitUntil(watcher, () => events.some((e) => e[0] === 'added' && e[1] === user.user_id), { what: `member_added for ${user.user_id}` });
      onB.disconnect();
      onC.disconnect();
      await waitUntil(watcher, () => events.some((e) => e[0] === 'removed' && e[1] === user.user_id), { what: `member_removed for ${user.user_id}` });
    }
    await settle('B', [[watcher, channel]]);
    await settle('C', [[watcher, channel]]);
    const expected = [];
    for (let r = 0; r < ROUNDS; r += 1) expected.push(['added', `racer-${r}`], ['removed', `racer-${r}`]);
    assert.deepEqual(events, expected, 'member_added / member_removed on A for users joining and leaving on B and C at once');
    assert.equal(ch.members.count, 1);
  });

  it('channel counts through the HTTP API of a node without subscribers are cluster totals', async () => {
    const name = uniq('cluster-count-');
    const a = client('A');
    const b = client('B');
    await subscribe(a, name);
    await subscribe(b, name);
    // Node C has no subscriber of its own.
    const info = await pollUntil(
      async () => {
        const body = await (await sdk.C.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } })).json();
        return body.subscription_count === 2 ? body : { ok: false, body };
      },
      { timeout: 3000, what: `subscription_count 2 for ${name} on node C` },
    );
    assert.equal(info.occupied, true);
    const list = await (await sdk.C.get({ path: '/channels', params: { filter_by_prefix: 'cluster-count-', info: 'subscription_count' } })).json();
    assert.deepEqual(list.channels?.[name], { subscription_count: 2 }, `GET /channels on node C: ${JSON.stringify(list)}`);
    const trig = await (await sdk.C.trigger(name, 'x', {}, { info: 'subscription_count' })).json();
    assert.equal(trig.channels?.[name]?.subscription_count, 2, `trigger info on node C: ${JSON.stringify(trig)}`);

    a.disconnect();
    b.disconnect();
    await pollUntil(
      async () => {
        const body = await (await sdk.C.get({ path: `/channels/${name}` })).json();
        return body.occupied === false ? body : { ok: false, body };
      },
      { timeout: 3000, what: `${name} unoccupied on node C after both subscribers left` },
    );
  });
});

describe('cluster 3: client events across nodes', { timeout: 60000 }, () => {
  it('client events on a private channel: pusher-js on A and Echo whisper()/listenForWhisper() on B, once each, not echoed', async () => {
    const room = uniq('cluster-typing.');
    const channel = `private-${room}`;
    const a = client('A');
    const chA = await subscribe(a, channel);
    const gotA = [];
    chA.bind('client-typing', (d) => gotA.push(d));

    const b = echo('B');
    const chB = b.private(room);
    const gotB = [];
    chB.listenForWhisper('typing', (d) => gotB.push(d));
    await subscribedVia(chB, `${channel} on B`);

    // A third subscriber on C sees both directions.
    const c = client('C');
    await subscribe(c, channel);

    // pusher-js on A -> Echo on B (and C).
    chA.trigger('client-typing', { from: 'A', typing: true });
    await waitUntil(pusherOf(b), () => gotB.length >= 1, { what: 'listenForWhisper() on B for the client event from A' });
    await c.waitFrame((f) => f.event === 'client-typing' && f.data?.from === 'A', { what: 'client-typing from A on C' });
    await settle('A', [
      [a, channel],
      [pusherOf(b), channel],
      [c, channel],
    ]);
    assert.deepEqual(gotB, [{ from: 'A', typing: true }], 'Echo on B: the client event from A once');
    assert.equal(framesOf(c, 'client-typing', channel).length, 1, 'C: the client event from A once');
    assert.deepEqual(gotA, [], 'the client event was echoed to its sender on A');

    // Echo whisper() on B -> pusher-js on A (and C).
    chB.whisper('typing', { from: 'B', typing: false });
    await waitUntil(a, () => gotA.length >= 1, { what: 'client-typing on A for the whisper from B' });
    await c.waitFrame((f) => f.event === 'client-typing' && f.data?.from === 'B', { what: 'whisper from B on C' });
    await settle('B', [
      [a, channel],
      [pusherOf(b), channel],
      [c, channel],
    ]);
    assert.deepEqual(gotA, [{ from: 'B', typing: false }], 'pusher-js on A: the whisper from B once');
    assert.equal(framesOf(c, 'client-typing', channel).filter((f) => f.data?.from === 'B').length, 1, 'C: the whisper from B once');
    assert.deepEqual(gotB, [{ from: 'A', typing: true }], 'the whisper was echoed to its sender on B');
  });
});
