// Headless Debian Chromium for the browser tests, started with the flags this machine needs
// (see shared TESTING-NOTES.md: without the background-networking flags Chromium keeps trying
// hosts that cannot be reached).
import { existsSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

/** `extraArgs`: more Chromium flags, e.g. a certificate pin for the TLS test. */
export async function launchChromium({ extraArgs = [] } = {}) {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      ...extraArgs,
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
}

/**
 * The page's own HTTP server on 127.0.0.1: `GET /` serves `page`, `GET /<name>` serves
 * `scripts[name]`, and a POST to one of `authPaths` is answered with the JSON that
 * `authorize(path, form)` returns (a thrown error becomes a 400), as an app's auth endpoint
 * would answer pusher-js. With `tls` ({ key, cert } in PEM) it serves https. Resolves to the
 * listening server.
 */
export function startPageServer({ page, scripts, authPaths, authorize, tls }) {
  const handler = (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const name = url.pathname.slice(1);
    if (req.method === 'GET' && url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(page);
    } else if (req.method === 'GET' && Object.hasOwn(scripts, name)) {
      res.writeHead(200, { 'content-type': 'application/javascript' });
      res.end(scripts[name]);
    } else if (req.method === 'POST' && authPaths.includes(url.pathname)) {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        try {
          const auth = authorize(url.pathname, new URLSearchParams(body));
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(auth));
        } catch (e) {
          res.writeHead(400, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: String(e) }));
        }
      });
    } else {
      res.writeHead(404);
      res.end();
    }
  };
  const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  return new Promise((res) => server.listen(0, '127.0.0.1', () => res(server)));
}
