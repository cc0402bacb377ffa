// TLS end to end with unmodified clients: Crier serves only TLS (server.tls_cert/tls_key, made
// by a throwaway CA); headless Chromium loads an https page and pusher-js's browser build,
// with forceTLS, connects over wss:// and receives an event the Node SDK publishes over https.
// Chromium trusts nothing but the server key's pin (--ignore-certificate-errors-spki-list);
// the SDK trusts the test CA only, through an https.Agent. Rules: protocol-spec/tls.md.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { launchChromium, startPageServer } from '../lib/browser.mjs';
import { makeTestCerts } from '../lib/certs.mjs';
import { APP, COMPAT_DIR, PusherServer, startCrier, uniq } from '../lib/harness.mjs';

const PAGE = readFileSync(join(COMPAT_DIR, 'browser', 'tls.html'));
const PUSHER_JS = readFileSync(join(COMPAT_DIR, 'node_modules', 'pusher-js', 'dist', 'web', 'pusher.min.js'));

let certs;
let crier;
let web;
let browser;

before(async () => {
  certs = makeTestCerts();
  crier = await startCrier({ serverOptions: { tls_cert: certs.certPath, tls_key: certs.keyPath } });
  web = await startPageServer({
    page: PAGE,
    scripts: { 'pusher.min.js': PUSHER_JS },
    authPaths: [],
    authorize: () => {
      throw new Error('no auth in this test');
    },
    tls: { key: certs.key, cert: certs.cert },
  });
  browser = await launchChromium({ extraArgs: [`--ignore-certificate-errors-spki-list=${certs.spki}`] });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (web) await new Promise((r) => web.close(r));
  if (crier) await crier.stop();
  if (certs) rmSync(certs.dir, { recursive: true, force: true });
});

/** The Node SDK over https, trusting the test CA and nothing else. */
function httpsSdk() {
  return new PusherServer({
    appId: APP.id,
    key: APP.key,
    secret: APP.secret,
    host: 'localhost',
    port: String(crier.port),
    useTLS: true,
    timeout: 5000,
    agent: new https.Agent({ ca: certs.ca }),
  });
}

describe('TLS: pusher-js in headless Chromium over wss://, the Node SDK over https', { timeout: 60000 }, () => {
  it('an https page subscribes over wss:// and shows an event published over https', async () => {
    const channel = `tls-browser-${uniq('t')}`;
    const page = await browser.newPage();
    const consoleLines = [];
    page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
    const diag = async () => `\npage text:\n${await page.innerText('body').catch(() => '?')}\nconsole:\n${consoleLines.join('\n')}\ncrier:\n${crier.logs()}`;
    const waitDom = async (selector, what) => {
      try {
        await page.waitForSelector(selector, { timeout: 10000, state: 'attached' });
      } catch {
        assert.fail(`timed out waiting for ${what} (${selector})${await diag()}`);
      }
    };
    try {
      const q = new URLSearchParams({ key: APP.key, host: 'localhost', port: String(crier.port), channel });
      await page.goto(`https://localhost:${web.address().port}/?${q}`);
      await waitDom('#state[data-state="connected"]', 'pusher-js to connect over wss://');
      assert.equal(await page.evaluate(() => window.crier.pusher.connection.isUsingTLS()), true);
      await waitDom('#subs li[data-status="ok"]', `the subscription to ${channel}`);

      const response = await httpsSdk().trigger(channel, 'tls-event', { over: 'https' });
      assert.equal(response.status, 200);
      await waitDom('#events li[data-event="tls-event"]', 'the event in the page');
      assert.equal(await page.textContent('#events li[data-event="tls-event"]'), JSON.stringify({ over: 'https' }));
    } finally {
      await page.close();
    }
  });

  it('the SDK refuses the server when it does not trust the CA, and plain http is not served', async () => {
    const untrusting = new PusherServer({
      appId: APP.id, key: APP.key, secret: APP.secret, host: 'localhost', port: String(crier.port), useTLS: true, timeout: 5000,
    });
    await assert.rejects(untrusting.trigger('tls-nobody', 'x', {}), (e) => /certificate/i.test(String(e.error?.message)));
    const plain = new PusherServer({
      appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1', port: String(crier.port), useTLS: false, timeout: 5000,
    });
    await assert.rejects(plain.trigger('tls-nobody', 'x', {}));
  });
});
