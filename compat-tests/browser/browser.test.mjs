// pusher-js's browser build in headless Chromium, served from a local page whose own auth
// endpoint signs with the Node server SDK. Saves a screenshot to <repo>/target/compat-browser.png.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { launchChromium, startPageServer } from '../lib/browser.mjs';
import {
  APP,
  COMPAT_DIR,
  REPO_ROOT,
  PusherServer,
  startCrier,
  serverSdk,
  pusherClient,
  subscribe,
  disconnectAll,
  uniq,
} from '../lib/harness.mjs';


const require = createRequire(import.meta.url);
const SCREENSHOT = join(REPO_ROOT, 'target', 'compat-browser.png');
const PAGE = readFileSync(join(COMPAT_DIR, 'browser', 'page.html'));
const PUSHER_JS = readFileSync(join(COMPAT_DIR, 'node_modules', 'pusher-js', 'dist', 'web', 'pusher.min.js'));

let crier;
let sdk;
let web;
let webPort;
let browser;
const authLog = [];
const clients = [];

/** The page's own HTTP server: the page, pusher.min.js, and POST /pusher/auth. */
function startWeb() {
  const good = new PusherServer({ appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1', useTLS: false });
  const bad = new PusherServer({ appId: APP.id, key: APP.key, secret: 'wrong-secret', host: '127.0.0.1', useTLS: false });
  return startPageServer({
    page: PAGE,
    scripts: { 'pusher.min.js': PUSHER_JS },
    authPaths: ['/pusher/auth'],
    authorize: (_path, form) => {
      const socketId = form.get('socket_id');
      const channel = form.get('channel_name');
      const user = form.get('user');
      authLog.push({ socketId, channel, user });
      // Channels whose name contains "badsig" get a signature made with the wrong secret.
      const signer = channel.includes('badsig') ? bad : good;
      const presence = channel.startsWith('presence-') ? { user_id: user, user_info: { name: `Browser ${user}` } } : undefined;
      return signer.authorizeChannel(socketId, channel, presence);
    },
  });
}

before(async () => {
  crier = await startCrier();
  sdk = serverSdk(crier);
  web = await startWeb();
  webPort = web.address().port;
  browser = await launchChromium();
});

after(async () => {
  disconnectAll(clients);
  if (browser) await browser.close().catch(() => {});
  if (web) await new Promise((r) => web.close(r));
  if (crier) await crier.stop();
});

describe('pusher-js browser build in headless Chromium', { timeout: 90000 }, () => {
  it('subscribes to public, private and presence channels and shows the events in the page', async () => {
    const tag = uniq('b');
    const pub = `browser-public-${tag}`;
    const priv = `private-browser-${tag}`;
    const pres = `presence-browser-${tag}`;
    const badsig = `private-browser-badsig-${tag}`;
    const channels = [pub, priv, pres, badsig];

    const page = await browser.newPage({ viewport: { width: 900, height: 720 } });
    const consoleLines = [];
    page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
    const q = new URLSearchParams({ version: require('pusher-js/package.json').version, key: APP.key, host: '127.0.0.1', port: String(crier.port), user: 'alice', channels: JSON.stringify(channels) });
    await page.goto(`http://127.0.0.1:${webPort}/?${q}`);
    try {

      const diag = async () => `\npage text:\n${await page.innerText('body').catch(() => '?')}\nconsole:\n${consoleLines.join('\n')}`;
      const waitDom = async (selector, what, timeout = 10000) => {
        try {
          await page.waitForSelector(selector, { timeout, state: 'attached' });
        } catch {
          assert.fail(`timed out waiting for ${what} (${selector})${await diag()}`);
        }
      };

      await waitDom('#state[data-state="connected"]', 'the page to connect');
      for (const ch of [pub, priv, pres]) await waitDom(`#subs li[data-channel="${ch}"][data-status="ok"]`, `subscription to ${ch}`);
      await waitDom(`#subs li[data-channel="${badsig}"][data-status="error"]`, `subscription_error on ${badsig}`);
      assert.equal(await page.getAttribute(`#subs li[data-channel="${badsig}"]`, 'data-error-status'), '401');
      assert.equal(await page.getAttribute('#state', 'data-state'), 'connected', 'the auth failure disconnected the page');
      const socketId = await page.evaluate(() => window.crier.pusher.connection.socket_id);
      assert.match(socketId, /^\d+\.\d+$/);
      assert.ok(authLog.some((a) => a.channel === priv && a.socketId === socketId), 'the page never called its auth endpoint');

      // Events published through the HTTP API show up in the page.
      await sdk.trigger(pub, 'news', { headline: 'public works' });
      await sdk.trigger(priv, 'secret', { headline: 'private works' });
      await sdk.trigger(pres, 'roll-call', { headline: 'presence works' });
      await sdk.trigger(badsig, 'leak', { headline: 'must not appear' });
      await waitDom(`#events li[data-channel="${pub}"][data-event="news"]`, 'the public event in the page');
      await waitDom(`#events li[data-channel="${priv}"][data-event="secret"]`, 'the private event in the page');
      await waitDom(`#events li[data-channel="${pres}"][data-event="roll-call"]`, 'the presence event in the page');
      assert.equal(
        await page.textContent(`#events li[data-channel="${pub}"][data-event="news"] .data`),
        JSON.stringify({ headline: 'public works' }),
      );

      // Presence: the page lists itself, then sees a Node client join and leave.
      await page.waitForFunction(() => document.getElementById('member-count').textContent === '1');
      assert.deepEqual(await page.$$eval('#members li', (lis) => lis.map((li) => li.dataset.userId)), ['alice']);
      const bob = pusherClient(crier, { user: { user_id: 'bob', user_info: { name: 'Bob (node)' } } });
      clients.push(bob);
      const bobPres = await subscribe(bob, pres);
      assert.equal(bobPres.members.get('alice')?.info?.name, 'Browser alice');
      await waitDom(`#events li[data-channel="${pres}"][data-event="pusher:member_added"]`, 'member_added in the page');
      await page.waitForFunction(() => document.getElementById('member-count').textContent === '2');

      // Client events both ways on the presence channel; the page sees who sent it.
      const bobGot = new Promise((res) => bobPres.bind('client-hello', (data, meta) => res({ data, meta })));
      await page.evaluate((name) => window.crier.channels[name].trigger('client-hello', { from: 'alice' }), pres);
      const fromPage = await bobGot;
      assert.deepEqual(fromPage.data, { from: 'alice' });
      assert.equal(fromPage.meta?.user_id, 'alice');
      bobPres.trigger('client-hello', { from: 'bob' });
      await waitDom(`#events li[data-channel="${pres}"][data-event="client-hello"][data-user-id="bob"]`, 'client-hello from bob in the page');

      bob.disconnect();
      await waitDom(`#events li[data-channel="${pres}"][data-event="pusher:member_removed"]`, 'member_removed in the page');
      await page.waitForFunction(() => document.getElementById('member-count').textContent === '1');

      // Nothing from the refused channel reached the page, and nothing went wrong in it.
      assert.equal(await page.$$eval(`#events li[data-channel="${badsig}"]`, (l) => l.length), 0);
      assert.deepEqual(
        consoleLines.filter((l) => l.startsWith('pageerror')),
        [],
        `page errors:\n${consoleLines.join('\n')}`,
      );
      assert.equal(await page.getAttribute('#state', 'data-state'), 'connected');
    } finally {
      // Saved whether the test passed or not: it shows what the page got.
      mkdirSync(join(REPO_ROOT, 'target'), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true }).catch(() => {});
      console.log(`screenshot: ${SCREENSHOT}`);
      await page.close();
    }
  });
});
