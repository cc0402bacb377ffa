// Shared helpers for the compatibility tests: start and stop the Crier binary, build clients
// from the public libraries (pusher-js, the `pusher` server SDK) and wait on their events with
// timeouts. Nothing here speaks the Pusher protocol itself; only the raw-socket test does that,
// on purpose, to send garbage.

import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, appendFileSync, existsSync, rmSync, accessSync, constants as fsConstants } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { createHmac } from 'node:crypto';

const require = createRequire(import.meta.url);
// The Node build of pusher-js (its package "main"), and the official Node server SDK.
export const Pusher = require('pusher-js');
export const PusherServer = require('pusher');

export const COMPAT_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = resolve(COMPAT_DIR, '..');
export const CRIER_BIN = process.env.CRIER_BIN || join(REPO_ROOT, 'target', 'release', 'crier');

// The test app. The id is numeric because the Python SDK accepts only numeric ids.
export const APP = Object.freeze({ id: '4242', key: 'compat-key', secret: 'compat-secret' });

/**
 * The app server's end-to-end encryption master key (32 bytes, base64) for `private-encrypted-`
 * channels. Crier never sees it: only the server SDKs (publishing, and `shared_secret` in channel
 * authorizations) use it.
 */
export const ENCRYPTION_MASTER_KEY_B64 = Buffer.from('crier-compat-e2e-master-key-32b!').toString('base64');

const LISTENING_RE = /listening on [^\s:]+:(\d+)/;

/** Every Crier (and redis-server) process this test process started and has not yet seen exit. */
const live = new Set();

function killAllNow() {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
}
process.on('exit', killAllNow);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killAllNow();
    process.exit(130);
  });
}

function configToml(app, extraApp = {}, server = {}) {
  const lines = ['[server]'];
  for (const [k, v] of Object.entries(server)) lines.push(`${k} = ${JSON.stringify(v)}`);
  lines.push('', '[[apps]]');
  const fields = { id: app.id, key: app.key, secret: app.secret, enabled: true, client_events: true, ...extraApp };
  for (const [k, v] of Object.entries(fields)) lines.push(`${k} = ${JSON.stringify(v)}`);
  return lines.join('\n') + '\n';
}

/**
 * Starts Crier on 127.0.0.1 with the test app. `port` 0 (the default) lets the server pick a
 * free port, which it announces on stdout. Resolves to a handle with `port`, `stop()`,
 * `logs()`. `appOptions` adds settings to the `[[apps]]` entry of the config file. `env` adds
 * (or replaces) environment variables of the Crier process, e.g. `CRIER_APP_WEBHOOKS`.
 */
export async function startCrier({ port = 0, appOptions = {}, serverOptions = {}, cluster, env: extraEnv = {}, timeoutMs = 15000 } = {}) {
  if (!existsSync(CRIER_BIN)) {
    throw new Error(`Crier binary not found at ${CRIER_BIN} (build it with cargo build --release, or set CRIER_BIN)`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'crier-compat-'));
  const configFile = join(dir, 'crier.toml');
  writeFileSync(configFile, configToml(APP, appOptions, serverOptions));

  const args = ['--host', '127.0.0.1', '--port', String(port), '--config', configFile];
  if (cluster) {
    args.push('--redis-url', cluster.redisUrl);
    if (cluster.prefix !== undefined) args.push('--redis-prefix', cluster.prefix);
    if (cluster.nodeId !== undefined) args.push('--node-id', cluster.nodeId);
  }
  // A cluster only when asked for: never through CRIER_REDIS_* left in the caller's environment.
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' };
  for (const k of ['CRIER_REDIS_URL', 'CRIER_REDIS_PREFIX', 'CRIER_NODE_ID']) delete env[k];
  Object.assign(env, extraEnv);
  const child = spawn(CRIER_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  live.add(child);
  if (process.env.CRIER_COMPAT_PIDFILE) {
    appendFileSync(process.env.CRIER_COMPAT_PIDFILE, `${child.pid}\n`);
  }
  let log = '';
  let stdout = '';
  const exited = new Promise((res) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      res({ code, signal });
    });
  });
  let exitInfo = null;
  exited.then((info) => {
    exitInfo = info;
  });

  const boundPort = await new Promise((res, rej) => {
    const timer = setTimeout(() => {
      rej(new Error(`Crier did not print "listening on HOST:PORT" within ${timeoutMs} ms. Output:\n${log}`));
    }, timeoutMs);
    const check = () => {
      const m = LISTENING_RE.exec(stdout);
      if (m) {
        clearTimeout(timer);
        res(Number(m[1]));
      }
    };
    child.stdout.on('data', (b) => {
      log += b;
      stdout += b;
      check();
    });
    child.stderr.on('data', (b) => {
      log += b;
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      rej(new Error(`Crier exited (code ${code}, signal ${signal}) before listening. Output:\n${log}`));
    });
  });

  const logWaiters = new Set();
  child.stdout.on('data', () => logWaiters.forEach((w) => w()));
  child.stderr.on('data', () => logWaiters.forEach((w) => w()));
  /** Resolves with the first match of `re` in the output (stdout and stderr) so far or later. */
  const waitLog = (re, { timeout = 5000, what = String(re) } = {}) =>
    new Promise((res, rej) => {
      const done = (fn, v) => {
        logWaiters.delete(check);
        clearTimeout(timer);
        fn(v);
      };
      const check = () => {
        const m = re.exec(log);
        if (m) done(res, m);
        else if (exitInfo) done(rej, new Error(`Crier exited (${JSON.stringify(exitInfo)}) before logging ${what}. Output:\n${log}`));
      };
      const timer = setTimeout(() => done(rej, new Error(`Crier did not log ${what} within ${timeout} ms. Output:\n${log}`)), timeout);
      logWaiters.add(check);
      exited.then(check);
      check();
    });
  if (cluster) {
    // Cross-node messages are dropped until the node's Redis link is up.
    try {
      await waitLog(/cluster: node (\S+) joined through Redis/, { timeout: timeoutMs, what: '"cluster: node … joined through Redis"' });
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    }
  }

  const handle = {
    port: boundPort,
    pid: child.pid,
    wsHost: '127.0.0.1',
    nodeId: cluster?.nodeId,
    logs: () => log,
    waitLog,
    get running() {
      return exitInfo === null;
    },
    /** SIGTERM, then SIGKILL after `graceMs`. Resolves to {code, signal, ms, killed}. */
    async stop({ graceMs = 8000 } = {}) {
      const t0 = Date.now();
      if (exitInfo) return { ...exitInfo, ms: 0, killed: false };
      child.kill('SIGTERM');
      let killed = false;
      const timer = setTimeout(() => {
        killed = true;
        child.kill('SIGKILL');
      }, graceMs);
      const info = await exited;
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
      return { ...info, ms: Date.now() - t0, killed };
    },
  };
  return handle;
}

/** `redis-server` to start: `REDIS_SERVER_BIN`, else the first `redis-server` on the PATH. */
export function redisServerBin() {
  if (process.env.REDIS_SERVER_BIN) return existsSync(process.env.REDIS_SERVER_BIN) ? process.env.REDIS_SERVER_BIN : null;
  for (const dir of (process.env.PATH || '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, 'redis-server');
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      /* not here */
    }
  }
  return null;
}

/** A TCP port that was free a moment ago (bound to 0, then released). */
export function freePort() {
  return new Promise((res, rej) => {
    const srv = createNetServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

/**
 * Starts a throw-away `redis-server` on 127.0.0.1 and a free port, with no persistence, for
 * cluster tests. Throws (never skips) if `redis-server` is not installed. The pid goes to
 * `$CRIER_COMPAT_REDIS_PIDFILE` (run.sh kills what is left at exit) and the process is
 * SIGKILLed if the test process exits without `stop()`. Resolves to {port, url, pid, logs(),
 * stop()}.
 */
export async function startRedis({ timeoutMs = 10000, attempts = 3 } = {}) {
  const bin = redisServerBin();
  if (!bin) {
    const where = process.env.REDIS_SERVER_BIN ? `REDIS_SERVER_BIN=${process.env.REDIS_SERVER_BIN} does not exist` : 'no redis-server on the PATH';
    throw new Error(`redis-server not found (${where}). The cluster compatibility test needs it: apt-get install redis-server`);
  }
  let lastError;
  for (let attempt = 1; attempt <= attempts; attempt += 1) {
    const port = await freePort();
    try {
      return await startRedisOn(bin, port, timeoutMs);
    } catch (e) {
      lastError = e;
      // Another process may have taken the port between the probe and redis's bind: try again.
      if (!/Address already in use/i.test(e.message)) break;
    }
  }
  throw lastError;
}

async function startRedisOn(bin, port, timeoutMs) {
  const child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  if (process.env.CRIER_COMPAT_REDIS_PIDFILE) {
    appendFileSync(process.env.CRIER_COMPAT_REDIS_PIDFILE, `${child.pid}\n`);
  }
  let log = '';
  let exitInfo = null;
  const exited = new Promise((res) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      exitInfo = { code, signal };
      res(exitInfo);
    });
  });
  const spawnError = new Promise((_, rej) => child.once('error', (e) => rej(new Error(`cannot start ${bin}: ${e.message}`))));
  try {
    await Promise.race([
      spawnError,
      new Promise((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`redis-server did not get ready on port ${port} within ${timeoutMs} ms. Output:\n${log}`)), timeoutMs);
        const onData = (b) => {
          log += b;
          if (/Ready to accept connections/.test(log)) {
            clearTimeout(timer);
            res();
          }
        };
        child.stdout.on('data', onData);
        child.stderr.on('data', onData);
        exited.then(({ code, signal }) => {
          clearTimeout(timer);
          rej(new Error(`redis-server exited (code ${code}, signal ${signal}) before it was ready on port ${port}. Output:\n${log}`));
        });
      }),
    ]);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid,
    logs: () => log,
    get running() {
      return exitInfo === null;
    },
    /** SIGTERM (redis exits at once without persistence), SIGKILL after `graceMs`. */
    async stop({ graceMs = 3000 } = {}) {
      if (exitInfo) return exitInfo;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const info = await exited;
      clearTimeout(timer);
      return info;
    },
  };
}

/** Server SDK (pusher-http-node) pointed at the running Crier. */
export function serverSdk(server, { secret = APP.secret, key = APP.key, appId = APP.id, encryptionMasterKeyBase64 } = {}) {
  return new PusherServer({
    appId,
    key,
    secret,
    host: '127.0.0.1',
    port: String(server.port),
    useTLS: false,
    timeout: 5000,
    ...(encryptionMasterKeyBase64 ? { encryptionMasterKeyBase64 } : {}),
  });
}

/**
 * The app's signer for channel authorizations and user sign-in (what its auth endpoint would
 * use): the Node SDK, with the encryption master key so `private-encrypted-` authorizations
 * carry `shared_secret`.
 */
function authSigner(secret) {
  return new PusherServer({
    appId: APP.id,
    key: APP.key,
    secret,
    host: '127.0.0.1',
    useTLS: false,
    encryptionMasterKeyBase64: ENCRYPTION_MASTER_KEY_B64,
  });
}

/**
 * A sign-in token `{auth, user_data}` for an arbitrary `user_data` string, computed as an app's
 * own code would (HMAC-SHA256 of `socket_id::user::user_data`). The SDK's `authenticateUser`
 * refuses user data without a valid id, so tests of the server's own checks use this.
 */
export function rawUserAuth(socketId, userDataString, { secret = APP.secret, key = APP.key } = {}) {
  const sig = createHmac('sha256', secret).update(`${socketId}::user::${userDataString}`).digest('hex');
  return { auth: `${key}:${sig}`, user_data: userDataString };
}

/**
 * A pusher-js client (Node build) connected to Crier. `user` ({user_id, user_info}) is used for
 * presence channels; `authSecret` signs channel authorizations with another secret (to get a
 * wrong signature). Authorization uses the server SDK in a custom handler, as an app's auth
 * endpoint would; its authorizations of `private-encrypted-` channels carry `shared_secret`
 * (the Node build of pusher-js is its "with encryption" variant).
 *
 * `signin` (user data object, e.g. {id, user_info, watchlist}) enables `client.signin()`:
 * pusher-js's `userAuthentication.customHandler` answers with the SDK's
 * `authenticateUser(socketId, signin)`, signed with `signinSecret`.
 */
export function pusherClient(server, { user, authSecret = APP.secret, signin, signinSecret = APP.secret, options = {} } = {}) {
  const signer = authSigner(authSecret);
  const userSigner = authSigner(signinSecret);
  const client = new Pusher(APP.key, {
    cluster: 'compat',
    wsHost: server.wsHost || '127.0.0.1',
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        try {
          const presence = channelName.startsWith('presence-') ? user : undefined;
          cb(null, signer.authorizeChannel(socketId, channelName, presence));
        } catch (e) {
          cb(e, null);
        }
      },
    },
    ...(signin
      ? {
          userAuthentication: {
            customHandler: ({ socketId }, cb) => {
              try {
                cb(null, userSigner.authenticateUser(socketId, signin));
              } catch (e) {
                cb(e, null);
              }
            },
          },
        }
      : {}),
    ...options,
  });
  return record(client);
}

/**
 * Calls pusher-js's `signin()` and resolves once the server answered `pusher:signin_success`
 * and pusher-js's own `#server-to-user-<id>` subscription succeeded. Rejects on a
 * `pusher:error` that arrives instead, or on timeout.
 */
export async function signIn(client, { timeout = 5000 } = {}) {
  const from = client.frames.length;
  client.signin();
  const outcome = await client.waitFrame((f) => f.event === 'pusher:signin_success' || f.event === 'pusher:error', {
    from,
    timeout,
    what: 'pusher:signin_success',
  });
  if (outcome.event === 'pusher:error') {
    throw new Error(`sign-in answered with pusher:error ${JSON.stringify(outcome.data)}`);
  }
  const id = JSON.parse(outcome.data.user_data).id;
  await client.waitFrame((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === `#server-to-user-${id}`, {
    from,
    timeout,
    what: `subscription_succeeded on #server-to-user-${id}`,
  });
  return outcome;
}

/** Options for laravel-echo (broadcaster pusher) pointed at Crier. */
export function echoOptions(server, { user, authSecret = APP.secret, Pusher: P = Pusher } = {}) {
  const signer = authSigner(authSecret);
  return {
    broadcaster: 'pusher',
    Pusher: P,
    key: APP.key,
    cluster: 'compat',
    wsHost: '127.0.0.1',
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    withoutInterceptors: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        try {
          const presence = channelName.startsWith('presence-') ? user : undefined;
          cb(null, signer.authorizeChannel(socketId, channelName, presence));
        } catch (e) {
          cb(e, null);
        }
      },
    },
  };
}

/**
 * Attaches a recorder to a pusher-js client: `client.frames` holds every message the
 * connection decoded ({event, channel, data, user_id}), `client.states` every state change, and
 * `client.errors` every connection `error` event, `client.closes` the WebSocket close of each
 * connection ({code, reason, socket_id}, read from pusher-js's transport). `client.waitFrame(pred)`
 * resolves with the first frame (already received or future) matching `pred`.
 */
export function record(client) {
  client.frames = [];
  client.states = [];
  client.errors = [];
  client.closes = [];
  const waiters = new Set();
  const notify = () => {
    for (const w of waiters) w();
  };
  client.connection.bind('message', (m) => {
    client.frames.push(m);
    notify();
  });
  client.connection.bind('state_change', (s) => {
    client.states.push(s);
    if (s.current === 'connected') {
      // pusher-js reports close codes only as `error` events; its transport carries the close.
      const socketId = client.connection.socket_id;
      const transport = client.connection.connection?.transport;
      const socket = transport?.socket;
      transport?.bind('closed', (ev) => {
        client.closes.push({ code: ev?.code, reason: ev?.reason, socket_id: socketId });
        // After a server-side close with a "refused" code (4000-4099) pusher-js calls close()
        // on its already closed WebSocket client, which then arms a 30 s close timer that does
        // nothing but keep the test process alive. Let the process exit without it.
        setImmediate(() => socket?._closeTimer?.unref?.());
        notify();
      });
    }
    notify();
  });
  client.connection.bind('error', (e) => {
    client.errors.push(e);
    notify();
  });
  client._notify = notify;
  client._waiters = waiters;
  client.waitFrame = (pred, { timeout = 5000, what = 'frame', from = 0 } = {}) =>
    waitUntil(client, () => client.frames.slice(from).find(pred), { timeout, what });
  return client;
}

/**
 * Resolves with the first truthy value of `probe()`, re-evaluated whenever the client records
 * something (and every 50 ms as a backstop). Rejects after `timeout` ms with `what` in the
 * message, plus the frames seen, to make failures readable.
 */
export function waitUntil(client, probe, { timeout = 5000, what = 'condition' } = {}) {
  return new Promise((res, rej) => {
    let done = false;
    const finish = (fn, v) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(poll);
      client?._waiters?.delete(check);
      fn(v);
    };
    const check = () => {
      let v;
      try {
        v = probe();
      } catch (e) {
        finish(rej, e);
        return;
      }
      if (v) finish(res, v);
    };
    const timer = setTimeout(() => {
      const seen = client?.frames ? `\nframes seen by ${client.connection?.socket_id}:\n${describeFrames(client.frames)}` : '';
      finish(rej, new Error(`timed out after ${timeout} ms waiting for ${what}${seen}`));
    }, timeout);
    const poll = setInterval(check, 50);
    client?._waiters?.add(check);
    check();
  });
}

export function describeFrames(frames, max = 40) {
  const shown = frames.slice(-max).map((f) => '  ' + JSON.stringify(f));
  return shown.join('\n') || '  (none)';
}

/** Polls an async function until it returns a truthy value (used for HTTP API state). */
export async function pollUntil(fn, { timeout = 5000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last && last.ok !== false) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Waits for a pusher-js connection to reach `state`. */
export function waitState(client, state, { timeout = 5000 } = {}) {
  return waitUntil(client, () => client.connection.state === state, { timeout, what: `connection state "${state}" (now "${client.connection.state}")` });
}

/**
 * Subscribes and resolves once pusher-js emits `pusher:subscription_succeeded` (with its data,
 * the Members object for presence). Rejects on `pusher:subscription_error` or timeout.
 */
export function subscribe(client, name, { timeout = 5000 } = {}) {
  const channel = client.subscribe(name);
  return subscribed(client, channel, { timeout }).then(() => channel);
}

export function subscribed(client, channel, { timeout = 5000 } = {}) {
  return new Promise((res, rej) => {
    if (channel.subscribed) {
      res(channel);
      return;
    }
    const timer = setTimeout(() => {
      cleanup();
      rej(new Error(`timed out after ${timeout} ms waiting for subscription to ${channel.name}\nframes:\n${describeFrames(client.frames || [])}`));
    }, timeout);
    const ok = () => {
      cleanup();
      res(channel);
    };
    const bad = (err) => {
      cleanup();
      rej(new Error(`subscription to ${channel.name} failed: ${JSON.stringify(err)}`));
    };
    function cleanup() {
      clearTimeout(timer);
      channel.unbind('pusher:subscription_succeeded', ok);
      channel.unbind('pusher:subscription_error', bad);
    }
    channel.bind('pusher:subscription_succeeded', ok);
    channel.bind('pusher:subscription_error', bad);
  });
}

/** Connects and waits for the `connected` state. */
export async function connected(client, { timeout = 5000 } = {}) {
  await waitState(client, 'connected', { timeout });
  return client;
}

/** Disconnects every client given, ignoring errors. */
export function disconnectAll(...clients) {
  for (const c of clients.flat()) {
    try {
      c?.disconnect();
    } catch {
      /* ignore */
    }
  }
}

/** A unique-ish suffix for channel names so tests sharing a server never collide. */
let counter = 0;
export function uniq(prefix) {
  counter += 1;
  return `${prefix}${process.pid}-${counter}`;
}

/** Races `promise` against a timeout whose error names `what`. */
export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Publishes a sentinel through `sdk` and waits for `client` to get it (see the tests). */
export async function sentinel(sdk, client, channel, { timeout = 5000 } = {}) {
  const tag = uniq('s');
  await sdk.trigger(channel, 'compat-sentinel', { tag });
  await client.waitFrame((f) => f.event === 'compat-sentinel' && f.channel === channel && f.data?.tag === tag, {
    what: `sentinel on ${channel}`,
    timeout,
  });
  return client.frames.findIndex((f) => f.event === 'compat-sentinel' && f.data?.tag === tag);
}
