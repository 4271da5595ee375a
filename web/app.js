// roulette web client. Plain ES modules, no build step.
//
// Safety: everything that comes from the network or the user is put on the page
// with textContent / createElement only, never as HTML.
//
// Reconnect policy: when the connection drops the page retries with exponential
// backoff (see net.js) and says so in a banner. A chat in progress is over (the
// server has told the stranger), so after reconnecting the user is idle and
// presses New. If the user was still looking for a stranger, the search is
// resumed automatically with the same interests once the connection is back.

import { ChatSocket, chatUrl } from './net.js';
import { TagInput } from './tags.js';

const MAX_TEXT_CHARS = 2000;
const TYPING_IDLE_MS = 3000;
const SKIP_CONFIRM_MS = 3000;
const BASE_TITLE = document.title;

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const el = {
  online: $('online'),
  onlineText: $('online-text'),
  banner: $('banner'),
  bannerText: $('banner-text'),
  retry: /** @type {HTMLButtonElement} */ ($('retry')),
  announcer: $('announcer'),
  card: $('card'),
  welcome: $('welcome'),
  log: $('log'),
  typingBubble: $('typing-bubble'),
  next: /** @type {HTMLButtonElement} */ ($('next')),
  stop: /** @type {HTMLButtonElement} */ ($('stop')),
  message: /** @type {HTMLTextAreaElement} */ ($('message')),
  send: /** @type {HTMLButtonElement} */ ($('send')),
  counter: $('counter'),
};

const state = {
  /** 'connecting' | 'open' | 'down' */
  conn: 'connecting',
  /** 'idle' | 'waiting' | 'chatting' */
  chat: 'idle',
  /** The state before the last `find`, restored if the server rejects it. */
  beforeFind: 'idle',
  hadChat: false,
  resumeSearch: false,
  /** Interests of the last `find` (null before the first one). */
  lastInterests: /** @type {string[] | null} */ (null),
  skipArmed: false,
  skipTimer: 0,
  typingSent: false,
  typingTimer: 0,
  unread: 0,
  bannerTimer: 0,
  lastTick: -1,
  downNote: '',
};

const ERROR_TEXT = {
  rate_limited: "Whoa, slow down! You're sending messages too fast, so that one wasn't delivered.",
  too_long: `That message is too long to send (the limit is ${MAX_TEXT_CHARS.toLocaleString('en')} characters).`,
  empty: "Empty messages can't be sent.",
  not_chatting: "That message wasn't delivered because the chat had already ended.",
  bad_interests: "Those interests weren't accepted. Use up to 8 interests of at most 32 characters each.",
  bad_json: 'Sorry, something went wrong talking to the server. Please try again.',
  unknown_type: 'Sorry, something went wrong talking to the server. Please try again.',
};
const ERROR_FALLBACK = "Sorry, the server couldn't handle that. Please try again.";

// ---------------------------------------------------------------- the log

function nearBottom() {
  const l = el.log;
  return l.scrollHeight - l.scrollTop - l.clientHeight < 48;
}

function append(node) {
  const stick = nearBottom();
  el.log.append(node);
  el.welcome.hidden = true;
  if (stick) el.log.scrollTop = el.log.scrollHeight;
}

/** A status line in the conversation. `parts` are strings or [tag, text] pairs. */
function addSystem(parts, kind = 'info') {
  const p = document.createElement('p');
  p.className = `sys sys-${kind}`;
  for (const part of [].concat(parts)) {
    if (Array.isArray(part)) {
      const strong = document.createElement(part[0]);
      strong.textContent = part[1];
      p.append(strong);
    } else {
      p.append(document.createTextNode(part));
    }
  }
  append(p);
  return p;
}

function addMessage(who, text) {
  const row = document.createElement('div');
  row.className = `msg msg-${who}`;
  const name = document.createElement('span');
  name.className = 'who';
  name.textContent = who === 'you' ? 'You' : 'Stranger';
  const colon = document.createElement('span');
  colon.className = 'visually-hidden';
  colon.textContent = ': ';
  name.append(colon);
  const body = document.createElement('p');
  body.className = 'text';
  body.textContent = text;
  row.append(name, body);
  append(row);
}

function clearLog() {
  el.log.replaceChildren();
}

function announce(text) {
  // Re-setting the same text would not be announced again; clear first.
  el.announcer.textContent = '';
  window.setTimeout(() => {
    el.announcer.textContent = text;
  }, 50);
}

function listParts(words) {
  const fmt = new Intl.ListFormat('en', { style: 'long', type: 'conjunction' });
  return fmt.formatToParts(words).map((p) => (p.type === 'element' ? ['strong', p.value] : p.value));
}

// ---------------------------------------------------------------- rendering

function render() {
  const { chat, conn } = state;
  el.card.dataset.state = chat;
  el.online.dataset.state = conn;

  const open = conn === 'open';
  let label;
  if (chat === 'chatting') label = state.skipArmed ? 'Really?' : 'Next';
  else if (chat === 'waiting') label = 'Searching…';
  else label = state.hadChat ? 'New' : 'Start';
  el.next.textContent = label;
  const nextUsable = open && chat !== 'waiting';
  el.next.setAttribute('aria-disabled', String(!nextUsable));
  el.next.classList.toggle('armed', state.skipArmed);
  el.next.title =
    chat === 'chatting' ? 'Skip to a new stranger (Esc twice)' : chat === 'waiting' ? '' : 'Find a stranger';

  el.stop.disabled = !(open && (chat === 'waiting' || chat === 'chatting'));

  const chatting = chat === 'chatting';
  el.message.disabled = !chatting;
  el.message.placeholder = placeholderText();
  el.send.disabled = !chatting || el.message.value.trim() === '';
  if (!chatting) showTyping(false);
  el.welcome.hidden = el.log.childElementCount > 0;
}

function placeholderText() {
  if (state.chat === 'chatting') return 'Type a message…';
  if (state.conn !== 'open') return 'Offline, reconnecting…';
  if (state.chat === 'waiting') return 'Looking for a stranger…';
  return state.hadChat ? 'Press New to meet another stranger' : 'Press Start to find a stranger';
}

function showTyping(on) {
  el.typingBubble.hidden = !on;
}

function setOnline(n) {
  el.onlineText.textContent = `${Number(n).toLocaleString('en')} online`;
}

function updateCounter() {
  const n = [...el.message.value.trim()].length;
  const show = n > MAX_TEXT_CHARS - 200;
  el.counter.hidden = !show;
  if (show) {
    el.counter.textContent = `${n} / ${MAX_TEXT_CHARS}`;
    el.counter.classList.toggle('over', n > MAX_TEXT_CHARS);
  }
}

function autosize() {
  const m = el.message;
  m.style.height = 'auto';
  m.style.height = `${Math.min(m.scrollHeight, 160)}px`;
}

// ---------------------------------------------------------------- banner

function showBanner(text, { retry = false, kind = 'warn', hideAfter = 0 } = {}) {
  window.clearTimeout(state.bannerTimer);
  el.bannerText.textContent = text;
  el.banner.dataset.kind = kind;
  el.retry.hidden = !retry;
  el.banner.hidden = false;
  if (hideAfter) state.bannerTimer = window.setTimeout(hideBanner, hideAfter);
}

function hideBanner() {
  window.clearTimeout(state.bannerTimer);
  el.banner.hidden = true;
}

// ---------------------------------------------------------------- typing

function setTyping(active) {
  window.clearTimeout(state.typingTimer);
  if (active === state.typingSent) return;
  state.typingSent = active;
  sock.send({ type: 'typing', active });
}

function resetTyping() {
  window.clearTimeout(state.typingTimer);
  state.typingSent = false;
}

function onComposerInput() {
  autosize();
  updateCounter();
  el.send.disabled = state.chat !== 'chatting' || el.message.value.trim() === '';
  if (state.chat !== 'chatting') return;
  if (el.message.value.trim() === '') {
    setTyping(false);
    return;
  }
  setTyping(true);
  state.typingTimer = window.setTimeout(() => setTyping(false), TYPING_IDLE_MS);
}

// ---------------------------------------------------------------- actions

const sock = new ChatSocket(chatUrl(), {
  open: onOpen,
  message: onServerMessage,
  down: onDown,
  tick: onTick,
});

const tags = new TagInput({
  list: $('chips'),
  input: /** @type {HTMLInputElement} */ ($('interest-input')),
  box: $('tagbox'),
  hint: $('interests-hint'),
});

function sameTags(a, b) {
  return a !== null && a.length === b.length && a.every((t, i) => t === b[i]);
}

/** Start (or restart) looking for a stranger with the current interests. */
function startSearch({ clear = true } = {}) {
  if (state.conn !== 'open') return;
  tags.commit();
  const interests = tags.value;
  const msg =
    state.chat === 'chatting' && sameTags(state.lastInterests, interests)
      ? { type: 'next' }
      : { type: 'find', interests };
  if (!sock.send(msg)) return;
  disarmSkip();
  resetTyping();
  state.beforeFind = state.chat;
  state.lastInterests = interests;
  state.chat = 'waiting';
  if (clear) clearLog();
  addSystem('Looking for a stranger…');
  render();
}

function stop() {
  if (state.chat === 'idle') return;
  if (!sock.send({ type: 'leave' })) return;
  const was = state.chat;
  disarmSkip();
  resetTyping();
  state.chat = 'idle';
  state.hadChat = true;
  addSystem(was === 'chatting' ? 'You have disconnected.' : 'You stopped looking.');
  const refocus = document.activeElement === el.stop || document.activeElement === el.message;
  render();
  if (refocus) el.next.focus();
}

function sendMessage() {
  if (state.chat !== 'chatting') return;
  const text = el.message.value.trim();
  if (!text) return;
  if ([...text].length > MAX_TEXT_CHARS) {
    addSystem(ERROR_TEXT.too_long, 'error');
    return;
  }
  if (!sock.send({ type: 'message', text })) return;
  addMessage('you', text);
  el.message.value = '';
  autosize();
  updateCounter();
  setTyping(false);
  render();
}

function armSkip() {
  state.skipArmed = true;
  window.clearTimeout(state.skipTimer);
  state.skipTimer = window.setTimeout(() => {
    state.skipArmed = false;
    render();
  }, SKIP_CONFIRM_MS);
  announce('Press Escape again to skip this stranger.');
  render();
}

function disarmSkip() {
  state.skipArmed = false;
  window.clearTimeout(state.skipTimer);
}

// ---------------------------------------------------------------- server events

function onOpen({ reconnected }) {
  state.conn = 'open';
  state.lastTick = -1;
  if (reconnected) {
    showBanner("You're back online.", { kind: 'ok', hideAfter: 2500 });
    announce('Reconnected to the server.');
  } else {
    hideBanner();
  }
  render();
  if (state.resumeSearch) {
    state.resumeSearch = false;
    startSearch({ clear: false });
  }
}

function onServerMessage(msg) {
  switch (msg.type) {
    case 'hello':
      if (Number.isFinite(msg.online)) setOnline(msg.online);
      break;
    case 'waiting':
      // Already shown when we sent `find`. A late one after Stop is ignored.
      break;
    case 'paired': {
      // A `paired` that crossed our `leave` on the wire: the server ends that
      // chat when it reads the `leave`, so it is not a chat for us.
      if (state.chat === 'idle') break;
      const focusWasIdle = [document.body, el.next, el.stop, el.log, null].includes(
        /** @type {any} */ (document.activeElement),
      );
      disarmSkip();
      resetTyping();
      state.chat = 'chatting';
      state.hadChat = true;
      addSystem("You're now chatting with a random stranger. Say hi!", 'ok');
      const common = Array.isArray(msg.common) ? msg.common.filter((t) => typeof t === 'string') : [];
      if (common.length) {
        addSystem(['You both like ', ...listParts(common), '.'], 'ok');
      } else if (state.lastInterests && state.lastInterests.length) {
        addSystem("Nobody shared your interests just now, so here's someone random.");
      }
      render();
      if (focusWasIdle) el.message.focus();
      if (document.hidden) bumpUnread();
      break;
    }
    case 'message':
      // Lines still in flight from a stranger we just left are dropped.
      if (typeof msg.text !== 'string' || state.chat !== 'chatting') break;
      showTyping(false);
      addMessage('stranger', msg.text);
      if (document.hidden) bumpUnread();
      break;
    case 'typing':
      if (state.chat === 'chatting') showTyping(msg.active === true);
      break;
    case 'partner_left': {
      if (state.chat !== 'chatting') break;
      const refocus = document.activeElement === el.message;
      disarmSkip();
      resetTyping();
      state.chat = 'idle';
      addSystem('Stranger has disconnected.', 'left');
      render();
      if (refocus) el.next.focus();
      break;
    }
    case 'error': {
      const code = typeof msg.code === 'string' ? msg.code : '';
      addSystem(ERROR_TEXT[code] || ERROR_FALLBACK, 'error');
      if ((code === 'bad_interests' || code === 'bad_json') && state.chat === 'waiting') {
        // Our last `find` was refused, so nothing changed on the server.
        state.chat = state.beforeFind;
        render();
      }
      break;
    }
    default:
      break; // unknown types are ignored
  }
}

function onDown({ code, wasOpen }) {
  const was = state.chat;
  const firstTime = state.conn === 'open' || state.conn === 'connecting';
  state.conn = 'down';
  disarmSkip();
  resetTyping();
  if (wasOpen) {
    if (code === 1008) {
      addSystem('You were disconnected for sending too many messages.', 'error');
    }
    if (was === 'chatting') {
      addSystem('Connection lost. This chat has ended.', 'error');
      state.hadChat = true;
    } else if (was === 'waiting') {
      addSystem("Connection lost. We'll keep looking as soon as we're back online.", 'error');
      state.resumeSearch = true;
    }
    state.chat = 'idle';
  }
  state.downNote = !sock.everOpened
    ? "Can't reach the server."
    : code === 1001
      ? 'The server is restarting.'
      : 'Connection lost.';
  el.onlineText.textContent = 'Offline';
  if (firstTime) announce(`${state.downNote} Reconnecting…`);
  state.lastTick = -1;
  render();
}

function onTick(secondsLeft) {
  if (secondsLeft === state.lastTick) return;
  state.lastTick = secondsLeft;
  const when = secondsLeft > 0 ? `Reconnecting in ${secondsLeft} s…` : 'Reconnecting…';
  showBanner(`${state.downNote} ${when}`, { retry: secondsLeft > 0 });
}

function bumpUnread() {
  state.unread += 1;
  document.title = `(${state.unread}) ${BASE_TITLE}`;
}

// ---------------------------------------------------------------- wiring

el.next.addEventListener('click', () => {
  if (el.next.getAttribute('aria-disabled') === 'true') return;
  startSearch();
});
el.stop.addEventListener('click', stop);
el.send.addEventListener('click', () => {
  sendMessage();
  el.message.focus();
});
el.retry.addEventListener('click', () => {
  state.lastTick = -1;
  sock.retryNow();
});

el.message.addEventListener('input', onComposerInput);
el.message.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    sendMessage();
  }
});

document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape' || e.isComposing || e.repeat) return;
  if (state.chat !== 'chatting' || state.conn !== 'open') return;
  e.preventDefault();
  if (state.skipArmed) startSearch();
  else armSkip();
});

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && state.unread) {
    state.unread = 0;
    document.title = BASE_TITLE;
  }
});

window.addEventListener('online', () => {
  if (state.conn === 'down') sock.retryNow();
});

el.next.disabled = false; // from here on "unusable" is aria-disabled, so focus is kept
render();
sock.connect();
