// pusher-js's browser build "pusher-with-encryption" in headless Chromium decrypts events of a
// private-encrypted- channel (key from the page's own /pusher/auth, signed by the Node SDK with
// a master key), and the page signs in through /pusher/user-auth and receives sendToUser events.
// The plain build refuses encrypted channels by itself. Screenshot: target/compat-browser-encrypted.png.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { launchChromium, startPageServer } from '../lib/browser.mjs';
import { APP, COMPAT_DIR, REPO_ROOT, ENCRYPTION_MASTER_KEY_B64, PusherServer, startCrier, serverSdk, uniq } from '../lib/harness.mjs';


const SCREENSHOT = join(REPO_ROOT, 'target', 'compat-browser-encrypted.png');
const PAGE = readFileSync(join(COMPAT_DIR, 'browser', 'encrypted.html'));
const WEB_DIST = join(COMPAT_DIR, 'node_modules', 'pusher-js', 'dist', 'web');
const BUILDS = {
  'pusher-with-encryption.min.js': readFileSync(join(WEB_DIST, 'pusher-with-encryption.min.js')),
  'pusher.min.js': readFileSync(join(WEB_DIST, 'pusher.min.js')),
};

let crier;
let sdk;
let web;
let webPort;
let browser;
const authLog = [];

/** The page's own HTTP server: the page, the two builds, /pusher/auth and /pusher/user-auth. */
function startWeb() {
  const signer = new PusherServer({
    appId: APP.id,
    key: APP.key,
    secret: APP.secret,
    host: '127.0.0.1',
    useTLS: false,
    encryptionMasterKeyBase64: ENCRYPTION_MASTER_KEY_B64,
  });
  return startPageServer({
    page: PAGE,
    scripts: BUILDS,
    authPaths: ['/pusher/auth', '/pusher/user-auth'],
    authorize: (path, form) => {
      const socketId = form.get('socket_id');
      const channel = form.get('channel_name');
      const user = form.get('user');
      authLog.push({ path, socketId, channel, user });
      return path === '/pusher/auth'
        ? signer.authorizeChannel(socketId, channel)
        : signer.authenticateUser(socketId, { id: user, user_info: { name: `Browser ${user}` } });
    },
  });
}

before(async () => {
  crier = await startCrier();
  sdk = serverSdk(crier, { encryptionMasterKeyBase64: ENCRYPTION_MASTER_KEY_B64 });
  web = await startWeb();
  webPort = web.address().port;
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (web) await new Promise((r) => web.close(r));
  if (crier) await crier.stop();
});

/** Opens the page with `params`, runs `fn(page, waitDom)`, screenshots if `shot`, closes. */
async function withPage(params, fn, { shot = false } = {}) {
  const page = await browser.newPage({ viewport: { width: 900, height: 600 } });
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  const q = new URLSearchParams({ key: APP.key, host: '127.0.0.1', port: String(crier.port), ...params });
  await page.goto(`http://127.0.0.1:${webPort}/?${q}`);
  const diag = async () => `\npage text:\n${await page.innerText('body').catch(() => '?')}\nconsole:\n${consoleLines.join('\n')}`;
  const waitDom = async (selector, what, timeout = 10000) => {
    try {
      await page.waitForSelector(selector, { timeout, state: 'attached' });
    } catch {
      assert.fail(`timed out waiting for ${what} (${selector})${await diag()}`);
    }
  };
  try {
    await waitDom('#state[data-state="connected"]', 'the page to connect');
    await fn(page, waitDom);
    assert.deepEqual(
      consoleLines.filter((l) => l.startsWith('pageerror')),
      [],
      `page errors:\n${consoleLines.join('\n')}`,
    );
  } finally {
    if (shot) {
      mkdirSync(join(REPO_ROOT, 'target'), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true }).catch(() => {});
      console.log(`screenshot: ${SCREENSHOT}`);
    }
    await page.close();
  }
}

describe('pusher-js browser builds in headless Chromium: encryption and sign-in', { timeout: 60000 }, () => {
  it('pusher-with-encryption.min.js decrypts private-encrypted- events published by the SDK', async () => {
    const enc = `private-encrypted-browser-${uniq('e')}`;
    await withPage(
      { build: 'pusher-with-encryption.min.js', user: 'enc-user', channels: JSON.stringify([enc]) },
      async (page, waitDom) => {
        await waitDom(`#subs li[data-channel="${enc}"][data-status="ok"]`, `subscription to ${enc}`);
        assert.ok(authLog.some((a) => a.channel === enc), 'the page never asked its auth endpoint');
        const payload = { secret: 'decrypted in the browser', n: 7, s: 'ünï ✓' };
        await sdk.trigger(enc, 'sealed', payload);
        await waitDom(`#events li[data-channel="${enc}"][data-event="sealed"]`, 'the decrypted event in the page');
        assert.equal(await page.textContent(`#events li[data-channel="${enc}"][data-event="sealed"] .data`), JSON.stringify(payload));
        // Client events cannot be sent by this build; the page stays connected.
        const thrown = await page.evaluate((name) => {
          try {
            window.crier.channels[name].trigger('client-x', {});
            return null;
          } catch (e) {
            return String(e.message);
          }
        }, enc);
        assert.match(String(thrown), /not currently supported/);
        assert.equal(await page.getAttribute('#state', 'data-state'), 'connected');
      },
      { shot: true },
    );
  });

  it('the plain pusher.min.js refuses private-encrypted- channels itself (no nacl)', async () => {
    const enc = `private-encrypted-browser-${uniq('p')}`;
    await withPage({ build: 'pusher.min.js', user: 'plain-user', channels: JSON.stringify([enc]) }, async (page, waitDom) => {
      await waitDom(`#subs li[data-channel="${enc}"][data-status="error"]`, 'pusher-js refusing the channel');
      assert.match(String(await page.getAttribute(`#subs li[data-channel="${enc}"]`, 'data-error')), /no nacl implementation/);
    });
  });

  it('signin() through /pusher/user-auth, then sendToUser events reach the page', async () => {
    const user = uniq('browser-user-');
    await withPage({ build: 'pusher-with-encryption.min.js', user, signin: '1' }, async (page, waitDom) => {
      await waitDom('#signin:not([data-status="pending"])', 'an answer to the sign-in in the page');
      assert.equal(await page.getAttribute('#signin', 'data-status'), 'ok', `sign-in: ${await page.textContent('#signin')}`);
      assert.ok(authLog.some((a) => a.path === '/pusher/user-auth' && a.user === user), 'the page never asked its user-auth endpoint');
      // pusher-js subscribes to #server-to-user-<id> right after signin_success.
      await page.waitForFunction(() => window.crier.pusher.user.serverToUserChannel?.subscribed === true, null, { timeout: 5000 });
      await sdk.sendToUser(user, 'notice', { text: 'for the browser user' });
      await waitDom('#events li[data-channel="user"][data-event="notice"]', 'the sendToUser event in the page');
      assert.equal(await page.textContent('#events li[data-channel="user"][data-event="notice"] .data'), JSON.stringify({ text: 'for the browser user' }));
    });
  });
});
