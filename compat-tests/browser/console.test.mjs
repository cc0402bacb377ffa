// The debug console (/console) in headless Chromium: sign in with the console token, pick the
// app, and watch what the Node server SDK and pusher-js clients do appear in the live log, the
// figures, the channel list and the presence member list; publish through the page's event
// creator to a pusher-js subscriber; a wrong token shows nothing (and the API answers 401); an
// app secret grants its app. Every page request must go to Crier itself (no CDN). Saves a
// screenshot with traffic to <repo>/target/compat-console.png.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { launchChromium } from '../lib/browser.mjs';
import {
  APP,
  REPO_ROOT,
  startCrier,
  serverSdk,
  pusherClient,
  connected,
  subscribe,
  disconnectAll,
  withTimeout,
  uniq,
} from '../lib/harness.mjs';

const SCREENSHOT = join(REPO_ROOT, 'target', 'compat-console.png');
const TOKEN = `console-${randomBytes(12).toString('hex')}`;

let crier;
let sdk;
let browser;
let hooks;
let hookPort;
const hookEvents = [];
const clients = [];

/** A webhook target answering 200, so the console has webhook_sent lines to show. */
function startHookReceiver() {
  return new Promise((res, rej) => {
    const srv = createServer((req, reply) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        try {
          hookEvents.push(...JSON.parse(body).events);
        } catch {
          /* not ours to check here */
        }
        reply.writeHead(200, { 'content-type': 'text/plain' });
        reply.end('ok');
      });
    });
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => res(srv));
  });
}

before(async () => {
  hooks = await startHookReceiver();
  hookPort = hooks.address().port;
  crier = await startCrier({
    env: {
      CRIER_CONSOLE_TOKEN: TOKEN,
      CRIER_APP_WEBHOOKS: JSON.stringify([{ url: `http://127.0.0.1:${hookPort}/hook` }]),
    },
  });
  sdk = serverSdk(crier);
  browser = await launchChromium();
});

after(async () => {
  disconnectAll(clients);
  if (browser) await browser.close().catch(() => {});
  if (crier) await crier.stop();
  if (hooks) {
    hooks.closeAllConnections?.();
    await new Promise((r) => hooks.close(r));
  }
});

const base = () => `http://127.0.0.1:${crier.port}`;

/**
 * Opens /console in a fresh browser context and submits `token`. Records page errors, console
 * messages and every request the page makes. `waitDom(selector, what)` waits for an element
 * (attached) and fails with the page's text and console output.
 */
async function openConsole(token, { viewport = { width: 1280, height: 800 } } = {}) {
  const page = await browser.newPage({ viewport });
  const consoleLines = [];
  const requests = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.on('request', (r) => requests.push(r.url()));
  const diag = async () =>
    `\npage text:\n${(await page.innerText('body').catch(() => '?')).slice(-4000)}\nconsole:\n${consoleLines.join('\n')}\n(crier log tail)\n${crier.logs().slice(-2000)}`;
  const waitDom = async (selector, what, { timeout = 10000, state = 'attached' } = {}) => {
    try {
      return await page.waitForSelector(selector, { timeout, state });
    } catch {
      assert.fail(`timed out waiting for ${what} (${selector})${await diag()}`);
    }
  };
  const res = await page.goto(`${base()}/console`);
  assert.equal(res.status(), 200, 'GET /console');
  await waitDom('#token', 'the token field');
  await page.fill('#token', token);
  await page.click('#login');
  return { page, consoleLines, requests, waitDom, diag };
}

/** Signs in with `token`, picks the test app and waits for the live stream's hello. */
async function liveConsole(token, opts) {
  const c = await openConsole(token, opts);
  await c.waitDom(`#app-picker option[value="${APP.id}"]`, 'the test app in the app picker');
  await c.page.selectOption('#app-picker', APP.id);
  await c.waitDom('#stream-state[data-state="live"]', 'the live stream');
  return c;
}

/**
 * Every request the page made went to this Crier, and nothing failed in the page (but the
 * browser's own "Failed to load resource" notes for the HTTP statuses in `allow`, answers the
 * test provoked on purpose).
 */
function assertSelfContained(c, { allow = [] } = {}) {
  const foreign = c.requests.filter((u) => !u.startsWith(`${base()}/`) && !u.startsWith('data:'));
  assert.deepEqual(foreign, [], 'the console fetched something from elsewhere');
  const expected = (l) => allow.some((status) => l.includes(`Failed to load resource: the server responded with a status of ${status} `));
  const errors = c.consoleLines.filter((l) => (l.startsWith('pageerror') || l.startsWith('error')) && !expected(l));
  assert.deepEqual(errors, [], `errors in the page:\n${c.consoleLines.join('\n')}`);
}

const line = (type, attrs = '') => `#log .line[data-type="${type}"]${attrs}`;

async function apiFetch(path, { token, headers = {}, ...init } = {}) {
  const h = { ...headers };
  if (token !== undefined) h.authorization = `Bearer ${token}`;
  const res = await fetch(`${base()}/console/api${path}`, { ...init, headers: h });
  const text = await res.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    /* checked by the caller */
  }
  return { status: res.status, type: res.headers.get('content-type'), text, body };
}

describe('debug console in headless Chromium', { timeout: 90000 }, () => {
  it('is 404 on a server without a console token', async () => {
    const plain = await startCrier();
    try {
      for (const path of ['/console', '/console/api/apps']) {
        const res = await fetch(`http://127.0.0.1:${plain.port}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
        await res.arrayBuffer();
        assert.equal(res.status, 404, `GET ${path} without a console token configured`);
      }
    } finally {
      await plain.stop();
    }
  });

  it('shows API events, a client connecting, subscribing and closing, figures and presence members', async () => {
    const c = await liveConsole(TOKEN);
    const { page, waitDom } = c;
    const ada = pusherClient(crier, { user: { user_id: 'ada', user_info: { name: 'Ada' } } });
    clients.push(ada);
    try {
      // An event published with the Node server SDK.
      const ch = uniq('console-news-');
      const data = { headline: 'Crier ships a console', n: 42 };
      await sdk.trigger(ch, 'story-published', data);
      const apiLine = line('api_event', `[data-event="story-published"][data-channel~="${ch}"]`);
      await waitDom(apiLine, 'the API event in the log');
      const apiText = await page.textContent(apiLine);
      for (const part of [ch, 'story-published', JSON.stringify(data)]) {
        assert.ok(apiText.includes(part), `the API event line ${JSON.stringify(apiText)} lacks ${part}`);
      }

      // A pusher-js client connects, subscribes and disconnects.
      const client = pusherClient(crier);
      clients.push(client);
      await connected(client);
      const sid = client.connection.socket_id;
      const sub = uniq('console-sub-');
      await subscribe(client, sub);
      await waitDom(line('connection_opened', `[data-socket-id="${sid}"]`), `connection_opened of ${sid}`);
      await waitDom(line('subscribed', `[data-socket-id="${sid}"][data-channel~="${sub}"]`), `${sid} subscribed to ${sub}`);
      client.disconnect();
      const closedLine = line('connection_closed', `[data-socket-id="${sid}"]`);
      await waitDom(closedLine, `connection_closed of ${sid}`);
      assert.ok((await page.textContent(closedLine)).includes(sid), 'the close line names the socket');
      const order = await page.$$eval(
        '#log .line',
        (lines, id) => lines.filter((l) => l.dataset.socketId === id).map((l) => l.dataset.type),
        sid,
      );
      assert.deepEqual(
        order.filter((t) => ['connection_opened', 'subscribed', 'connection_closed'].includes(t)),
        ['connection_opened', 'subscribed', 'connection_closed'],
        `lines of ${sid} out of order: ${order}`,
      );

      // A presence member: a log line, the channel in the list with its count, its members on click.
      const pres = uniq('presence-console-');
      await subscribe(ada, pres);
      await waitDom(line('member_added', `[data-channel~="${pres}"]`), `member_added on ${pres}`);
      assert.match(await page.textContent(line('member_added', `[data-channel~="${pres}"]`)), /ada/);
      const item = `#channels .channel[data-channel="${pres}"]`;
      await waitDom(`${item}[data-subscription-count="1"][data-user-count="1"]`, `${pres} in the channel list with 1 subscription and 1 user`);
      await page.click(item);
      await waitDom(`#members-panel[data-channel="${pres}"]:not([hidden]) #members li[data-user-id="ada"]`, 'ada in the member list');
      await page.waitForFunction(() => document.getElementById('connections').textContent === '1', null, { timeout: 10000 }).catch(async () => {
        assert.fail(`#connections never showed 1 (it shows ${await page.textContent('#connections')})${await c.diag()}`);
      });

      // The webhook the subscription caused (channel_occupied) was posted and shows as sent.
      await waitDom(line('webhook_sent', '[data-event~="channel_occupied"]'), 'a webhook_sent line for channel_occupied');
      assert.ok(hookEvents.some((e) => e.name === 'channel_occupied'), 'the receiver got channel_occupied');

      assertSelfContained(c);
    } finally {
      ada.disconnect();
      await page.close();
    }
  });

  it('publishes from the event creator to a pusher-js subscriber and logs it', async () => {
    const c = await liveConsole(TOKEN);
    const { page, waitDom } = c;
    const bob = pusherClient(crier);
    clients.push(bob);
    try {
      const ch = uniq('console-created-');
      const channel = await subscribe(bob, ch);
      const got = new Promise((res) => channel.bind('made-in-console', (data) => res(data)));
      const text = '{"hello": "from the console", "n": 1}';
      await page.fill('#send-channel', ch);
      await page.fill('#send-event', 'made-in-console');
      await page.fill('#send-data', text);
      await page.click('#send');
      assert.deepEqual(await withTimeout(got, 5000, 'the console-made event at the pusher-js subscriber'), { hello: 'from the console', n: 1 });
      await waitDom('#send-result[data-state="ok"]', 'the publish confirmation');
      const logged = line('api_event', `[data-event="made-in-console"][data-channel~="${ch}"]`);
      await waitDom(logged, 'the console-made event in the log');
      assert.ok((await page.textContent(logged)).includes(text), 'the log shows the data as published');

      // A refused publish shows the server's reason and reaches nobody.
      await page.fill('#send-channel', 'not a channel!');
      await page.fill('#send-event', 'never');
      await page.click('#send');
      await waitDom('#send-result[data-state="error"]', 'the refusal');
      assert.match(await page.textContent('#send-result'), /^Not published: \S/);
      assert.equal(await page.locator(line('api_event', '[data-event="never"]')).count(), 0);

      assertSelfContained(c, { allow: [400] });
    } finally {
      bob.disconnect();
      await page.close();
    }
  });

  it('shows nothing for a wrong token, and the API answers 401 without a valid one', async () => {
    const c = await openConsole('not-the-console-token');
    const { page, waitDom } = c;
    try {
      await waitDom('#login-error', 'the sign-in error', { state: 'visible' });
      assert.match(await page.textContent('#login-error'), /refused/i);
      assert.equal(await page.isHidden('#app-view'), true, 'the app view is shown');
      assert.equal(await page.locator('#app-picker option').count(), 0, 'an app is offered');
      assert.equal(await page.locator('#log .line').count(), 0, 'log lines are shown');
      assert.deepEqual(c.requests.filter((u) => u.includes('/stream')), [], 'the page opened a stream');
      assertSelfContained(c, { allow: [401] });
    } finally {
      await page.close();
    }

    const refused = [
      ['a wrong token', { token: 'not-the-console-token' }],
      ['no token', {}],
      ['an empty token', { token: '' }],
      ['the app key', { token: APP.key }],
      ['the token without "Bearer"', { headers: { authorization: TOKEN } }],
    ];
    for (const [what, opts] of refused) {
      const r = await apiFetch('/apps', opts);
      assert.equal(r.status, 401, `GET /console/api/apps with ${what}: ${r.text}`);
      assert.equal(typeof r.body?.error, 'string', `the 401 body is not {"error": ...}: ${r.text}`);
    }
    const stream = await apiFetch(`/apps/${APP.id}/stream`, { token: 'not-the-console-token' });
    assert.equal(stream.status, 401, `stream with a wrong token: ${stream.text}`);
    const post = await apiFetch(`/apps/${APP.id}/events`, {
      token: 'not-the-console-token',
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel: 'nope', name: 'nope', data: '{}' }),
    });
    assert.equal(post.status, 401, `publish with a wrong token: ${post.text}`);

    const ok = await apiFetch('/apps', { token: TOKEN });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.body.apps.map((a) => [a.id, a.key]), [[APP.id, APP.key]]);
  });

  it("grants one app to that app's secret", async () => {
    const r = await apiFetch('/apps', { token: APP.secret });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.apps.map((a) => [a.id, a.key]), [[APP.id, APP.key]]);

    const c = await liveConsole(APP.secret);
    const { page, waitDom } = c;
    try {
      const ch = uniq('console-secret-');
      await sdk.trigger(ch, 'seen-with-the-secret', { ok: true });
      await waitDom(line('api_event', `[data-event="seen-with-the-secret"][data-channel~="${ch}"]`), 'the event, signed in with the app secret');
      assertSelfContained(c);
    } finally {
      await page.close();
    }
  });

  it('screenshot with traffic', async () => {
    const c = await liveConsole(TOKEN, { viewport: { width: 1280, height: 800 } });
    const { page, waitDom } = c;
    const pause = (ms) => new Promise((r) => setTimeout(r, ms));
    const member = (id, name) => pusherClient(crier, { user: { user_id: id, user_info: { name } } });
    const [grace, linus, ada] = [member('grace', 'Grace'), member('linus', 'Linus'), member('ada', 'Ada')];
    const forger = pusherClient(crier, { authSecret: 'not-the-secret' });
    const readers = Array.from({ length: 10 }, () => pusherClient(crier));
    const all = [grace, linus, ada, forger, ...readers];
    clients.push(...all);
    try {
      await Promise.all(all.map((cl) => connected(cl)));
      const lobby = 'presence-lobby';
      const [gLobby] = await Promise.all([subscribe(grace, lobby), subscribe(linus, lobby), subscribe(ada, lobby)]);
      await Promise.all(readers.map((r) => subscribe(r, 'orders')));
      await subscribe(readers[0], 'private-inbox-grace');
      const chat = await subscribe(readers[1], 'chat');

      // Some seconds of varying traffic so the chart has a shape: each event on "orders"
      // reaches ten sockets.
      for (const [i, burst] of [1, 3, 5, 2, 4, 6, 3, 1].entries()) {
        await Promise.all(
          Array.from({ length: burst }, (_, k) => sdk.trigger('orders', 'order.shipped', { order: 1000 + i * 10 + k, carrier: 'DHL', items: (k % 3) + 1 })),
        );
        if (i % 3 === 1) gLobby.trigger('client-typing', { typing: i % 2 === 1 });
        await pause(1000);
      }

      // Then one of each kind of line, in order, so the visible end of the log shows them.
      const ken = member('ken', 'Ken');
      all.push(ken);
      clients.push(ken);
      await connected(ken);
      const kenSid = ken.connection.socket_id;
      await subscribe(ken, lobby);
      await waitDom(line('member_added', '[data-channel~="presence-lobby"]'), 'ken joining');
      gLobby.trigger('client-typing', { typing: true });
      await waitDom(line('client_event', '[data-event="client-typing"]'), 'a client event');
      await subscribe(forger, 'private-admin').catch(() => {}); // a wrong signature: refused
      await waitDom(line('subscription_refused', '[data-channel~="private-admin"]'), 'the refused subscription');
      chat.trigger('client-hello', { text: 'client events need a private channel' }); // refused: public channel
      await sdk.trigger(['orders', 'private-inbox-grace'], 'invoice.ready', { invoice: 'INV-2041', amount: '129.00 EUR' });
      await waitDom(line('api_event', '[data-event="invoice.ready"]'), 'invoice.ready');
      linus.disconnect();
      await waitDom(line('member_removed', '[data-channel~="presence-lobby"]'), 'linus leaving');

      await page.fill('#send-channel', lobby);
      await page.fill('#send-event', 'announcement');
      await page.fill('#send-data', '{"text": "Deploy at 17:00, hold your merges"}');
      await page.click('#send');
      await waitDom('#send-result[data-state="ok"]', 'the publish confirmation');
      await waitDom(line('api_event', '[data-event="announcement"]'), 'the announcement in the log');
      await waitDom(line('connection_opened', `[data-socket-id="${kenSid}"]`), "ken's connection");
      await waitDom(`#channels .channel[data-channel="${lobby}"][data-user-count="3"]`, 'the lobby with 3 users');
      await page.click(`#channels .channel[data-channel="${lobby}"]`);
      await page.waitForFunction(() => document.querySelectorAll('#members li[data-user-id]').length === 3, null, { timeout: 10000 });
      await waitDom('#chart canvas', 'the chart');
      assertSelfContained(c);
    } finally {
      mkdirSync(join(REPO_ROOT, 'target'), { recursive: true });
      await page.screenshot({ path: SCREENSHOT }).catch(() => {});
      console.log(`screenshot: ${SCREENSHOT}`);
      disconnectAll(all);
      await page.close();
    }
  });
});
