// The Rust chat example (examples/chat.rs) as a user runs it: an axum app with Crier embedded,
// whose page uses pusher-js (or Laravel Echo) from the npm packages and whose presence auth
// endpoint is built with crier::authorizer. Two Chromium pages, one on pusher-js and one on
// Echo, join the room, see each other, and exchange messages that the app broadcasts with
// `to_others`. The binary is target/release/examples/chat (cargo builds it with the tests).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { launchChromium } from '../lib/browser.mjs';
import { COMPAT_DIR, REPO_ROOT } from '../lib/harness.mjs';

const CHAT_BIN = process.env.CRIER_CHAT_EXAMPLE || join(REPO_ROOT, 'target', 'release', 'examples', 'chat');

let chat;
let chatUrl;
let browser;

/** Starts the example on free ports; resolves once it prints where it listens. */
function startChat() {
  if (!existsSync(CHAT_BIN)) throw new Error(`${CHAT_BIN} not found: build it with cargo build --release --examples`);
  const child = spawn(CHAT_BIN, [], {
    env: {
      ...process.env,
      CHAT_PORT: '0',
      CRIER_PORT: '0',
      PUSHER_JS: join(COMPAT_DIR, 'node_modules', 'pusher-js', 'dist', 'web', 'pusher.min.js'),
      ECHO_JS: join(COMPAT_DIR, 'node_modules', 'laravel-echo', 'dist', 'echo.iife.js'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chat example did not start:\n${output}`)), 20000);
    const onData = (d) => {
      output += d;
      const m = output.match(/chat listening on (http:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1] });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (d) => { output += d; });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`chat example exited with ${code}:\n${output}`)); });
  });
}

before(async () => {
  const started = await startChat();
  chat = started.child;
  chatUrl = started.url;
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (chat) {
    chat.removeAllListeners('exit');
    chat.kill('SIGINT');
  }
});

async function openAs(user, client) {
  // A context each: the user lives in a cookie, as a session would.
  const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  await page.goto(`${chatUrl}/?user=${user}&client=${client}`);
  return { page, problems, context };
}

async function waitDom(who, selector, what) {
  try {
    await who.page.waitForSelector(selector, { timeout: 10000, state: 'attached' });
  } catch {
    const text = await who.page.innerText('body').catch(() => '?');
    assert.fail(`timed out waiting for ${what} (${selector})\npage:\n${text}\n${who.problems.join('\n')}`);
  }
}

async function send(who, text) {
  await who.page.fill('#text', text);
  await who.page.click('#send button');
}

describe('the chat example (axum + embedded Crier) in Chromium', { timeout: 60000 }, () => {
  it('pusher-js and Echo join the presence room through crier::authorizer and chat with to_others', async () => {
    const ada = await openAs('ada', 'pusher');
    const grace = await openAs('grace', 'echo');
    try {
      // Both joined, each sees both members (Echo's here()/joining(), pusher-js's members).
      for (const who of [ada, grace]) {
        await waitDom(who, '#state:has-text("joined")', 'the presence subscription');
        await waitDom(who, '#members li[data-user-id="ada"]', 'ada in the member list');
        await waitDom(who, '#members li[data-user-id="grace"]', 'grace in the member list');
      }

      await send(ada, 'hello from pusher-js');
      await waitDom(grace, '#messages li[data-user="ada"]', "ada's message on grace's page");
      assert.equal(await grace.page.textContent('#messages li[data-user="ada"]'), 'ada: hello from pusher-js');

      await send(grace, 'hello from Echo');
      await waitDom(ada, '#messages li[data-user="grace"]', "grace's message on ada's page");
      // Events on a channel arrive in order: had ada's own message come back to her, it would
      // be here before grace's. to_others left her socket out.
      assert.deepEqual(
        await ada.page.$$eval('#messages li', (lis) => lis.map((li) => li.textContent)),
        ['ada: hello from pusher-js', 'grace: hello from Echo'],
      );
      await waitDom(grace, '#messages li:nth-child(2)', "grace's own message");
      assert.deepEqual(
        await grace.page.$$eval('#messages li', (lis) => lis.map((li) => li.textContent)),
        ['ada: hello from pusher-js', 'grace: hello from Echo'],
      );

      // Leaving is seen too.
      await grace.context.close();
      try {
        await ada.page.waitForSelector('#members li[data-user-id="grace"]', { state: 'detached', timeout: 10000 });
      } catch {
        assert.fail("grace never left ada's member list");
      }
      assert.deepEqual(ada.problems, []);
      assert.deepEqual(grace.problems, []);
    } finally {
      await ada.context.close().catch(() => {});
      await grace.context.close().catch(() => {});
    }
  });

  it('refuses the auth of a channel the user may not join', async () => {
    const body = new URLSearchParams({ socket_id: '1.2', channel_name: 'private-user.grace' });
    const res = await fetch(`${chatUrl}/broadcasting/auth`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: 'user=ada' },
      body,
    });
    assert.equal(res.status, 403);
    const own = await fetch(`${chatUrl}/broadcasting/auth`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: 'user=ada' },
      body: new URLSearchParams({ socket_id: '1.2', channel_name: 'private-user.ada' }),
    });
    assert.equal(own.status, 200);
    assert.match((await own.json()).auth, /^chat-key:[0-9a-f]{64}$/);
  });
});
