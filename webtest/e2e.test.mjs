// End-to-end tests of the web client against the real server binary.
//
//   ROULETTE_BIN=../target/release/roulette node --test e2e.test.mjs
//
// playwright-core drives Debian's /usr/bin/chromium (never a downloaded browser).
// Screenshots go to webtest/artifacts/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.resolve(HERE, process.env.ROULETTE_BIN || '../target/release/roulette');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(HERE, 'artifacts');
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const DESKTOP = { width: 1000, height: 700 };
const MOBILE = { width: 390, height: 844 };
const T = { timeout: 90_000 };

const PAIRED = "You're now chatting with a random stranger. Say hi!";
const LOOKING = 'Looking for a stranger…';
const LEFT = 'Stranger has disconnected.';

fs.mkdirSync(ARTIFACTS, { recursive: true });

// ------------------------------------------------------------------ server

const servers = new Set();

/** Starts the server binary; resolves once it logs the address it listens on. */
function startServer(extra = [], listen = '127.0.0.1:0') {
  const args = [
    '--listen', listen,
    '--metrics-listen', '127.0.0.1:0',
    '--interest-wait', '0.5',
    // The browser and its reconnects come from one address: per-address limits off here.
    '--max-connections-per-ip', '0',
    '--handshake-rate-per-ip', '0',
    ...extra,
  ];
  // Flags also read ROULETTE_* variables: don't let the caller's environment change them.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ROULETTE_')));
  env.RUST_LOG = 'info';
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const server = { proc, addr: '', base: '', output: '', exited: false };
  servers.add(server);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`server did not report its address within 15 s:\n${server.output}`));
    }, 15_000);
    const onData = (chunk) => {
      server.output += chunk.toString();
      const m = server.output.match(/roulette listening on (\S+)/);
      if (m && !server.addr) {
        server.addr = m[1];
        server.base = `http://${m[1]}`;
        clearTimeout(timer);
        resolve(server);
      }
    };
    proc.stderr.on('data', onData);
    proc.stdout.on('data', onData);
    proc.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${BIN}: ${err.message}`));
    });
    proc.on('exit', (code, signal) => {
      server.exited = true;
      servers.delete(server);
      clearTimeout(timer);
      if (!server.addr) reject(new Error(`server exited (${code ?? signal}):\n${server.output}`));
    });
  });
}

/** SIGTERM (the server drains), then SIGKILL if it is still there after 12 s. */
async function stopServer(server) {
  if (!server || server.exited) return;
  const gone = new Promise((resolve) => server.proc.once('exit', resolve));
  server.proc.kill('SIGTERM');
  const timer = setTimeout(() => server.proc.kill('SIGKILL'), 12_000);
  await gone;
  clearTimeout(timer);
}

process.on('exit', () => {
  for (const s of servers) s.proc.kill('SIGKILL');
});

// ------------------------------------------------------------------ browser

let browser;
let main; // the server most tests share

before(async () => {
  assert.ok(fs.existsSync(BIN), `server binary ${BIN} not found (build it or set ROULETTE_BIN)`);
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} not found (apt-get install chromium)`);
  main = await startServer();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
});

after(async () => {
  await browser?.close();
  await Promise.all([...servers].map(stopServer));
});

/**
 * A fresh browser context (its own cookies/storage = its own stranger) with one page
 * whose console errors, page errors and failed responses are collected.
 */
async function openPage(base, problems, options = {}) {
  const context = await browser.newContext({ viewport: DESKTOP, colorScheme: 'light', ...options });
  const page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('response', (res) => {
    if (res.status() >= 400) problems.push(`HTTP ${res.status()} for ${res.url()}`);
  });
  await page.goto(base + '/');
  await waitOnline(page);
  return page;
}

async function waitOnline(page, timeout = 10_000) {
  await page.waitForFunction(
    () => /^\d[\d,]* online$/.test(document.getElementById('online-text').textContent),
    null,
    { timeout },
  );
}

async function closeAll(...pages) {
  await Promise.all(pages.filter(Boolean).map((p) => p.context().close()));
}

/** Waits until a line of the conversation contains `text`. */
async function waitForLine(page, text, timeout = 10_000) {
  try {
    await page.waitForFunction(
      (t) => [...document.querySelectorAll('#log > *')].some((e) => e.textContent.includes(t)),
      text,
      { timeout },
    );
  } catch (err) {
    const lines = await logLines(page);
    throw new Error(`"${text}" not shown; the log has:\n${lines.join('\n')}\n${err.message}`);
  }
}

async function logLines(page) {
  return page.$$eval('#log > *', (els) => els.map((e) => e.textContent));
}

async function hasLine(page, text) {
  return (await logLines(page)).some((l) => l.includes(text));
}

/** The texts of the chat bubbles from `who` ('you' | 'stranger'), in order. */
async function bubbles(page, who) {
  return page.$$eval(`#log .msg-${who} .text`, (els) => els.map((e) => e.textContent));
}

async function waitForBubble(page, who, text, timeout = 10_000) {
  await page.waitForFunction(
    ([w, t]) => [...document.querySelectorAll(`#log .msg-${w} .text`)].some((e) => e.textContent === t),
    [who, text],
    { timeout },
  );
}

async function addInterests(page, ...tags) {
  for (const tag of tags) {
    await page.fill('#interest-input', tag);
    await page.press('#interest-input', 'Enter');
  }
}

/** Both press Start (a first, so b pairs with it) and both see the paired line. */
async function pair(a, b, interest) {
  if (interest) {
    await addInterests(a, interest);
    await addInterests(b, interest);
  }
  await a.click('#next');
  await waitForLine(a, LOOKING);
  await b.click('#next');
  await Promise.all([waitForLine(a, PAIRED), waitForLine(b, PAIRED)]);
}

async function say(page, text) {
  await page.fill('#message', text);
  await page.press('#message', 'Enter');
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

function assertNoProblems(problems, allowed = []) {
  const left = problems.filter((p) => !allowed.some((re) => re.test(p)));
  assert.deepEqual(left, [], 'the page logged errors');
}

const typingShown = (page) => page.isVisible('#typing-bubble');

// ------------------------------------------------------------------ tests

test('the page and its assets: CSP, content types, ETag and 304', T, async () => {
  const res = await fetch(main.base + '/');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/html/);
  const csp = res.headers.get('content-security-policy');
  assert.ok(csp, 'Content-Security-Policy header on /');
  for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) {
    assert.ok(csp.includes(directive), `CSP has ${directive}: ${csp}`);
  }
  assert.ok(!csp.includes('unsafe'), `no unsafe-* in the CSP: ${csp}`);
  assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
  assert.match(res.headers.get('cache-control') || '', /no-cache/);
  const etag = res.headers.get('etag');
  assert.match(etag || '', /^"[^"]+"$/, 'quoted ETag');
  const html = await res.text();
  assert.match(html, /<script type="module" src="\/app\.js"><\/script>/);

  const again = await fetch(main.base + '/', { headers: { 'If-None-Match': etag } });
  assert.equal(again.status, 304);
  assert.equal((await again.arrayBuffer()).byteLength, 0);

  const assets = {
    '/index.html': /^text\/html/,
    '/app.js': /^(text|application)\/javascript/,
    '/net.js': /^(text|application)\/javascript/,
    '/tags.js': /^(text|application)\/javascript/,
    '/style.css': /^text\/css/,
    '/favicon.svg': /^image\/svg\+xml/,
  };
  const etags = new Set([etag]);
  for (const [p, type] of Object.entries(assets)) {
    const r = await fetch(main.base + p);
    assert.equal(r.status, 200, p);
    assert.match(r.headers.get('content-type'), type, p);
    assert.ok(r.headers.get('etag'), `${p} has an ETag`);
    assert.ok(r.headers.get('cache-control'), `${p} has Cache-Control`);
    assert.ok(r.headers.get('content-security-policy'), `${p} has the CSP`);
    if (p !== '/index.html') etags.add(r.headers.get('etag'));
    await r.arrayBuffer();
  }
  assert.equal(etags.size, 6, 'every asset has its own ETag');

  const versioned = await fetch(main.base + '/app.js?v=123');
  assert.equal(versioned.status, 200, 'the query string is ignored');
  await versioned.arrayBuffer();
  const head = await fetch(main.base + '/', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('etag'), etag);
  const missing = await fetch(main.base + '/nope.js');
  assert.equal(missing.status, 404);
  await missing.arrayBuffer();
});

test('two strangers find each other, chat both ways, see typing, and one skips', T, async () => {
  const problems = [];
  // b first, so that a's online count (from its hello) includes b in the screenshot.
  const b = await openPage(main.base, problems);
  const a = await openPage(main.base, problems);
  try {
    await shot(a, 'desktop-idle');
    assert.equal((await a.textContent('#next')).trim(), 'Start');
    assert.ok(await a.isDisabled('#message'), 'no typing before a chat');
    assert.ok(await a.isDisabled('#stop'));

    await addInterests(a, 'Music', 'travel', 'cooking');
    await addInterests(b, 'travel', 'music');
    assert.deepEqual(await a.$$eval('#chips .chip-label', (els) => els.map((e) => e.textContent)), ['music', 'travel', 'cooking']);

    await a.click('#next');
    await waitForLine(a, LOOKING);
    assert.equal((await a.textContent('#next')).trim(), 'Searching…');
    assert.ok(await a.isEnabled('#stop'));
    await b.click('#next');
    await Promise.all([waitForLine(a, PAIRED), waitForLine(b, PAIRED)]);
    await waitForLine(a, 'You both like music and travel.');
    await waitForLine(b, 'You both like music and travel.');
    assert.equal((await a.textContent('#next')).trim(), 'Next');

    // The paired page puts the cursor in the message box.
    assert.equal(await a.evaluate(() => document.activeElement.id), 'message');

    // Typing indicator: shown while a types, hidden by the message.
    assert.equal(await typingShown(b), false);
    await a.focus('#message');
    await a.keyboard.type('Hey! Where did you travel last?', { delay: 10 });
    await b.waitForSelector('#typing-bubble', { state: 'visible', timeout: 5000 });
    assert.equal((await b.textContent('#typing-bubble')).trim(), 'Stranger is typing…');
    await a.keyboard.press('Enter');
    await waitForBubble(b, 'stranger', 'Hey! Where did you travel last?');
    await b.waitForSelector('#typing-bubble', { state: 'hidden', timeout: 5000 });
    assert.deepEqual(await bubbles(a, 'you'), ['Hey! Where did you travel last?']);
    assert.equal(await a.inputValue('#message'), '', 'the box is cleared after sending');

    // Shift+Enter makes a new line; Enter sends the two lines as one message.
    await b.focus('#message');
    await b.keyboard.type('Lisbon, in May.');
    await b.keyboard.press('Shift+Enter');
    await b.keyboard.type('The food was amazing');
    assert.equal(await b.inputValue('#message'), 'Lisbon, in May.\nThe food was amazing');
    await b.keyboard.press('Enter');
    await waitForBubble(a, 'stranger', 'Lisbon, in May.\nThe food was amazing');
    await say(a, 'Nice, I have wanted to go for years 😄');
    await waitForBubble(b, 'stranger', 'Nice, I have wanted to go for years 😄');

    // You and Stranger are told apart: sides, labels and colours differ.
    const look = await a.evaluate(() => {
      const you = document.querySelector('#log .msg-you');
      const them = document.querySelector('#log .msg-stranger');
      const box = (e) => e.getBoundingClientRect();
      return {
        youLabel: you.querySelector('.who').textContent,
        themLabel: them.querySelector('.who').textContent,
        youRight: box(you).right,
        themLeft: box(them).left,
        logMid: (box(you.parentElement).left + box(you.parentElement).right) / 2,
        youBg: getComputedStyle(you.querySelector('.text')).backgroundColor,
        themBg: getComputedStyle(them.querySelector('.text')).backgroundColor,
      };
    });
    assert.equal(look.youLabel, 'You: ');
    assert.equal(look.themLabel, 'Stranger: ');
    assert.ok(look.youRight > look.logMid && look.themLeft < look.logMid, 'You on the right, Stranger on the left');
    assert.notEqual(look.youBg, look.themBg);

    // The typing indicator goes off after ~3 s without typing.
    await b.focus('#message');
    await b.keyboard.type('hmm');
    await a.waitForSelector('#typing-bubble', { state: 'visible', timeout: 5000 });
    await a.waitForSelector('#typing-bubble', { state: 'hidden', timeout: 8000 });
    await b.fill('#message', '');

    await b.focus('#message');
    await b.keyboard.type('You should!');
    await a.waitForSelector('#typing-bubble', { state: 'visible', timeout: 5000 });
    await a.mouse.move(0, 0);
    await shot(a, 'desktop-chat');

    // b presses Next: a is told, b looks for someone new.
    await b.click('#next');
    await waitForLine(a, LEFT);
    await waitForLine(b, LOOKING);
    assert.equal(await hasLine(b, 'Lisbon'), false, 'the log starts afresh for a new search');
    assert.equal((await a.textContent('#next')).trim(), 'New');
    assert.ok(await a.isDisabled('#message'));
    assert.equal(await typingShown(a), false);
    await shot(a, 'desktop-stranger-left');

    // b stops looking.
    await b.click('#stop');
    await waitForLine(b, 'You stopped looking.');
    assert.equal((await b.textContent('#next')).trim(), 'New');
    assertNoProblems(problems);
  } finally {
    await closeAll(a, b);
  }
});

test('HTML and script in messages and interests are shown as literal text', T, async () => {
  const problems = [];
  const a = await openPage(main.base, problems);
  const b = await openPage(main.base, problems);
  try {
    const tag = '<b>x</b>"&';
    await addInterests(a, tag);
    await addInterests(b, tag);
    assert.deepEqual(await a.$$eval('#chips .chip-label', (els) => els.map((e) => e.textContent)), [tag]);
    assert.equal(await a.$$eval('#chips b', (els) => els.length), 0);
    await pair(a, b);
    await waitForLine(b, `You both like ${tag}.`);

    const payloads = [
      '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>',
      '<svg onload="window.__pwned=3"></svg> &amp; &lt;i&gt; "quoted" \'single\'',
      '<iframe src="javascript:window.__pwned=4"></iframe>',
    ];
    for (const p of payloads) await say(a, p);
    await waitForBubble(b, 'stranger', payloads.at(-1));
    assert.deepEqual(await bubbles(b, 'stranger'), payloads);
    assert.deepEqual(await bubbles(a, 'you'), payloads);
    for (const page of [a, b]) {
      const injected = await page.evaluate(() => ({
        pwned: window.__pwned,
        elements: document.querySelectorAll('#log img, #log script, #log b, #log svg, #log iframe, #log i').length,
        childless: [...document.querySelectorAll('#log .text')].every((e) => e.childElementCount === 0),
      }));
      assert.deepEqual(injected, { pwned: undefined, elements: 0, childless: true });
    }
    await shot(b, 'desktop-xss-as-text');
    assertNoProblems(problems);
  } finally {
    await closeAll(a, b);
  }
});

test('Esc twice skips the stranger; a single Esc does not', T, async () => {
  const problems = [];
  const a = await openPage(main.base, problems);
  const b = await openPage(main.base, problems);
  try {
    await pair(a, b, 'esc-test');
    await a.focus('#message');
    await a.keyboard.press('Escape');
    assert.equal((await a.textContent('#next')).trim(), 'Really?');
    await a.waitForTimeout(300);
    assert.equal(await hasLine(b, LEFT), false, 'one Esc does not skip');
    // The confirmation expires after a few seconds.
    await a.waitForFunction(() => document.getElementById('next').textContent.trim() === 'Next', null, { timeout: 6000 });
    await a.keyboard.press('Escape');
    await a.keyboard.press('Escape');
    await waitForLine(b, LEFT);
    await waitForLine(a, LOOKING);
    assert.equal((await b.textContent('#next')).trim(), 'New');
    await shot(b, 'desktop-after-skip');
    assertNoProblems(problems);
  } finally {
    await closeAll(a, b);
  }
});

test('Stop ends the chat for both', T, async () => {
  const problems = [];
  const a = await openPage(main.base, problems);
  const b = await openPage(main.base, problems);
  try {
    await pair(a, b, 'stop-test');
    // Over-long text is refused politely before it is sent, with a counter.
    await a.fill('#message', 'é'.repeat(2001));
    assert.equal((await a.textContent('#counter')).trim(), '2001 / 2000');
    await a.press('#message', 'Enter');
    await waitForLine(a, 'That message is too long to send (the limit is 2,000 characters).');
    assert.deepEqual(await bubbles(a, 'you'), []);
    await a.fill('#message', '');
    assert.equal(await a.isVisible('#counter'), false);

    await say(b, 'bye');
    await waitForBubble(a, 'stranger', 'bye');
    await a.click('#stop');
    await waitForLine(a, 'You have disconnected.');
    await waitForLine(b, LEFT);
    assert.ok(await a.isDisabled('#stop'));
    assert.ok(await b.isDisabled('#message'));
    assertNoProblems(problems);
  } finally {
    await closeAll(a, b);
  }
});

test('usable with the keyboard alone; every control has a label', T, async () => {
  const problems = [];
  const a = await openPage(main.base, problems);
  const b = await openPage(main.base, problems);
  try {
    const a11y = await a.evaluate(() => {
      const log = document.getElementById('log');
      const unlabelled = [...document.querySelectorAll('button, input, textarea, select, [tabindex]')]
        .filter((e) => {
          const name =
            e.getAttribute('aria-label') ||
            (e.getAttribute('aria-labelledby') &&
              document.getElementById(e.getAttribute('aria-labelledby'))?.textContent) ||
            [...(e.labels || [])].map((l) => l.textContent).join('') ||
            e.textContent;
          return !name || !name.trim();
        })
        .map((e) => e.outerHTML.slice(0, 80));
      return { role: log.getAttribute('role'), live: log.getAttribute('aria-live'), unlabelled, lang: document.documentElement.lang };
    });
    assert.deepEqual(a11y, { role: 'log', live: 'polite', unlabelled: [], lang: 'en' });

    // Tab to the interests field, add one, Tab to Start, Enter.
    async function tabTo(page, id) {
      for (let i = 0; i < 15; i++) {
        await page.keyboard.press('Tab');
        if ((await page.evaluate(() => document.activeElement?.id)) === id) return;
      }
      assert.fail(`Tab never reached #${id}`);
    }
    for (const page of [a, b]) {
      await tabTo(page, 'interest-input');
      await page.keyboard.type('keyboard-only,');
      await tabTo(page, 'next');
      const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
      assert.notEqual(outline, 'none', 'focused Start button shows a focus ring');
    }
    await a.keyboard.press('Enter');
    await waitForLine(a, LOOKING);
    await b.keyboard.press('Enter');
    await Promise.all([waitForLine(a, PAIRED), waitForLine(b, PAIRED)]);
    await waitForLine(a, 'You both like keyboard-only.');

    // Focus lands in the message box: type and Enter.
    assert.equal(await b.evaluate(() => document.activeElement.id), 'message');
    await b.keyboard.type('typed without a mouse');
    await b.keyboard.press('Enter');
    await waitForBubble(a, 'stranger', 'typed without a mouse');
    await a.keyboard.type('same here');
    await a.keyboard.press('Enter');
    await waitForBubble(b, 'stranger', 'same here');
    await shot(a, 'desktop-keyboard');

    // b skips with Esc Esc; a's focus moves to the New button, Enter starts again.
    await b.keyboard.press('Escape');
    await b.keyboard.press('Escape');
    await waitForLine(a, LEFT);
    assert.equal(await a.evaluate(() => document.activeElement.id), 'next');
    assert.equal((await a.textContent('#next')).trim(), 'New');
    await a.keyboard.press('Enter');
    await waitForLine(a, LOOKING);
    // Stop with the keyboard: Tab to Stop, Enter.
    await tabTo(a, 'stop');
    await a.keyboard.press('Enter');
    await waitForLine(a, 'You stopped looking.');
    assertNoProblems(problems);
  } finally {
    await closeAll(a, b);
  }
});

test('interests: comma and Enter add chips, limits, removal, remembered after reload', T, async () => {
  const problems = [];
  const a = await openPage(main.base, problems);
  try {
    const chips = () => a.$$eval('#chips .chip-label', (els) => els.map((e) => e.textContent));
    await a.click('#interest-input');
    await a.keyboard.type('Rust,  Music ,rust,');
    assert.deepEqual(await chips(), ['rust', 'music']);
    await a.keyboard.type('x'.repeat(33));
    await a.keyboard.press('Enter');
    assert.deepEqual(await chips(), ['rust', 'music'], 'a 33-character tag is refused');
    assert.match(await a.textContent('#interests-hint'), /at most 32 characters/);
    await a.fill('#interest-input', '');
    await addInterests(a, 'a', 'b', 'c', 'd', 'e', 'f');
    assert.equal((await chips()).length, 8);
    await addInterests(a, 'ninth');
    assert.equal((await chips()).length, 8, 'at most 8');
    assert.match(await a.textContent('#interests-hint'), /up to 8/);
    await a.fill('#interest-input', '');
    await a.click('button[aria-label="Remove interest music"]');
    assert.deepEqual(await chips(), ['rust', 'a', 'b', 'c', 'd', 'e', 'f']);
    await a.focus('#interest-input');
    await a.keyboard.press('Backspace');
    assert.deepEqual(await chips(), ['rust', 'a', 'b', 'c', 'd', 'e']);
    await a.reload();
    await waitOnline(a);
    assert.deepEqual(await chips(), ['rust', 'a', 'b', 'c', 'd', 'e'], 'remembered in localStorage');
    assertNoProblems(problems);
  } finally {
    await closeAll(a);
  }
});

test('mobile layout: no horizontal scroll at 390 px', T, async () => {
  const problems = [];
  const mobile = { viewport: MOBILE, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };
  const a = await openPage(main.base, problems, mobile);
  const b = await openPage(main.base, problems, mobile);
  const overflow = (page) =>
    page.evaluate(() => ({
      doc: document.documentElement.scrollWidth,
      body: document.body.scrollWidth,
      // Elements sticking out of the viewport, unless a scroll box of their own clips them.
      wide: [...document.querySelectorAll('body *')]
        .filter((e) => e.getClientRects().length && e.getBoundingClientRect().right > window.innerWidth + 0.5)
        .filter((e) => !e.closest('.visually-hidden') && !e.matches('.visually-hidden, .who'))
        .filter((e) => {
          for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) {
            if (getComputedStyle(p).overflowX !== 'visible' && p.getBoundingClientRect().right <= window.innerWidth + 0.5) {
              return false;
            }
          }
          return true;
        })
        .map((e) => e.tagName + '.' + e.className),
    }));
  try {
    await shot(a, 'mobile-idle');
    assert.deepEqual(await overflow(a), { doc: 390, body: 390, wide: [] });
    await addInterests(a, 'mobile-test', 'a-rather-long-interest-name-here');
    await addInterests(b, 'mobile-test');
    await a.tap('#next');
    await waitForLine(a, LOOKING);
    await b.tap('#next');
    await Promise.all([waitForLine(a, PAIRED), waitForLine(b, PAIRED)]);
    await say(b, 'hi from a phone');
    await say(a, 'https://example.com/a/very/long/url/that/does/not/break/anywhere/at/all/' + 'x'.repeat(120));
    await say(b, 'Supercalifragilisticexpialidocious'.repeat(4));
    await waitForBubble(a, 'stranger', 'Supercalifragilisticexpialidocious'.repeat(4));
    await b.focus('#message');
    await b.keyboard.type('typing on a phone');
    await a.waitForSelector('#typing-bubble', { state: 'visible' });
    for (const page of [a, b]) assert.deepEqual(await overflow(page), { doc: 390, body: 390, wide: [] });
    await shot(a, 'mobile-chat');
    assertNoProblems(problems);
  } finally {
    await closeAll(a, b);
  }
});

test('dark theme follows the system setting', T, async () => {
  const problems = [];
  const a = await openPage(main.base, problems, { colorScheme: 'dark' });
  const b = await openPage(main.base, problems, { colorScheme: 'dark' });
  const light = await openPage(main.base, problems, { colorScheme: 'light' });
  const lum = (page) =>
    page.evaluate(() => {
      const [r, g, bl] = getComputedStyle(document.body).backgroundColor.match(/\d+/g).map(Number);
      return (0.2126 * r + 0.7152 * g + 0.0722 * bl) / 255;
    });
  try {
    assert.ok((await lum(a)) < 0.2, 'dark background');
    assert.ok((await lum(light)) > 0.8, 'light background');
    await pair(a, b, 'dark-test');
    await say(a, 'Does this look good in the dark?');
    await say(b, 'Easy on the eyes :)');
    await waitForBubble(a, 'stranger', 'Easy on the eyes :)');
    await a.mouse.move(0, 0);
    await shot(a, 'desktop-dark');
    assertNoProblems(problems);
  } finally {
    await closeAll(a, b, light);
  }
});

// A second server with a tight rate limit, restarted on the same port to test reconnecting.
test('rate-limit errors are shown politely; reconnect with backoff after a restart', T, async () => {
  const limits = ['--rate-limit-per-sec', '2', '--rate-limit-burst', '6'];
  let srv = await startServer(limits);
  const problems = [];
  // Chromium logs failed WebSocket handshakes while the server is down.
  const allowed = [/WebSocket connection to .* failed/, /ERR_CONNECTION_REFUSED/];
  const a = await openPage(srv.base, problems);
  const b = await openPage(srv.base, problems);
  try {
    await pair(a, b, 'limits-test');
    for (let i = 1; i <= 12; i++) await say(a, `message ${i}`);
    await waitForLine(a, "You're sending messages too fast");
    const line = await a.$eval('#log .sys-error', (e) => ({ text: e.textContent, cls: e.className }));
    assert.match(line.text, /slow down/i);
    assert.ok(!/rate_limited/.test(line.text), 'no raw error codes');
    await shot(a, 'desktop-rate-limited');
    await closeAll(b);

    // a waits for a stranger (once the token bucket has refilled, or the `find`
    // would be dropped); the server restarts; a reconnects and keeps looking.
    await a.waitForTimeout(3500);
    await a.click('#next');
    await waitForLine(a, LOOKING);
    const linesBefore = (await logLines(a)).length;
    const addr = srv.addr;
    await stopServer(srv);
    await a.waitForSelector('#banner', { state: 'visible', timeout: 10_000 });
    await a.waitForFunction(
      () => /Reconnecting in \d+ s…/.test(document.getElementById('banner-text').textContent),
      null,
      { timeout: 10_000 },
    );
    assert.match(await a.textContent('#banner-text'), /^(The server is restarting|Connection lost)\. Reconnecting in \d+ s…$/);
    assert.equal((await a.textContent('#online-text')).trim(), 'Offline');
    await waitForLine(a, 'Connection lost.');
    assert.equal((await a.getAttribute('#next', 'aria-disabled')), 'true', 'Start is unusable while offline');
    await shot(a, 'desktop-reconnecting');

    // Let it fail at least once so the backoff grows, then bring the server back.
    await a.waitForTimeout(2500);
    for (let i = 0; ; i++) {
      try {
        srv = await startServer(limits, addr);
        break;
      } catch (err) {
        if (i >= 10) throw err;
        await a.waitForTimeout(500);
      }
    }
    await waitOnline(a, 40_000);
    await a.waitForFunction(
      () => document.getElementById('banner-text').textContent === "You're back online.",
      null,
      { timeout: 5000 },
    );
    // The search resumed by itself: a new "Looking" line after the "Connection lost" one.
    await a.waitForFunction(
      ([n, t]) => [...document.querySelectorAll('#log > *')].slice(n).some((e) => e.textContent === t),
      [linesBefore, LOOKING],
      { timeout: 5000 },
    );
    const c = await openPage(srv.base, problems);
    try {
      await addInterests(c, 'limits-test');
      await c.click('#next');
      await Promise.all([waitForLine(a, PAIRED), waitForLine(c, PAIRED)]);
    } finally {
      await closeAll(c);
    }
    assertNoProblems(problems, allowed);
  } finally {
    await closeAll(a, b);
    await stopServer(srv);
  }
});
