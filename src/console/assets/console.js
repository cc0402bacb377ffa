// Crier debug console. Plain JavaScript, no build step, no framework; uPlot (vendored, global
// `uPlot`) draws the chart. Talks only to this server's /console/api with the token as a Bearer
// header; the live stream is read with fetch() because EventSource cannot send that header.
(function () {
  'use strict';

  var MAX_LINES = 2000; // log lines kept in the page
  var CHART_SECONDS = 300; // the chart shows the last 5 minutes
  var MAX_CHANNELS_SHOWN = 300;
  var TOKEN_KEY = 'crier-console-token';

  /** Line types grouped for the toggles above the log; `dropped` and `system` always show. */
  var GROUPS = [
    { id: 'connections', label: 'connections', color: 'var(--c-open)', types: ['connection_opened', 'connection_closed'] },
    { id: 'subscriptions', label: 'subscriptions', color: 'var(--c-sub)', types: ['subscribed', 'unsubscribed', 'subscription_refused'] },
    { id: 'api', label: 'API events', color: 'var(--c-api)', types: ['api_event'] },
    { id: 'client', label: 'client events', color: 'var(--c-client)', types: ['client_event'] },
    { id: 'presence', label: 'presence', color: 'var(--c-join)', types: ['member_added', 'member_removed'] },
    { id: 'webhooks', label: 'webhooks', color: 'var(--c-hook)', types: ['webhook_sent', 'webhook_failed'] },
    { id: 'errors', label: 'errors', color: 'var(--c-error)', types: ['error'] },
  ];
  var GROUP_OF = {};
  GROUPS.forEach(function (g) {
    g.types.forEach(function (t) {
      GROUP_OF[t] = g.id;
    });
  });

  var LABELS = {
    connection_opened: 'connect',
    connection_closed: 'close',
    subscribed: 'subscribe',
    unsubscribed: 'unsub',
    subscription_refused: 'refused',
    api_event: 'api',
    client_event: 'client',
    member_added: 'join',
    member_removed: 'leave',
    webhook_sent: 'webhook',
    webhook_failed: 'hook fail',
    error: 'error',
    dropped: 'dropped',
    system: 'console',
  };

  function $(id) {
    return document.getElementById(id);
  }

  var state = {
    token: null,
    apps: [],
    app: null, // {id, key}
    gen: 0, // bumped whenever the stream must stop (app switch, sign-out)
    abort: null,
    cluster: false,
    node: null,
    paused: false,
    pending: [], // messages that arrived while paused
    pendingSkipped: 0,
    queue: [], // messages waiting to be drawn
    flushTimer: null,
    hiddenGroups: {},
    filterChannel: '',
    filterEvent: '',
    channels: [], // from the latest stats
    channelTotal: 0,
    channelEls: new Map(),
    selected: null, // channel name whose details are shown
    membersGen: 0,
    membersTimer: null,
    chart: null,
    chartData: [[], [], [], [], []],
  };

  // ------------------------------------------------------------------------------------------
  // Small helpers
  // ------------------------------------------------------------------------------------------
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function sleep(ms) {
    return new Promise(function (r) {
      setTimeout(r, ms);
    });
  }

  function pad(n, w) {
    var s = String(n);
    while (s.length < w) s = '0' + s;
    return s;
  }

  function clock(ms) {
    var d = new Date(typeof ms === 'number' ? ms : Date.now());
    return pad(d.getHours(), 2) + ':' + pad(d.getMinutes(), 2) + ':' + pad(d.getSeconds(), 2) + '.' + pad(d.getMilliseconds(), 3);
  }

  function fmt(v) {
    if (typeof v !== 'number' || !isFinite(v)) return '–';
    if (Number.isInteger(v)) return v.toLocaleString('en-US');
    return v.toLocaleString('en-US', { maximumFractionDigits: 1 });
  }

  function channelKind(name) {
    if (name.indexOf('presence-') === 0) return 'presence';
    if (name.indexOf('private-') === 0) return 'private';
    return 'public';
  }

  function plural(n, one, many) {
    return n === 1 ? one : many;
  }

  // ------------------------------------------------------------------------------------------
  // The console API
  // ------------------------------------------------------------------------------------------
  function authHeaders(extra) {
    var h = { Authorization: 'Bearer ' + state.token };
    if (extra) Object.keys(extra).forEach(function (k) {
      h[k] = extra[k];
    });
    return h;
  }

  /** Calls /console/api + path; resolves with the JSON body, rejects with {status, message}. */
  function api(path, opts) {
    opts = opts || {};
    var init = { method: opts.method || 'GET', cache: 'no-store', headers: authHeaders(opts.body !== undefined ? { 'Content-Type': 'application/json' } : null) };
    if (opts.body !== undefined) init.body = JSON.stringify(opts.body);
    return fetch('/console/api' + path, init).then(function (res) {
      return res.text().then(function (text) {
        var body = null;
        try {
          body = text ? JSON.parse(text) : null;
        } catch (e) {
          body = null;
        }
        if (!res.ok) {
          var err = new Error((body && typeof body.error === 'string' && body.error) || 'HTTP ' + res.status + (res.statusText ? ' ' + res.statusText : ''));
          err.status = res.status;
          throw err;
        }
        return body;
      });
    });
  }

  function appPath(suffix) {
    return '/apps/' + encodeURIComponent(state.app.id) + suffix;
  }

  // ------------------------------------------------------------------------------------------
  // Sign in / out and the app picker
  // ------------------------------------------------------------------------------------------
  function showView(view) {
    document.body.dataset.view = view;
    $('login-view').hidden = view !== 'login';
    $('app-view').hidden = view !== 'app';
    $('app-bar').hidden = view !== 'app';
    $('logout').hidden = view !== 'app';
    if (view !== 'app') {
      $('node-info').hidden = true;
      setStreamState('idle');
    }
  }

  function showLoginError(message) {
    var e = $('login-error');
    e.textContent = message;
    e.hidden = !message;
  }

  function signIn(token, fromStorage) {
    state.token = token;
    var button = $('login');
    button.disabled = true;
    showLoginError('');
    return api('/apps')
      .then(function (body) {
        var apps = (body && Array.isArray(body.apps) ? body.apps : []).map(function (a) {
          return { id: String(a.id), key: a.key == null ? '' : String(a.key), enabled: a.enabled !== false };
        });
        if (!apps.length) {
          var err = new Error('This token grants no app.');
          err.status = 403;
          throw err;
        }
        try {
          sessionStorage.setItem(TOKEN_KEY, token);
        } catch (e) {
          /* storage unavailable: sign in again after a reload */
        }
        state.apps = apps;
        fillPicker(apps);
        showView('app');
        var wanted = (/(?:^#|&)app=([^&]*)/.exec(location.hash) || [])[1];
        wanted = wanted ? decodeURIComponent(wanted) : null;
        var first = apps.find(function (a) {
          return a.id === wanted;
        }) || apps[0];
        selectApp(first.id);
      })
      .catch(function (e) {
        state.token = null;
        forgetToken();
        fillPicker([]);
        showView('login');
        if (e.status === 401) showLoginError(fromStorage ? 'Signed out: the saved token is no longer accepted.' : 'Token refused: it is neither the console token nor an app secret.');
        else showLoginError(e.status ? e.message : 'Cannot reach the server: ' + e.message);
      })
      .finally(function () {
        button.disabled = false;
      });
  }

  function forgetToken() {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) {
      /* ignore */
    }
  }

  function signOut(message) {
    stopStream();
    state.token = null;
    state.app = null;
    state.apps = [];
    forgetToken();
    fillPicker([]);
    resetAppView();
    showView('login');
    showLoginError(message || '');
    $('token').value = '';
    $('token').focus();
  }

  function fillPicker(apps) {
    var picker = $('app-picker');
    picker.textContent = '';
    apps.forEach(function (a) {
      var o = el('option', null, (a.key ? a.id + '  ·  ' + a.key : a.id) + (a.enabled === false ? '  (disabled)' : ''));
      o.value = a.id;
      picker.appendChild(o);
    });
    picker.title = apps.length < 2 ? 'The token grants this app only' : apps.length + ' apps';
  }

  function selectApp(id) {
    if (state.app && state.app.id === id && state.abort) return;
    var app = state.apps.find(function (a) {
      return a.id === id;
    });
    if (!app) return;
    stopStream();
    state.app = app;
    $('app-picker').value = app.id;
    try {
      history.replaceState(null, '', '#app=' + encodeURIComponent(app.id));
    } catch (e) {
      /* ignore */
    }
    document.title = 'Crier console · ' + app.id;
    resetAppView();
    runStream(state.gen, app);
  }

  function resetAppView() {
    clearLog();
    state.channels = [];
    state.channelEls.forEach(function (li) {
      li.remove();
    });
    state.channelEls.clear();
    closeChannel();
    ['connections', 'channel-count', 'sent-rate', 'received-rate', 'api-rate'].forEach(function (id) {
      $(id).textContent = '–';
    });
    $('channels-empty').hidden = false;
    $('channels-more').hidden = true;
    state.chartData = [[], [], [], [], []];
    if (state.chart) state.chart.setData(state.chartData);
  }

  // ------------------------------------------------------------------------------------------
  // The live stream (Server-Sent Events framing over fetch)
  // ------------------------------------------------------------------------------------------
  function stopStream() {
    state.gen += 1;
    if (state.abort) {
      try {
        state.abort.abort();
      } catch (e) {
        /* ignore */
      }
    }
    state.abort = null;
  }

  var STREAM_TEXT = { idle: 'not connected', connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…', error: 'error' };

  function setStreamState(s, detail) {
    var p = $('stream-state');
    p.dataset.state = s;
    p.textContent = STREAM_TEXT[s] || s;
    p.title = detail || '';
  }

  function runStream(gen, app) {
    var attempt = 0;
    var everLive = false;

    function once() {
      if (gen !== state.gen) return Promise.resolve();
      var ctrl = new AbortController();
      state.abort = ctrl;
      setStreamState(attempt ? 'reconnecting' : 'connecting');
      return fetch('/console/api/apps/' + encodeURIComponent(app.id) + '/stream', {
        headers: authHeaders({ Accept: 'text/event-stream' }),
        cache: 'no-store',
        signal: ctrl.signal,
      })
        .then(function (res) {
          if (res.status === 401) {
            var e401 = new Error('token refused');
            e401.status = 401;
            throw e401;
          }
          if (!res.ok || !res.body) {
            return res.text().then(function (text) {
              var msg = 'HTTP ' + res.status;
              try {
                msg = JSON.parse(text).error || msg;
              } catch (e) {
                /* not JSON */
              }
              var err = new Error(msg);
              err.status = res.status;
              throw err;
            });
          }
          return readEvents(res.body, gen, function (m) {
            if (m.type === 'hello') {
              attempt = 0;
              setStreamState('live');
              if (everLive) systemLine('Stream reconnected.');
              everLive = true;
            }
            onMessage(m);
          });
        })
        .then(function () {
          if (gen !== state.gen) return;
          throw new Error('the server ended the stream');
        })
        .catch(function (e) {
          if (gen !== state.gen) return; // stopped on purpose
          if (e.status === 401) {
            signOut('Signed out: the token is no longer accepted.');
            return;
          }
          attempt += 1;
          var wait = Math.min(1000 * Math.pow(2, attempt - 1), 10000);
          setStreamState('reconnecting', e.message);
          systemLine('Stream lost (' + e.message + '); retrying in ' + Math.round(wait / 1000) + ' s.');
          return sleep(wait).then(once);
        });
    }
    return once();
  }

  /** Reads `data: <json>` messages separated by blank lines; `: comments` are skipped. */
  function readEvents(body, gen, onEvent) {
    var reader = body.getReader();
    var decoder = new TextDecoder();
    var buf = '';
    function pump() {
      return reader.read().then(function (r) {
        if (gen !== state.gen) {
          reader.cancel().catch(function () {});
          return;
        }
        if (r.done) return;
        buf += decoder.decode(r.value, { stream: true });
        var m;
        var sep = /\r?\n\r?\n/;
        while ((m = sep.exec(buf))) {
          var block = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          var data = [];
          block.split(/\r?\n/).forEach(function (line) {
            if (line.indexOf('data:') === 0) data.push(line.slice(line.charAt(5) === ' ' ? 6 : 5));
          });
          if (!data.length) continue;
          var msg;
          try {
            msg = JSON.parse(data.join('\n'));
          } catch (e) {
            console.warn('crier console: unreadable stream message', data.join('\n'));
            continue;
          }
          if (msg && typeof msg === 'object') {
            try {
              onEvent(msg);
            } catch (e) {
              console.error('crier console: cannot show', msg, e);
            }
          }
        }
        return pump();
      });
    }
    return pump();
  }

  function onMessage(m) {
    switch (m.type) {
      case 'hello':
        state.cluster = !!m.cluster;
        state.node = m.node == null ? null : String(m.node);
        var info = $('node-info');
        info.textContent = state.cluster ? 'cluster · node ' + (state.node || '?') : state.node ? 'node ' + state.node : '';
        info.hidden = !info.textContent;
        if (!state.queue.length && !$('log').children.length) systemLine('Watching app ' + (m.app_id || state.app.id) + (state.node ? ' on node ' + state.node : '') + '.');
        return;
      case 'stats':
        onStats(m);
        return;
      case 'member_added':
      case 'member_removed':
        if (m.channel === state.selected) scheduleMembers();
        break;
      default:
        break;
    }
    addLine(m);
  }

  // ------------------------------------------------------------------------------------------
  // The log
  // ------------------------------------------------------------------------------------------
  function systemLine(text) {
    addLine({ type: 'system', time: Date.now(), text: text });
  }

  function addLine(m) {
    if (state.paused && m.type !== 'system') {
      state.pending.push(m);
      if (state.pending.length > MAX_LINES) {
        state.pendingSkipped += state.pending.length - MAX_LINES;
        state.pending.splice(0, state.pending.length - MAX_LINES);
      }
      updatePauseButton();
      return;
    }
    state.queue.push(m);
    if (!state.flushTimer) state.flushTimer = setTimeout(flush, 30);
  }

  function flush() {
    state.flushTimer = null;
    var log = $('log');
    var q = state.queue;
    state.queue = [];
    if (q.length > MAX_LINES) q = q.slice(q.length - MAX_LINES);
    var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    var frag = document.createDocumentFragment();
    q.forEach(function (m) {
      var line;
      try {
        line = renderLine(m);
      } catch (e) {
        console.error('crier console: cannot render', m, e);
        return;
      }
      line.classList.toggle('filtered', !lineMatches(line));
      frag.appendChild(line);
    });
    log.appendChild(frag);
    var extra = log.children.length - MAX_LINES;
    while (extra-- > 0) log.removeChild(log.firstChild);
    if (atBottom) log.scrollTop = log.scrollHeight;
    else $('jump').hidden = false;
    updateLineCount();
  }

  /** A line's parts: [class, text] pairs (or plain strings), channels, event names, socket, data. */
  function describe(m) {
    var p = [];
    var d = { parts: p, channels: [], events: [], socket: null, data: null };
    function sock(id) {
      p.push(['k', 'socket '], ['sid', id == null ? '?' : id]);
      d.socket = id == null ? null : String(id);
    }
    function chan(name) {
      p.push(['ch', name]);
      d.channels.push(String(name));
    }
    function ev(name) {
      p.push(['ev', name]);
      d.events.push(String(name));
    }
    switch (m.type) {
      case 'connection_opened':
        sock(m.socket_id);
        p.push(' connected');
        if (m.origin) p.push(['k', ' · origin '], ['url', m.origin]);
        else p.push(['k', ' · no origin']);
        break;
      case 'connection_closed':
        sock(m.socket_id);
        p.push(' closed');
        if (m.code == null) p.push(['k', ' · '], ['code', 'dropped without close']);
        else p.push(['k', ' · code '], ['code', m.code]);
        if (m.reason) p.push(['k', ' · '], ['reason', m.reason]);
        break;
      case 'subscribed':
        sock(m.socket_id);
        p.push(' subscribed to ');
        chan(m.channel);
        break;
      case 'unsubscribed':
        sock(m.socket_id);
        p.push(' unsubscribed from ');
        chan(m.channel);
        break;
      case 'subscription_refused':
        sock(m.socket_id);
        p.push(' refused ');
        chan(m.channel);
        if (m.status != null) p.push(['k', ' · '], ['code', m.status]);
        if (m.reason) p.push(['k', ' · '], ['reason', m.reason]);
        break;
      case 'api_event':
        ev(m.event);
        p.push(['k', ' on ']);
        (m.channels || []).forEach(function (c, i) {
          if (i) p.push(['k', ', ']);
          chan(c);
        });
        if (m.socket_id != null) {
          p.push(['k', ' · excluding ']);
          sock(m.socket_id);
        }
        d.data = m.data;
        break;
      case 'client_event':
        ev(m.event);
        p.push(['k', ' on ']);
        chan(m.channel);
        p.push(['k', ' from ']);
        sock(m.socket_id);
        if (m.user_id != null) p.push(['k', ' · user '], ['uid', m.user_id]);
        d.data = m.data;
        break;
      case 'member_added':
      case 'member_removed':
        p.push(['k', 'user '], ['uid', m.user_id], m.type === 'member_added' ? ' joined ' : ' left ');
        chan(m.channel);
        break;
      case 'webhook_sent':
      case 'webhook_failed':
        (m.events || []).forEach(function (name, i) {
          if (i) p.push(['k', ', ']);
          ev(name);
        });
        if (!(m.events || []).length) p.push(['k', '(no events)']);
        p.push(['k', ' → '], ['url', m.url]);
        if (m.type === 'webhook_sent') p.push(['k', ' · '], ['code', m.status]);
        else p.push(['k', ' · failed: '], ['reason', m.error]);
        break;
      case 'error':
        if (m.socket_id != null) {
          sock(m.socket_id);
          p.push(['k', ' · ']);
        }
        if (m.code != null) p.push(['code', m.code], ' ');
        p.push(['reason', m.message == null ? '' : m.message]);
        break;
      case 'dropped':
        var n = Number(m.count) || 0;
        p.push(n.toLocaleString('en-US') + ' ' + plural(n, 'line', 'lines') + ' dropped');
        p.push(['k', ' · this console read too slowly; the server skipped them']);
        break;
      case 'system':
        p.push(m.text);
        break;
      default:
        // A type this page does not know yet: show its fields as they are.
        var rest = {};
        Object.keys(m).forEach(function (k) {
          if (k !== 'type' && k !== 'time' && k !== 'node') rest[k] = m[k];
        });
        p.push(['reason', JSON.stringify(rest)]);
        if (typeof m.channel === 'string') d.channels.push(m.channel);
        if (typeof m.event === 'string') d.events.push(m.event);
    }
    return d;
  }

  function renderLine(m) {
    var d = describe(m);
    var line = el('div', 'line');
    line.dataset.type = String(m.type);
    if (d.channels.length) line.dataset.channel = d.channels.join(' ');
    if (d.events.length) line.dataset.event = d.events.join(' ');
    if (d.socket) line.dataset.socketId = d.socket;
    line._channels = d.channels.map(function (c) {
      return c.toLowerCase();
    });
    line._events = d.events.map(function (e) {
      return e.toLowerCase();
    });
    line._group = GROUP_OF[m.type] || null;

    line.appendChild(el('span', 'line-time', clock(m.time)));
    var label = el('span', 'line-type', LABELS[m.type] || m.type);
    label.title = String(m.type);
    line.appendChild(label);
    var body = el('span', 'line-body');
    d.parts.forEach(function (part) {
      if (typeof part === 'string') body.appendChild(document.createTextNode(part));
      else body.appendChild(el('span', part[0], part[1] == null ? '' : part[1]));
    });
    var raw = null;
    var data = null;
    if (d.data != null) {
      raw = typeof d.data === 'string' ? d.data : JSON.stringify(d.data);
      body.appendChild(document.createTextNode('  '));
      data = el('span', 'data', raw);
      body.appendChild(data);
      line.classList.add('has-data');
      line.title = 'Click to expand the data';
    }
    if (state.cluster && m.node != null) body.appendChild(el('span', 'line-node', '@' + m.node));
    line.appendChild(body);
    // A click unfolds the line: long reasons wrap, JSON data is shown indented.
    line.addEventListener('click', function () {
      if (window.getSelection && String(window.getSelection()).length) return; // selecting text
      var open = line.classList.toggle('expanded');
      if (data) data.textContent = open ? pretty(raw) : raw;
    });
    return line;
  }

  function pretty(raw) {
    try {
      return JSON.stringify(JSON.parse(raw), null, 2);
    } catch (e) {
      return raw;
    }
  }

  function lineMatches(line) {
    var type = line.dataset.type;
    if (type === 'dropped' || type === 'system') return true;
    if (line._group && state.hiddenGroups[line._group]) return false;
    var fc = state.filterChannel;
    if (fc && !line._channels.some(function (c) {
      return c.indexOf(fc) !== -1;
    })) return false;
    var fe = state.filterEvent;
    if (fe && !line._events.some(function (e) {
      return e.indexOf(fe) !== -1;
    })) return false;
    return true;
  }

  function applyFilters() {
    state.filterChannel = $('filter-channel').value.trim().toLowerCase();
    state.filterEvent = $('filter-event').value.trim().toLowerCase();
    var lines = $('log').children;
    for (var i = 0; i < lines.length; i++) lines[i].classList.toggle('filtered', !lineMatches(lines[i]));
    updateLineCount();
    var log = $('log');
    log.scrollTop = log.scrollHeight;
    $('jump').hidden = true;
  }

  function updateLineCount() {
    var log = $('log');
    var total = log.children.length;
    var hidden = log.querySelectorAll('.line.filtered').length;
    var text = total.toLocaleString('en-US') + ' ' + plural(total, 'line', 'lines');
    if (hidden) text += ' · ' + (total - hidden).toLocaleString('en-US') + ' shown';
    $('line-count').textContent = text;
  }

  function clearLog() {
    $('log').textContent = '';
    state.queue = [];
    state.pending = [];
    state.pendingSkipped = 0;
    $('jump').hidden = true;
    updatePauseButton();
    updateLineCount();
  }

  function setPaused(paused) {
    state.paused = paused;
    if (!paused) {
      var pending = state.pending;
      var skipped = state.pendingSkipped;
      state.pending = [];
      state.pendingSkipped = 0;
      if (skipped) systemLine(skipped.toLocaleString('en-US') + ' older ' + plural(skipped, 'line', 'lines') + ' skipped while paused (the log keeps ' + MAX_LINES + ').');
      pending.forEach(addLine);
    }
    updatePauseButton();
  }

  function updatePauseButton() {
    var b = $('pause');
    b.setAttribute('aria-pressed', state.paused ? 'true' : 'false');
    var n = state.pending.length + state.pendingSkipped;
    b.textContent = state.paused ? 'Resume' + (n ? ' (' + n.toLocaleString('en-US') + ' new)' : '') : 'Pause';
  }

  function buildChips() {
    var box = $('type-chips');
    GROUPS.forEach(function (g) {
      var c = el('button', 'chip', g.label);
      c.type = 'button';
      c.dataset.group = g.id;
      c.style.setProperty('--chip-color', g.color);
      c.setAttribute('aria-pressed', 'true');
      c.title = 'Show or hide ' + g.label;
      c.addEventListener('click', function () {
        var hide = !state.hiddenGroups[g.id];
        state.hiddenGroups[g.id] = hide;
        c.setAttribute('aria-pressed', hide ? 'false' : 'true');
        applyFilters();
      });
      box.appendChild(c);
    });
  }

  // ------------------------------------------------------------------------------------------
  // Figures, chart, channels
  // ------------------------------------------------------------------------------------------
  function onStats(m) {
    var channels = Array.isArray(m.channels) ? m.channels : [];
    $('connections').textContent = fmt(m.connections);
    // The server lists the busiest channels only; channel_count is the total.
    state.channelTotal = typeof m.channel_count === 'number' ? m.channel_count : channels.length;
    $('channel-count').textContent = fmt(state.channelTotal);
    $('sent-rate').textContent = fmt(m.sent_per_second);
    $('received-rate').textContent = fmt(m.received_per_second);
    $('api-rate').textContent = fmt(m.api_events_per_second);
    state.channels = channels;
    renderChannels();
    pushChart(m);
    updateSelectedInfo();
  }

  function num(v) {
    return typeof v === 'number' && isFinite(v) ? v : null;
  }

  function pushChart(m) {
    var d = state.chartData;
    var t = (typeof m.time === 'number' ? m.time : Date.now()) / 1000;
    // A clock step backwards (another node, a reconnect) would break uPlot's sorted x axis.
    if (d[0].length && t <= d[0][d[0].length - 1]) return;
    d[0].push(t);
    d[1].push(num(m.sent_per_second));
    d[2].push(num(m.received_per_second));
    d[3].push(num(m.api_events_per_second));
    d[4].push(num(m.connections));
    while (d[0].length && d[0][0] < t - CHART_SECONDS - 2) d.forEach(function (s) {
      s.shift();
    });
    if (!state.chart) createChart();
    if (state.chart) state.chart.setData(d);
  }

  function createChart() {
    if (typeof window.uPlot !== 'function') return;
    var box = $('chart');
    if (!box.clientWidth) return; // not laid out yet; try again on the next figures
    var css = getComputedStyle(document.documentElement);
    function v(name) {
      return css.getPropertyValue(name).trim();
    }
    var grid = 'rgba(240,246,252,0.07)';
    var axis = { stroke: v('--muted'), grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1, size: 4 }, font: '10px ' + v('--sans'), labelFont: '10px ' + v('--sans') };
    function fill(color, alpha) {
      return function (u) {
        var b = u.bbox;
        if (!b || !isFinite(b.top) || !isFinite(b.height) || b.height <= 0) return hexA(color, alpha / 2);
        var g = u.ctx.createLinearGradient(0, b.top, 0, b.top + b.height);
        g.addColorStop(0, hexA(color, alpha));
        g.addColorStop(1, hexA(color, 0));
        return g;
      };
    }
    function valueFmt(u, val) {
      return val == null ? '–' : fmt(val);
    }
    var opts = {
      width: box.clientWidth,
      height: 150,
      padding: [8, 4, 0, 0],
      cursor: { drag: { x: false, y: false, setScale: false }, points: { size: 6 } },
      legend: { live: false },
      scales: {
        x: {
          time: true,
          // Grows from 20 seconds to the last five minutes as figures arrive.
          range: function (u, min, max) {
            var hi = max == null ? Date.now() / 1000 : max;
            var lo = min == null ? hi : min;
            return [hi - Math.min(CHART_SECONDS, Math.max(20, hi - lo)), hi];
          },
        },
        y: {
          range: function (u, min, max) {
            return [0, Math.max(5, Math.ceil((max || 0) * 1.15))];
          },
        },
        conn: {
          range: function (u, min, max) {
            return [0, Math.max(5, Math.ceil((max || 0) * 1.15))];
          },
        },
      },
      axes: [
        Object.assign({}, axis, {
          space: 64,
          size: 26,
          values: function (u, vals) {
            return vals.map(function (t) {
              var d = new Date(t * 1000);
              return pad(d.getHours(), 2) + ':' + pad(d.getMinutes(), 2) + ':' + pad(d.getSeconds(), 2);
            });
          },
        }),
        Object.assign({}, axis, { size: 42, values: function (u, vals) {
          return vals.map(function (x) {
            return x >= 10000 ? Math.round(x / 1000) + 'k' : x;
          });
        } }),
        Object.assign({}, axis, {
          scale: 'conn',
          side: 1,
          size: 38,
          grid: { show: false },
          stroke: v('--s-conn'),
          values: function (u, vals) {
            return vals.map(function (x) {
              return Number.isInteger(x) ? fmt(x) : '';
            });
          },
        }),
      ],
      series: [
        {},
        { label: 'sent/s', stroke: v('--s-sent'), width: 1.5, fill: fill(v('--s-sent'), 0.28), points: { show: false }, value: valueFmt },
        { label: 'received/s', stroke: v('--s-received'), width: 1.5, points: { show: false }, value: valueFmt },
        { label: 'API/s', stroke: v('--s-api'), width: 1.5, points: { show: false }, value: valueFmt },
        { label: 'connections', scale: 'conn', stroke: v('--s-conn'), width: 1, dash: [4, 3], points: { show: false }, value: valueFmt },
      ],
    };
    state.chart = new window.uPlot(opts, state.chartData, box);
    if (typeof ResizeObserver === 'function') {
      new ResizeObserver(function () {
        if (state.chart && box.clientWidth) state.chart.setSize({ width: box.clientWidth, height: 150 });
      }).observe(box);
    }
  }

  function hexA(hex, alpha) {
    var m = /^#([0-9a-f]{6})$/i.exec(hex);
    if (!m) return hex;
    var n = parseInt(m[1], 16);
    return 'rgba(' + (n >> 16) + ',' + ((n >> 8) & 255) + ',' + (n & 255) + ',' + alpha + ')';
  }

  function renderChannels() {
    var q = $('channel-search').value.trim().toLowerCase();
    var list = state.channels
      .filter(function (c) {
        return c && typeof c.name === 'string' && (!q || c.name.toLowerCase().indexOf(q) !== -1);
      })
      .sort(function (a, b) {
        return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
      });
    var shown = list.slice(0, MAX_CHANNELS_SHOWN);
    var ul = $('channels');
    var keep = new Set();
    shown.forEach(function (c, i) {
      keep.add(c.name);
      var li = state.channelEls.get(c.name);
      if (!li) {
        li = channelItem(c.name);
        state.channelEls.set(c.name, li);
      }
      li._count.textContent = fmt(c.subscription_count);
      li.dataset.subscriptionCount = String(c.subscription_count);
      if (c.user_count != null) {
        li._users.hidden = false;
        li._users.textContent = fmt(c.user_count) + ' ' + plural(c.user_count, 'user', 'users');
        li.dataset.userCount = String(c.user_count);
      } else {
        li._users.hidden = true;
      }
      li.classList.toggle('selected', c.name === state.selected);
      if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
    });
    state.channelEls.forEach(function (li, name) {
      if (!keep.has(name)) {
        li.remove();
        state.channelEls.delete(name);
      }
    });
    $('channels-empty').hidden = shown.length > 0;
    $('channels-empty').textContent = q && state.channels.length ? 'No channel matches.' : 'No occupied channel.';
    var more = list.length - shown.length;
    var unlisted = Math.max(0, (state.channelTotal || 0) - state.channels.length);
    var notes = [];
    if (more > 0) notes.push('… and ' + more.toLocaleString('en-US') + ' more (search to narrow)');
    if (unlisted > 0) notes.push(unlisted.toLocaleString('en-US') + ' quieter ' + plural(unlisted, 'channel', 'channels') + ' not listed (the server sends the busiest ' + state.channels.length + ')');
    $('channels-more').hidden = !notes.length;
    $('channels-more').textContent = notes.join(' · ');
  }

  function channelItem(name) {
    var li = el('li', 'channel');
    var kind = channelKind(name);
    li.dataset.channel = name;
    li.dataset.kind = kind;
    li.title = kind === 'presence' ? 'Show the members of ' + name : name;
    li.appendChild(el('span', 'channel-kind', kind === 'presence' ? '●' : kind === 'private' ? '◆' : '#'));
    li.appendChild(el('span', 'channel-name', name));
    var counts = el('span', 'channel-counts');
    li._users = el('span', 'badge badge-users users');
    li._users.hidden = true;
    li._count = el('span', 'badge count');
    li._count.title = 'subscriptions';
    counts.appendChild(li._users);
    counts.appendChild(li._count);
    li.appendChild(counts);
    li.addEventListener('click', function () {
      openChannel(name);
    });
    return li;
  }

  // ------------------------------------------------------------------------------------------
  // Channel details: presence members
  // ------------------------------------------------------------------------------------------
  function openChannel(name) {
    state.selected = name;
    state.channelEls.forEach(function (li, n) {
      li.classList.toggle('selected', n === name);
    });
    $('members-panel').hidden = false;
    $('members-panel').dataset.channel = name;
    $('members-title').textContent = name;
    $('members-title').title = name;
    $('members').textContent = '';
    updateSelectedInfo();
    if (channelKind(name) === 'presence') loadMembers();
  }

  function closeChannel() {
    state.selected = null;
    state.membersGen += 1;
    $('members-panel').hidden = true;
    $('members').textContent = '';
    state.channelEls.forEach(function (li) {
      li.classList.remove('selected');
    });
  }

  function updateSelectedInfo() {
    var name = state.selected;
    if (!name) return;
    var c = state.channels.find(function (x) {
      return x.name === name;
    });
    var info;
    if (!c) info = 'No subscriber now.';
    else {
      info = fmt(c.subscription_count) + ' ' + plural(c.subscription_count, 'subscription', 'subscriptions');
      if (c.user_count != null) info += ' · ' + fmt(c.user_count) + ' ' + plural(c.user_count, 'user', 'users');
    }
    if (channelKind(name) !== 'presence') info += ' Member lists exist on presence channels only.';
    $('members-info').textContent = info;
    // A member count that no longer matches the list: fetch it again.
    if (c && c.user_count != null && c.user_count !== $('members').children.length && !state.membersTimer) scheduleMembers();
  }

  function scheduleMembers() {
    if (state.membersTimer) return;
    state.membersTimer = setTimeout(function () {
      state.membersTimer = null;
      loadMembers();
    }, 250);
  }

  function loadMembers() {
    var name = state.selected;
    if (!name || channelKind(name) !== 'presence' || !state.app) return;
    var gen = ++state.membersGen;
    api(appPath('/channels/' + encodeURIComponent(name) + '/users'))
      .then(function (body) {
        if (gen !== state.membersGen) return;
        var users = (body && Array.isArray(body.users) ? body.users : []).map(function (u) {
          return String(u.id);
        });
        users.sort();
        var ul = $('members');
        ul.textContent = '';
        users.forEach(function (id) {
          var li = el('li', 'member', id);
          li.dataset.userId = id;
          ul.appendChild(li);
        });
        if (!users.length) ul.appendChild(el('li', 'muted empty', 'No member.'));
      })
      .catch(function (e) {
        if (gen !== state.membersGen) return;
        $('members').textContent = '';
        $('members').appendChild(el('li', 'muted empty', 'Cannot list members: ' + e.message));
      });
  }

  // ------------------------------------------------------------------------------------------
  // Event creator
  // ------------------------------------------------------------------------------------------
  function sendEvent(ev) {
    ev.preventDefault();
    if (!state.app) return;
    var channel = $('send-channel').value.trim();
    var name = $('send-event').value.trim();
    var data = $('send-data').value;
    var result = $('send-result');
    if (!channel || !name) {
      result.dataset.state = 'error';
      result.textContent = 'A channel and an event name are needed.';
      return;
    }
    var isJson = true;
    try {
      JSON.parse(data);
    } catch (e) {
      isJson = false;
    }
    var button = $('send');
    button.disabled = true;
    result.dataset.state = 'sending';
    result.textContent = 'Publishing…';
    api(appPath('/events'), { method: 'POST', body: { channel: channel, name: name, data: data } })
      .then(function () {
        result.dataset.state = 'ok';
        result.textContent = 'Published ' + name + ' to ' + channel + (isJson ? '' : ' (data is not JSON: sent as a plain string)');
      })
      .catch(function (e) {
        if (e.status === 401) {
          signOut('Signed out: the token is no longer accepted.');
          return;
        }
        result.dataset.state = 'error';
        result.textContent = 'Not published: ' + e.message;
      })
      .finally(function () {
        button.disabled = false;
      });
  }

  // ------------------------------------------------------------------------------------------
  // Wiring
  // ------------------------------------------------------------------------------------------
  function init() {
    buildChips();
    updatePauseButton();
    updateLineCount();
    showView('login');

    $('login-form').addEventListener('submit', function (e) {
      e.preventDefault();
      var token = $('token').value.trim();
      if (!token) {
        showLoginError('Enter a token.');
        return;
      }
      signIn(token, false);
    });
    $('logout').addEventListener('click', function () {
      signOut('');
    });
    $('app-picker').addEventListener('change', function (e) {
      selectApp(e.target.value);
    });

    var filterTimer = null;
    ['filter-channel', 'filter-event'].forEach(function (id) {
      $(id).addEventListener('input', function () {
        clearTimeout(filterTimer);
        filterTimer = setTimeout(applyFilters, 120);
      });
    });
    $('pause').addEventListener('click', function () {
      setPaused(!state.paused);
    });
    $('clear').addEventListener('click', clearLog);
    var log = $('log');
    log.addEventListener('scroll', function () {
      if (log.scrollHeight - log.scrollTop - log.clientHeight < 40) $('jump').hidden = true;
    });
    $('jump').addEventListener('click', function () {
      log.scrollTop = log.scrollHeight;
      $('jump').hidden = true;
    });

    $('channel-search').addEventListener('input', renderChannels);
    $('members-close').addEventListener('click', closeChannel);
    $('members-filter').addEventListener('click', function () {
      if (!state.selected) return;
      $('filter-channel').value = state.selected;
      applyFilters();
    });
    $('members-publish').addEventListener('click', function () {
      if (!state.selected) return;
      $('send-channel').value = state.selected;
      $('send-event').focus();
    });

    $('send-form').addEventListener('submit', sendEvent);
    $('send-data').addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        $('send-form').requestSubmit ? $('send-form').requestSubmit() : sendEvent(e);
      }
    });

    var saved = null;
    try {
      saved = sessionStorage.getItem(TOKEN_KEY);
    } catch (e) {
      saved = null;
    }
    if (saved) signIn(saved, true);
    else $('token').focus();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
