#!/usr/bin/env node
// tests/e2e/run.mjs — the posthog-js conversations widget (the real SDK, unmodified) against
// colloquy, in Debian's headless Chromium driven by playwright-core.
//
// A static server on its own origin (127.0.0.1:<A>) serves a test page that preloads
// window._POSTHOG_REMOTE_CONFIG with a team's public token and runs posthog.init() with
// api_host = colloquy (127.0.0.1:<B>), so every widget call is a real cross-origin request.
//
// Environment:
//   COLLOQUY_URL     base URL of a running colloquy, e.g. http://127.0.0.1:8080 (required)
//   ADMIN_TOKEN      colloquy's admin bearer token: the suite creates its own teams (required)
//   DATABASE_URL     colloquy's database: scenario "restore" reads the restore mail from the
//                    `outbox` table with psql (no SMTP in tests)
//   CHROMIUM_PATH    browser binary (default /usr/bin/chromium; never downloaded)
//   E2E_ONLY         comma-separated scenario names or numbers to run (default: all)
//   E2E_TIMEOUT_FACTOR  multiplies every wait (default 1)
//   E2E_ARTIFACTS    screenshot/log directory (default tests/e2e/artifacts)
//   E2E_HEADED=1     show the browser (needs a display)
//   RATE_LIMIT_NODES nodes behind COLLOQUY_URL's round-robin load balancer (default 1): rate
//                    limits count per node, so refusals start later
//
// Usage:
//   node tests/e2e/run.mjs            run the scenarios; one PASS/FAIL line each; exit 1 on failure
//   node tests/e2e/run.mjs --smoke    only load the SDK in the page and report
//                                     posthog.conversations.isAvailable(); needs no colloquy
//   node tests/e2e/run.mjs --list     list the scenarios

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ARGS = process.argv.slice(2);
const SMOKE = ARGS.includes('--smoke');
const LIST = ARGS.includes('--list');

const COLLOQUY_URL = (process.env.COLLOQUY_URL || '').replace(/\/+$/, '');
const ADMIN_TOKEN = process.env.ADMIN_TOKEN || '';
const DATABASE_URL = process.env.DATABASE_URL || '';
// Nodes behind COLLOQUY_URL's round-robin load balancer: rate limits count per node.
const RATE_LIMIT_NODES = Math.max(1, Number.parseInt(process.env.RATE_LIMIT_NODES || '1', 10) || 1);
const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const FACTOR = Number(process.env.E2E_TIMEOUT_FACTOR || '1') || 1;
const ARTIFACTS = path.resolve(process.env.E2E_ARTIFACTS || path.join(HERE, 'artifacts'));
const PH_TOKEN = 'phc_demo'; // the (fake) PostHog project key: analytics never leave the page
const CONV_STORAGE_KEY = `ph_conv_${PH_TOKEN}`;

const SEL = {
    container: '#ph-conversations-widget-container',
    launcher: '#ph-conversations-widget-container button[aria-label^="Open chat"]',
    close: '#ph-conversations-widget-container button[aria-label="Close"]',
    input: '#ph-conversations-widget-container textarea[placeholder="Type your message..."]',
    send: '#ph-conversations-widget-container button[aria-label="Send message"]',
    back: '#ph-conversations-widget-container button[aria-label="Back to conversations"]',
};

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

// ------------------------------------------------------------------------------------------
// small utilities

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rand = (n = 4) => crypto.randomBytes(n).toString('hex');
const t = (ms) => Math.round(ms * FACTOR);

class CheckError extends Error {}

function check(cond, message, details) {
    if (!cond) {
        const e = new CheckError(message);
        e.details = details;
        throw e;
    }
}

/** Polls fn() until it returns a truthy value; throws CheckError(description) on timeout. */
async function waitFor(description, fn, { timeout = 10000, interval = 250 } = {}) {
    const deadline = Date.now() + t(timeout);
    let last;
    let lastErr;
    for (;;) {
        try {
            last = await fn();
            if (last) return last;
        } catch (e) {
            lastErr = e;
        }
        if (Date.now() > deadline) {
            const e = new CheckError(`timed out after ${t(timeout) / 1000} s waiting for: ${description}`);
            e.details = lastErr ? `last error: ${lastErr.message}` : last === undefined ? undefined : `last value: ${JSON.stringify(last)}`;
            throw e;
        }
        await sleep(interval);
    }
}

function log(...a) {
    process.stderr.write(a.join(' ') + '\n');
}

// ------------------------------------------------------------------------------------------
// colloquy HTTP (from Node: the operator's and the admin's side)

async function api(method, urlPath, { bearer, token, body, query } = {}) {
    const url = new URL(COLLOQUY_URL + urlPath);
    for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null) url.searchParams.set(k, v);
    const headers = {};
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    if (token) headers['X-Conversations-Token'] = token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json;
    try {
        json = text ? JSON.parse(text) : undefined;
    } catch {
        json = undefined;
    }
    return { status: res.status, json, text, headers: res.headers };
}

function expectStatus(res, status, what) {
    check(res.status === status, `${what}: expected HTTP ${status}, got ${res.status}`, res.text.slice(0, 500));
    return res.json;
}

async function createTeam(label, extra = {}) {
    const res = await api('POST', '/api/teams', {
        bearer: ADMIN_TOKEN,
        body: { name: `e2e ${label} ${rand(3)}`, ...extra },
    });
    const team = expectStatus(res, 201, 'POST /api/teams');
    check(team && team.public_token && team.secret_api_key, 'POST /api/teams: no public_token/secret_api_key', res.text);
    return team;
}

const operator = {
    async list(team, query = {}) {
        return expectStatus(
            await api('GET', '/api/conversations/tickets', { bearer: team.secret_api_key, query }),
            200,
            'operator GET /api/conversations/tickets',
        );
    },
    async ticket(team, id) {
        return expectStatus(
            await api('GET', `/api/conversations/tickets/${id}`, { bearer: team.secret_api_key }),
            200,
            `operator GET /api/conversations/tickets/${id}`,
        );
    },
    async reply(team, id, content) {
        return expectStatus(
            await api('POST', `/api/conversations/tickets/${id}/messages`, {
                bearer: team.secret_api_key,
                body: { content, author_type: 'human', author_name: 'Sam' },
            }),
            201,
            `operator POST /api/conversations/tickets/${id}/messages`,
        );
    },
    async patch(team, id, body) {
        return expectStatus(
            await api('PATCH', `/api/conversations/tickets/${id}`, { bearer: team.secret_api_key, body }),
            200,
            `operator PATCH /api/conversations/tickets/${id}`,
        );
    },
};

/** The v1 widget surface, called from Node with a visitor's widget_session_id (no CORS). */
const v1 = {
    async tickets(team, widgetSessionId) {
        return expectStatus(
            await api('GET', '/api/conversations/v1/widget/tickets', {
                token: team.public_token,
                query: { widget_session_id: widgetSessionId },
            }),
            200,
            'GET /api/conversations/v1/widget/tickets',
        );
    },
};

// ------------------------------------------------------------------------------------------
// the outbox (restore mails) through psql

function psqlJson(sql, vars) {
    return new Promise((resolve, reject) => {
        const args = [DATABASE_URL, '-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1'];
        for (const [k, v] of Object.entries(vars)) args.push('-v', `${k}=${v}`);
        const child = execFile('psql', args, { timeout: 10000 }, (err, stdout, stderr) => {
            if (err) return reject(new Error(`psql: ${stderr.trim() || err.message}`));
            const out = stdout.trim();
            resolve(out ? JSON.parse(out) : null);
        });
        child.stdin.end(sql);
    });
}

async function outboxFor(recipient) {
    // All columns, whatever they are: the scenario needs recipient and body (and shows the rest).
    return (
        (await psqlJson(
            `SELECT coalesce(json_agg(to_jsonb(o)), '[]'::json) FROM outbox o WHERE o.recipient = :'rcpt';`,
            { rcpt: recipient },
        )) || []
    );
}

// ------------------------------------------------------------------------------------------
// the static site (origin A)

function pageHtml({ publicToken, requireEmail }) {
    const conversations = {
        enabled: true,
        widgetEnabled: true,
        token: publicToken,
        greetingText: 'Hi! How can we help?',
    };
    if (requireEmail) Object.assign(conversations, { requireEmail: true, collectName: true });
    const remote = {
        [PH_TOKEN]: {
            config: {
                hasFeatureFlags: false,
                supportedCompression: [],
                sessionRecording: false,
                surveys: false,
                heatmaps: false,
                conversations,
            },
        },
    };
    const init = {
        api_host: COLLOQUY_URL || 'http://127.0.0.1:9',
        autocapture: false,
        capture_pageview: false,
        capture_pageleave: false,
        disable_session_recording: true,
        disable_surveys: true,
        advanced_disable_flags: true,
    };
    return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>colloquy e2e shop</title>
<style>body{font-family:sans-serif;margin:2em}</style></head>
<body>
<h1>Acme shop</h1>
<p>A customer's page with the posthog-js conversations widget, talking to colloquy.</p>
<script>
  window._POSTHOG_REMOTE_CONFIG = ${JSON.stringify(remote)};
</script>
<script src="/static/array.js"></script>
<script src="/static/conversations.js"></script>
<script>
  posthog.init(${JSON.stringify(PH_TOKEN)}, Object.assign(${JSON.stringify(init)}, {
    before_send: function () { return null; } // no analytics traffic
  }));
  window.__e2eReady = true;
</script>
</body>
</html>
`;
}

function startStaticServer() {
    const dist = path.join(HERE, 'node_modules', 'posthog-js', 'dist');
    const files = {
        '/static/array.js': path.join(dist, 'array.js'),
        '/static/conversations.js': path.join(dist, 'conversations.js'),
    };
    for (const f of Object.values(files)) {
        if (!fs.existsSync(f)) throw new Error(`${f} is missing: run \`npm ci\` in ${HERE}`);
    }
    const server = http.createServer((req, res) => {
        const url = new URL(req.url, 'http://x');
        const noStore = { 'Cache-Control': 'no-store' };
        if (files[url.pathname]) {
            res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8', ...noStore });
            fs.createReadStream(files[url.pathname]).pipe(res);
            return;
        }
        // /t/<public token>/ and /t/<public token>/email/ (the widget asks name and email first)
        const m = url.pathname.match(/^\/t\/([A-Za-z0-9_-]{1,200})\/(email\/)?$/);
        if (m) {
            res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', ...noStore });
            res.end(pageHtml({ publicToken: m[1], requireEmail: !!m[2] }));
            return;
        }
        res.writeHead(url.pathname === '/favicon.ico' ? 204 : 404, noStore);
        res.end();
    });
    return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve(server));
    });
}

// ------------------------------------------------------------------------------------------
// browser side

let browser;
let SITE; // http://127.0.0.1:<A>

async function launchBrowser() {
    if (!fs.existsSync(CHROMIUM_PATH)) {
        throw new Error(`no browser at ${CHROMIUM_PATH}: install Debian's chromium (apt-get install chromium); this suite never downloads one`);
    }
    // playwright-core gives every launch a fresh, temporary --user-data-dir of its own.
    return chromium.launch({
        executablePath: CHROMIUM_PATH,
        headless: process.env.E2E_HEADED !== '1',
        args: CHROMIUM_ARGS.filter((a) => process.env.E2E_HEADED !== '1' || a !== '--headless'),
        timeout: 60000,
    });
}

/** A visitor: a fresh browser context (own cookies and localStorage) with one page. */
class Visitor {
    constructor(name, scenario) {
        this.name = name;
        this.scenario = scenario;
        this.traffic = []; // colloquy exchanges seen by the browser
        this.console = []; // console errors/warnings and page errors
    }

    async start(url) {
        this.context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
        this.context.setDefaultTimeout(t(15000));
        this.page = await this.context.newPage();
        this._listen(this.page);
        this.scenario.visitors.push(this);
        if (url) await this.goto(url);
        return this;
    }

    _listen(page) {
        page.on('console', (msg) => {
            if ((msg.type() === 'error' || msg.type() === 'warning') && !msg.text().includes('user agent looks like a bot')) {
                this.console.push(`[${msg.type()}] ${msg.text()}`.slice(0, 600));
            }
        });
        page.on('pageerror', (err) => this.console.push(`[pageerror] ${err.message}`.slice(0, 600)));
        page.on('response', async (res) => {
            const req = res.request();
            if (!COLLOQUY_URL || !req.url().startsWith(COLLOQUY_URL)) return;
            const entry = {
                at: new Date().toISOString(),
                method: req.method(),
                url: req.url().slice(COLLOQUY_URL.length),
                status: res.status(),
                request: req.postData() || undefined,
            };
            this.traffic.push(entry);
            try {
                entry.response = (await res.text()).slice(0, 1500);
            } catch {
                entry.response = '(body unavailable)';
            }
        });
        page.on('requestfailed', (req) => {
            if (!COLLOQUY_URL || !req.url().startsWith(COLLOQUY_URL)) return;
            this.traffic.push({
                at: new Date().toISOString(),
                method: req.method(),
                url: req.url().slice(COLLOQUY_URL.length),
                status: 'FAILED',
                error: req.failure()?.errorText,
                request: req.postData() || undefined,
            });
        });
    }

    async goto(url) {
        await this.page.goto(url, { waitUntil: 'load' });
        await this.waitAvailable();
    }

    async reload() {
        await this.page.reload({ waitUntil: 'load' });
        await this.waitAvailable();
    }

    async waitAvailable() {
        await waitFor(
            'posthog.conversations.isAvailable()',
            () =>
                this.page.evaluate(() => !!(window.posthog && window.posthog.conversations && window.posthog.conversations.isAvailable())),
            { timeout: 15000 },
        ).catch(async (e) => {
            const reason = await this.page
                .evaluate(() => window.posthog && window.posthog.conversations && window.posthog.conversations.getUnavailableReason())
                .catch(() => 'page not reachable');
            e.message += ` (getUnavailableReason() = ${JSON.stringify(reason)})`;
            throw e;
        });
        await this.page.waitForSelector(`${SEL.container} button`, { state: 'visible' });
    }

    sdk(fnSource, arg) {
        // fnSource: a function (posthog, arg) => … evaluated in the page
        return this.page.evaluate(
            async ([src, a]) => {
                // eslint-disable-next-line no-new-func
                const f = new Function('return ' + src)();
                return await f(window.posthog, a);
            },
            [fnSource.toString(), arg],
        );
    }

    widgetSessionId() {
        return this.sdk((ph) => ph.conversations.getWidgetSessionId());
    }

    async tickets(team) {
        return v1.tickets(team, await this.widgetSessionId());
    }

    storedState() {
        return this.page.evaluate((key) => JSON.parse(localStorage.getItem(key) || 'null'), CONV_STORAGE_KEY);
    }

    async isOpen() {
        return (await this.page.locator(SEL.close).count()) > 0;
    }

    async open() {
        if (await this.isOpen()) return;
        await this.page.click(SEL.launcher);
        await this.page.waitForSelector(SEL.close, { state: 'visible' });
    }

    async close() {
        if (!(await this.isOpen())) return;
        await this.page.click(SEL.close);
        await this.page.waitForSelector(SEL.launcher, { state: 'visible' });
    }

    launcherLabel() {
        return this.page.locator(SEL.launcher).getAttribute('aria-label', { timeout: t(2000) }).catch(() => null);
    }

    widgetText() {
        return this.page.evaluate((sel) => {
            const el = document.querySelector(sel);
            return el ? el.innerText : '';
        }, SEL.container);
    }

    /** How many times `text` occurs in the widget's visible text. */
    async count(text) {
        const all = await this.widgetText();
        return all.split(text).length - 1;
    }

    async waitText(text, timeout = 10000, what) {
        await waitFor(what || `the widget to show "${text}"`, async () => (await this.count(text)) > 0, { timeout });
    }

    /** Types into the widget's textarea and clicks "Send message"; waits until the send settles. */
    async send(text) {
        const before = this.traffic.filter((x) => x.method === 'POST' && x.url.startsWith('/api/conversations/v1/widget/message')).length;
        await this.page.fill(SEL.input, text);
        await this.page.click(SEL.send);
        await waitFor(`the widget's POST …/v1/widget/message for "${text}" to be answered`, () => {
            const posts = this.traffic.filter((x) => x.method === 'POST' && x.url.startsWith('/api/conversations/v1/widget/message'));
            return posts.length > before && posts[posts.length - 1].response !== undefined ? posts[posts.length - 1] : null;
        });
        const post = this.traffic.filter((x) => x.method === 'POST' && x.url.startsWith('/api/conversations/v1/widget/message')).pop();
        check(post.status === 200, `POST /v1/widget/message answered ${post.status} (the SDK needs exactly 200)`, post);
        await this.waitText(text, 5000);
        // the textarea is enabled again once the SDK is done with the send
        await this.page.waitForSelector(`${SEL.input}:not([disabled])`);
        return JSON.parse(post.response);
    }

    async shot(step) {
        const file = path.join(ARTIFACTS, `${this.scenario.slug}-${step}.png`);
        await sleep(400); // let the widget's fade-in animations finish
        await this.page.screenshot({ path: file }).catch((e) => log(`  (screenshot ${file} failed: ${e.message})`));
        return file;
    }

    async dispose() {
        await this.context?.close().catch(() => {});
    }
}

const pageUrl = (team, variant = '') => `${SITE}/t/${team.public_token}/${variant}`;

// ------------------------------------------------------------------------------------------
// scenarios

const SCENARIOS = [];
function scenario(slug, title, fn, { smoke = false } = {}) {
    SCENARIOS.push({ n: SCENARIOS.length, slug, title, fn, smoke });
}

scenario(
    'sdk-loads',
    'the page loads posthog-js 1.449.2 and the conversations widget is available',
    async (s) => {
        const team = SMOKE ? { public_token: 'pub_smoke_no_server' } : await createTeam('sdk-loads');
        const v = await new Visitor('visitor', s).start(pageUrl(team));
        const info = await v.sdk((ph) => ({
            version: ph.version || (ph.LIB_VERSION ?? null),
            available: ph.conversations.isAvailable(),
            reason: ph.conversations.getUnavailableReason(),
            widgetSessionId: ph.conversations.getWidgetSessionId(),
        }));
        s.note(`posthog-js ${info.version}; isAvailable() = ${info.available}; getUnavailableReason() = ${JSON.stringify(info.reason)}; widget_session_id ${info.widgetSessionId}`);
        check(info.version === '1.449.2', `posthog-js version is ${info.version}, expected 1.449.2`);
        check(info.available === true && info.reason === null, 'conversations not available', info);
        const label = await v.launcherLabel();
        check(label === 'Open chat', `launcher aria-label is ${JSON.stringify(label)}, expected "Open chat"`);
        await v.open();
        check((await v.count('Hi! How can we help?')) === 1, 'the greeting is not shown once in the open widget');
        await v.shot('open');
        const unexpected = v.traffic.filter((x) => !x.url.startsWith('/api/conversations/v1/widget/'));
        check(unexpected.length === 0, 'the page called colloquy outside /api/conversations/v1/widget/', unexpected);
    },
    { smoke: true },
);

scenario('first-message', 'open the widget, send a first message: one ticket, shown once', async (s) => {
    const team = await createTeam('first-message');
    const v = await new Visitor('visitor', s).start(pageUrl(team));
    await v.open();
    const m1 = `Hello, my order is late (${rand()})`;
    const sent = await v.send(m1);
    check(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/.test(sent.created_at), `created_at ${sent.created_at} is not written with microseconds and +00:00 (API.md)`);
    // let the SDK poll a few times (1 s after a send, then every 5 s): the message must not come back twice
    await sleep(t(7000));
    check((await v.count(m1)) === 1, `the first message is shown ${await v.count(m1)} times, expected once`);
    await v.shot('sent');

    const inbox = await operator.list(team);
    check(inbox.count === 1 && inbox.results.length === 1, `operator inbox count is ${inbox.count}, expected 1`, inbox);
    const ticketId = inbox.results[0].id;
    check(ticketId === sent.ticket_id, `the inbox ticket ${ticketId} is not the one the widget got (${sent.ticket_id})`);
    const stored = await v.storedState();
    check(stored && stored.ticketId === ticketId, `localStorage ${CONV_STORAGE_KEY}.ticketId is ${stored?.ticketId}, expected ${ticketId}`);
    check(stored.widgetSessionId === inbox.results[0].widget_session_id, 'the ticket is not bound to the widget_session_id the SDK keeps', { stored, ticket: inbox.results[0] });

    // a follow-up goes to the same ticket
    const m2 = `Order number 1234 (${rand()})`;
    const sent2 = await v.send(m2);
    check(sent2.ticket_id === ticketId, `the follow-up went to ticket ${sent2.ticket_id}, expected ${ticketId}`);
    await sleep(t(6000));
    check((await v.count(m1)) === 1 && (await v.count(m2)) === 1, 'after the follow-up a message is not shown exactly once', await v.widgetText());
    const inbox2 = await operator.list(team);
    check(inbox2.count === 1, `after a follow-up the operator inbox count is ${inbox2.count}, expected 1`, inbox2);
    const detail = await operator.ticket(team, ticketId);
    const contents = detail.messages.map((m) => `${m.author_type}:${m.content}`);
    check(
        contents.length === 2 && contents[0] === `customer:${m1}` && contents[1] === `customer:${m2}`,
        'operator ticket detail does not hold exactly the two customer messages in order',
        contents,
    );
    await v.shot('follow-up');
});

/** Visitor with one ticket (sent through the widget, left open). */
async function visitorWithTicket(s, label, variant = '') {
    const team = await createTeam(label);
    const v = await new Visitor('visitor', s).start(pageUrl(team, variant));
    await v.open();
    const first = `I need help with ${label} (${rand()})`;
    const sent = await v.send(first);
    return { team, v, first, ticketId: sent.ticket_id };
}

scenario('operator-reply', 'an operator reply appears in the open widget; with it closed, the launcher shows 1 unread', async (s) => {
    const { team, v, ticketId } = await visitorWithTicket(s, 'operator-reply');
    await sleep(t(1500));
    const r1 = `Sorry about that, it ships today (${rand()})`;
    await operator.reply(team, ticketId, r1);
    const t0 = Date.now();
    await v.waitText(r1, 20000, 'the operator reply in the open widget');
    s.note(`reply shown after ${((Date.now() - t0) / 1000).toFixed(1)} s (open widget)`);
    check((await v.count('Sam')) >= 1, "the operator's name (author_name) is not shown");
    await v.shot('reply-open');

    await v.close();
    await sleep(t(500));
    const r2 = `Anything else? (${rand()})`;
    await operator.reply(team, ticketId, r2);
    const t1 = Date.now();
    await waitFor('launcher aria-label "Open chat (1 unread)"', async () => (await v.launcherLabel()) === 'Open chat (1 unread)', { timeout: 20000 });
    s.note(`badge "Open chat (1 unread)" after ${((Date.now() - t1) / 1000).toFixed(1)} s (closed widget)`);
    await v.shot('badge');
    const vt = await v.tickets(team);
    check(vt.results[0]?.unread_count === 1, `GET v1 tickets unread_count is ${vt.results[0]?.unread_count}, expected 1`, vt);
});

scenario('mark-read', 'opening the widget marks the reply read: unread_count 0, badge gone', async (s) => {
    const { team, v, ticketId } = await visitorWithTicket(s, 'mark-read');
    await v.close();
    const r1 = `We refunded you (${rand()})`;
    await operator.reply(team, ticketId, r1);
    await waitFor('launcher aria-label "Open chat (1 unread)"', async () => (await v.launcherLabel()) === 'Open chat (1 unread)', { timeout: 20000 });
    const before = await v.tickets(team);
    check(before.results[0]?.unread_count === 1, `before opening, v1 unread_count is ${before.results[0]?.unread_count}, expected 1`, before);
    await v.shot('badge');

    await v.open();
    await v.waitText(r1, 10000, 'the reply in the opened widget');
    await waitFor(
        'POST …/v1/widget/messages/{id}/read answered 200',
        () => v.traffic.find((x) => x.method === 'POST' && x.url.startsWith(`/api/conversations/v1/widget/messages/${ticketId}/read`) && x.status === 200),
        { timeout: 10000 },
    );
    await waitFor('GET v1 tickets unread_count 0', async () => (await v.tickets(team)).results[0]?.unread_count === 0, { timeout: 10000, interval: 2000 });
    await v.shot('opened');
    await v.close();
    const label = await v.launcherLabel();
    check(label === 'Open chat', `after reading, the launcher aria-label is ${JSON.stringify(label)}, expected "Open chat"`);
    await sleep(t(16000)); // a closed-widget poll: the badge must not come back
    const label2 = await v.launcherLabel();
    check(label2 === 'Open chat', `a poll brought the badge back: ${JSON.stringify(label2)}`);
    await v.shot('closed');
});

scenario('reload-history', 'a reload with the same storage shows the full history, each message once', async (s) => {
    const { team, v, ticketId, first } = await visitorWithTicket(s, 'reload-history');
    await sleep(t(1500));
    const r1 = `Which size do you need? (${rand()})`;
    await operator.reply(team, ticketId, r1);
    await v.waitText(r1, 20000, 'the operator reply');
    const m2 = `Size M, please (${rand()})`;
    await v.send(m2);
    await sleep(t(2000));
    const wsid = await v.widgetSessionId();

    await v.reload();
    check((await v.widgetSessionId()) === wsid, 'the widget_session_id changed across the reload');
    await v.open();
    for (const text of [first, r1, m2]) await v.waitText(text, 10000, `"${text}" after the reload`);
    await sleep(t(6000)); // a poll or two after the history load
    for (const text of [first, r1, m2]) {
        const n = await v.count(text);
        check(n === 1, `after the reload "${text}" is shown ${n} times, expected once`, await v.widgetText());
    }
    const text = await v.widgetText();
    check(text.indexOf(first) < text.indexOf(r1) && text.indexOf(r1) < text.indexOf(m2), 'the history is not in order', text);
    const gets = v.traffic.filter((x) => x.url.startsWith('/api/conversations/v1/widget/tickets?'));
    check(gets.some((x) => x.status === 200), 'the reload did not list the tickets (GET …/v1/widget/tickets → 200)', gets);
    await v.shot('after-reload');
});

scenario('second-conversation', 'a second conversation: the ticket list with "New conversation"', async (s) => {
    const { team, v, first } = await visitorWithTicket(s, 'second-conversation');
    const second = `Another question: invoices (${rand()})`;
    const res = await v.sdk((ph, text) => ph.conversations.sendMessage(text, undefined, true), second);
    check(res && res.ticket_id, 'posthog.conversations.sendMessage(text, undefined, true) gave no ticket_id', res);
    const inbox = await operator.list(team);
    check(inbox.count === 2, `operator inbox count is ${inbox.count}, expected 2`, inbox);

    await v.reload();
    await v.open();
    await waitFor('the ticket list ("Conversations" with "New conversation")', async () => {
        const txt = await v.widgetText();
        return txt.includes('Conversations') && txt.includes('New conversation') && txt.includes(first.slice(0, 40)) && txt.includes(second.slice(0, 40));
    });
    await v.shot('ticket-list');

    // open the first conversation from the list
    await v.page.locator(`${SEL.container} [role="button"]`, { hasText: first.slice(0, 40) }).click();
    await v.waitText(first, 10000, 'the first conversation opened from the list');
    check((await v.count(second)) === 0, 'the second ticket\'s message shows in the first conversation');
    await v.shot('first-opened');
    await v.page.click(SEL.back);

    // a third one through the "New conversation" button
    await v.page.locator(`${SEL.container} button`, { hasText: 'New conversation' }).click();
    await v.page.waitForSelector(SEL.input);
    const third = `Third topic: delivery address (${rand()})`;
    const sent = await v.send(third);
    check((await v.count(first)) === 0, 'the new conversation shows an old message');
    const inbox3 = await operator.list(team);
    check(inbox3.count === 3, `after "New conversation" the operator inbox count is ${inbox3.count}, expected 3`, inbox3);
    check(inbox3.results.some((x) => x.id === sent.ticket_id), 'the new ticket is not in the inbox');
    await v.shot('new-conversation');
    await v.reload();
    await v.open();
    await waitFor('the list with three conversations', async () => {
        const txt = await v.widgetText();
        return [first, second, third].every((m) => txt.includes(m.slice(0, 40)));
    });
    const items = await v.page.locator(`${SEL.container} [role="button"]`).count();
    check(items === 3, `the ticket list shows ${items} items, expected 3`);
    await v.shot('three');
});

scenario('resolved-locks', 'a ticket resolved by an operator locks the input (after a reload)', async (s) => {
    const { team, v, ticketId, first } = await visitorWithTicket(s, 'resolved-locks');
    const patched = await operator.patch(team, ticketId, { status: 'resolved' });
    check(patched && patched.status === 'resolved', 'PATCH status resolved not reflected', patched);
    const vt = await v.tickets(team);
    check(vt.results[0]?.status === 'resolved', `GET v1 tickets shows status ${vt.results[0]?.status}, expected resolved`, vt);

    await v.reload();
    await v.open();
    await waitFor('the list showing the resolved conversation', async () => (await v.widgetText()).includes(first.slice(0, 40)));
    const listText = await v.widgetText();
    // the label is "Resolved", shown upper-case through CSS (innerText applies text-transform)
    check(/resolved/i.test(listText), 'the ticket list does not label the ticket "Resolved"', listText);
    await v.page.locator(`${SEL.container} [role="button"]`, { hasText: first.slice(0, 40) }).click();
    await v.waitText('This conversation was resolved.', 10000, 'the resolved banner');
    await v.waitText(first, 10000, 'the history of the resolved ticket');
    check((await v.page.locator(SEL.input).count()) === 0, 'the message input is still there on a resolved ticket');
    check((await v.page.locator(SEL.send).count()) === 0, 'the send button is still there on a resolved ticket');
    await v.shot('locked');
});

scenario('isolation', "a visitor in another browser context cannot see the first visitor's tickets", async (s) => {
    const { team, v: a, first, ticketId } = await visitorWithTicket(s, 'isolation');
    const b = await new Visitor('visitor-b', s).start(pageUrl(team));
    const wsA = await a.widgetSessionId();
    const wsB = await b.widgetSessionId();
    check(wsA && wsB && wsA !== wsB, 'both contexts got the same widget_session_id', { wsA, wsB });
    await b.open();
    await sleep(t(2000));
    check((await b.count(first)) === 0, "visitor B's widget shows visitor A's message");
    const listB = await b.sdk((ph) => ph.conversations.getTickets());
    check(listB && listB.count === 0 && listB.results.length === 0, "posthog.conversations.getTickets() in B lists tickets", listB);
    // B asks for A's ticket directly, from its page (cross-origin, with B's widget_session_id)
    const probe = await b.page.evaluate(
        async ([base, token, tid, ws]) => {
            const out = {};
            const r1 = await fetch(`${base}/api/conversations/v1/widget/messages/${tid}?widget_session_id=${ws}&limit=50`, {
                headers: { 'X-Conversations-Token': token },
            });
            out.messages = { status: r1.status, body: (await r1.text()).slice(0, 300) };
            const r2 = await fetch(`${base}/api/conversations/v1/widget/message`, {
                method: 'POST',
                headers: { 'X-Conversations-Token': token, 'Content-Type': 'application/json' },
                body: JSON.stringify({ message: 'hijack', ticket_id: tid, widget_session_id: ws, distinct_id: 'someone-else-123', traits: { name: null, email: null } }),
            });
            out.post = { status: r2.status, body: (await r2.text()).slice(0, 300) };
            const r3 = await fetch(`${base}/api/conversations/v1/widget/messages/${tid}/read`, {
                method: 'POST',
                headers: { 'X-Conversations-Token': token, 'Content-Type': 'application/json' },
                body: JSON.stringify({ widget_session_id: ws }),
            });
            out.read = { status: r3.status };
            return out;
        },
        [COLLOQUY_URL, team.public_token, ticketId, wsB],
    );
    s.note(`B → A's ticket: GET messages ${probe.messages.status}, POST message ${probe.post.status}, POST read ${probe.read.status}`);
    check(probe.messages.status !== 200 && !probe.messages.body.includes(first), "B read A's messages", probe);
    check(probe.post.status !== 200, "B wrote into A's ticket", probe);
    check(probe.read.status !== 200, "B marked A's ticket read", probe);

    const mB = `I am visitor B (${rand()})`;
    await b.send(mB);
    await sleep(t(6000));
    check((await b.count(first)) === 0, "after sending, B's widget shows A's message");
    check((await a.count(mB)) === 0, "A's widget shows B's message");
    const inbox = await operator.list(team);
    check(inbox.count === 2, `operator inbox count is ${inbox.count}, expected 2`, inbox);
    const detailA = await operator.ticket(team, ticketId);
    check(detailA.messages.length === 1 && !detailA.messages.some((m) => m.content === 'hijack'), "A's ticket got a message that is not A's", detailA.messages);
    await a.shot('visitor-a');
    await b.shot('visitor-b');
});

scenario('restore', 'restore by email moves the tickets to a new browser context', async (s) => {
    check(DATABASE_URL, 'DATABASE_URL is not set: the restore mail is read from the outbox table');
    const team = await createTeam('restore', { allowed_widget_domains: ['127.0.0.1'] });
    const email = `e2e-${rand()}@example.test`;

    // A: a visitor who gives name and email in the widget's form, then writes
    const a = await new Visitor('visitor-a', s).start(pageUrl(team, 'email/'));
    await a.open();
    await a.page.waitForSelector(`${SEL.container} input[placeholder="you@example.com"]`);
    await a.page.fill(`${SEL.container} input[placeholder="Your name"]`, 'Rita Restore');
    await a.page.fill(`${SEL.container} input[placeholder="you@example.com"]`, email);
    await a.shot('identify');
    await a.page.locator(`${SEL.container} button`, { hasText: 'Start Chat' }).click();
    await a.page.waitForSelector(SEL.input);
    const m1 = `My parcel never arrived (${rand()})`;
    const sent = await a.send(m1);
    const ticketId = sent.ticket_id;
    const detail = await operator.ticket(team, ticketId);
    check(detail.traits && detail.traits.email === email, `the ticket's traits.email is ${JSON.stringify(detail.traits?.email)}, expected ${email}`, detail.traits);
    await sleep(t(1500));
    const r1 = `We are on it, Rita (${rand()})`;
    await operator.reply(team, ticketId, r1);
    await a.waitText(r1, 20000, 'the operator reply in A');
    const wsA = await a.widgetSessionId();

    // B: another browser, no history; asks for a restore link through the widget footer
    const b = await new Visitor('visitor-b', s).start(pageUrl(team));
    await b.open();
    check((await b.count(m1)) === 0, "a new visitor already sees A's message");
    await b.page.locator(`${SEL.container} button`, { hasText: 'Recover them here' }).click();
    await b.page.fill(`${SEL.container} input[type="email"]`, email);
    await b.page.locator(`${SEL.container} button`, { hasText: 'Send restore link' }).click();
    await b.waitText('Check your email for a secure restore link', 10000, 'the restore request confirmation');
    const req = b.traffic.find((x) => x.method === 'POST' && x.url.startsWith('/api/conversations/v1/widget/restore/request'));
    check(req && req.status === 200, `POST …/restore/request answered ${req?.status}`, req);
    await b.shot('restore-requested');

    // the mail (outbox: SMTP is not configured in tests)
    const mails = await waitFor(`a mail to ${email} in the outbox table`, async () => {
        const rows = await outboxFor(email);
        return rows.length ? rows : null;
    }, { timeout: 15000, interval: 500 });
    check(mails.length === 1, `${mails.length} mails to ${email}, expected 1`, mails);
    const body = `${mails[0].subject || ''}\n${mails[0].body || ''}`;
    const link = (body.match(/https?:\/\/[^\s"'<>]*[?&]ph_conv_restore=[^\s"'<>&]+/) || [])[0];
    check(link, 'no ?ph_conv_restore= link in the mail', mails[0]);
    check(link.startsWith(`${pageUrl(team)}?ph_conv_restore=`), `the link ${link} is not the request_url (${pageUrl(team)}) + ?ph_conv_restore=…`);
    const restoreToken = new URL(link).searchParams.get('ph_conv_restore');

    // C: a fresh browser context opens the link
    const c = await new Visitor('visitor-c', s).start();
    await c.goto(link);
    const exchange = await waitFor('POST …/v1/widget/restore answered', () =>
        c.traffic.find((x) => x.method === 'POST' && x.url.startsWith('/api/conversations/v1/widget/restore') && !x.url.includes('/request') && x.response !== undefined),
    );
    check(exchange.status === 200, `POST …/restore answered ${exchange.status}`, exchange);
    const result = JSON.parse(exchange.response);
    check(result.status === 'success', `restore status ${result.status}, expected success`, result);
    check(Array.isArray(result.migrated_ticket_ids) && result.migrated_ticket_ids.includes(ticketId), 'migrated_ticket_ids lacks the ticket', result);
    await waitFor('the restore token removed from the address bar', async () => !c.page.url().includes('ph_conv_restore'), { timeout: 5000 });
    const wsC = await c.widgetSessionId();
    check(wsC === result.widget_session_id, `the SDK's widget_session_id is ${wsC}, the restore answered ${result.widget_session_id}`);
    check((await c.sdk((ph) => ph.conversations.getCurrentTicketId())) === ticketId, "the SDK's current ticket is not the restored one");
    await c.open();
    // posthog-js 1.449.2 polls the restored ticket once *before* it renders the widget: that poll
    // moves its cursor past the history it cannot show yet, so the page that opened the link
    // shows the greeting only; the history appears from the next page load on (SDK behaviour).
    const shownAtOnce = await waitFor('history', async () => (await c.count(m1)) > 0, { timeout: 4000 }).then(() => true, () => false);
    await c.shot('restored-first-page');
    if (!shownAtOnce) {
        s.note('the page that opened the restore link showed no history until a reload (posthog-js polls before rendering; the server answered the history)');
        const early = c.traffic.find((x) => x.url.startsWith(`/api/conversations/v1/widget/messages/${ticketId}?`) && x.status === 200);
        check(early && early.response.includes(m1) && early.response.includes(r1), "the server did not answer the restored ticket's history to the SDK's first poll", early);
        await c.reload();
        await c.open();
    }
    await c.waitText(m1, 15000, "A's message in the restored context");
    await c.waitText(r1, 10000, "the operator's reply in the restored context");
    check((await c.count(m1)) === 1 && (await c.count(r1)) === 1, 'the restored history is not shown exactly once', await c.widgetText());
    await c.shot('restored');
    const after = await operator.ticket(team, ticketId);
    check(after.widget_session_id === wsC, `the ticket's widget_session_id is ${after.widget_session_id}, expected the new context's ${wsC}`);
    const listA = await v1.tickets(team, wsA);
    check(listA.count === 0, `the old session still lists ${listA.count} ticket(s) after the move`, listA);
    // the link works once
    // the link works once: B's browser tries the same token (from the allowed origin)
    const again = await b.page.evaluate(
        async ([base, token, rt, ws]) => {
            const r = await fetch(`${base}/api/conversations/v1/widget/restore`, {
                method: 'POST',
                headers: { 'X-Conversations-Token': token, 'Content-Type': 'application/json' },
                body: JSON.stringify({ restore_token: rt, widget_session_id: ws, distinct_id: 'e2e-replay-visitor' }),
            });
            return { status: r.status, text: await r.text() };
        },
        [COLLOQUY_URL, team.public_token, restoreToken, await b.widgetSessionId()],
    );
    check(again.status === 200 && JSON.parse(again.text).status === 'used', `a second use of the link answered ${again.status} ${again.text}`);
    // C can write on the restored ticket
    const m2 = `Thanks, found it from my phone (${rand()})`;
    const sentC = await c.send(m2);
    check(sentC.ticket_id === ticketId, `C's follow-up went to ${sentC.ticket_id}, expected ${ticketId}`);
    await c.shot('follow-up');
});

scenario('text-and-private-notes', 'markup is shown as plain text, never run; private notes never reach the widget', async (s) => {
    const { team, v, ticketId } = await visitorWithTicket(s, 'text-and-private-notes');
    const markup = `Is <b>this</b> & "that" 'ok'? <script>window.__e2eXss = 1</script> (${rand()})`;
    await v.send(markup);
    await sleep(t(1500));
    const note = `PRIVATE: customer looks like a reseller (${rand()})`;
    expectStatus(
        await api('POST', `/api/conversations/tickets/${ticketId}/messages`, {
            bearer: team.secret_api_key,
            body: { content: note, author_type: 'human', author_name: 'Sam', is_private: true },
        }),
        201,
        'operator POST private note',
    );
    const reply = `Yes <img src=x onerror="window.__e2eXss=2"> is fine & safe (${rand()})`;
    await operator.reply(team, ticketId, reply);
    await v.waitText(reply, 20000, 'the operator reply, as literal text');
    await sleep(t(6000)); // another poll
    check((await v.count(markup)) === 1, 'the visitor\'s markup is not shown once, literally', await v.widgetText());
    check((await v.count(note)) === 0 && (await v.count('PRIVATE:')) === 0, 'the private note shows in the widget');
    check((await v.page.evaluate(() => window.__e2eXss)) === undefined, 'markup from a message ran in the page');
    check((await v.page.locator(`${SEL.container} img[src="x"]`).count()) === 0, 'an <img> from a message was rendered as HTML');
    const polled = v.traffic.filter((x) => x.url.startsWith(`/api/conversations/v1/widget/messages/${ticketId}?`) && x.status === 200);
    check(polled.every((x) => !x.response.includes('PRIVATE:') && !x.response.includes('is_private')), 'a v1 messages response carries the private note or an is_private key', polled.find((x) => x.response.includes('PRIVATE:') || x.response.includes('is_private')));
    const vt = await v.tickets(team);
    check(vt.results[0]?.last_message === reply, `v1 tickets last_message is ${JSON.stringify(vt.results[0]?.last_message)}, expected the public reply verbatim`, vt);
    check(vt.results[0]?.message_count === 3, `v1 tickets message_count is ${vt.results[0]?.message_count}, expected 3 (the note not counted)`, vt);
    await v.shot('literal');
    // the history as served after a reload is the same literal text
    await v.reload();
    await v.open();
    await v.waitText(reply, 10000, 'the reply after a reload');
    check((await v.count(markup)) === 1 && (await v.count(note)) === 0, 'after a reload the history differs', await v.widgetText());
    check((await v.page.evaluate(() => window.__e2eXss)) === undefined, 'markup from the history ran in the page');
    const detail = await operator.ticket(team, ticketId);
    check(detail.messages.some((m) => m.content === note && m.is_private === true), 'the operator does not see the private note');
    await v.shot('after-reload');
});

scenario('cross-origin-errors', "refusals reach the page's JS with their status (CORS on errors), not as network failures", async (s) => {
    // The honeypot and unknown-ticket calls below are what the suspicion detector scores; its
    // IP block lands asynchronously and, when it beat the burst, turned the burst into 403
    // `blocked` (seen once in CI). Blocking is not under test here: zero weights.
    const quiet = { honeypot: 0, repeated_message: 0, repeated_across_visitors: 0, link_density: 0, enumeration: 0, rate_limited: 0, burst_after_creation: 0 };
    const team = await createTeam('cross-origin-errors', { rate_limits: { widget_session_per_minute: 3 }, suspicion: { weights: quiet } });
    const v = await new Visitor('visitor', s).start(pageUrl(team));
    // the widget of this page stays closed and has no ticket: it polls nothing, so the burst
    // below is the only use of its fresh widget_session_id (the budget counts every endpoint)
    const out = await v.page.evaluate(
        async ([base, token, nodes]) => {
            const ws = crypto.randomUUID();
            const call = async (label, url, init) => {
                try {
                    const r = await fetch(base + url, init);
                    return { label, status: r.status, body: (await r.text()).slice(0, 200), retryAfter: r.headers.get('retry-after') };
                } catch (e) {
                    return { label, status: 0, error: String(e) };
                }
            };
            const h = { 'X-Conversations-Token': token };
            const res = [];
            res.push(await call('no widget_session_id → 400', '/api/conversations/v1/widget/tickets', { headers: h }));
            res.push(await call('unknown token → 403', `/api/conversations/v1/widget/tickets?widget_session_id=${ws}`, { headers: { 'X-Conversations-Token': 'pub_unknown_e2e' } }));
            res.push(await call('unknown ticket → 404', `/api/conversations/v1/widget/messages/${crypto.randomUUID()}?widget_session_id=${crypto.randomUUID()}`, { headers: h }));
            res.push(await call('honeypot → 400', '/api/conversations/v1/widget/message', {
                method: 'POST',
                headers: { ...h, 'Content-Type': 'application/json' },
                body: JSON.stringify({ message: 'bot', widget_session_id: crypto.randomUUID(), distinct_id: 'bot-e2e-1234', _hp: 'x' }),
            }));
            for (let i = 0; i < 3 * nodes + 3; i++) {
                res.push(await call(`burst ${i + 1} (limit 3/min) → 429 at the end`, `/api/conversations/v1/widget/tickets?widget_session_id=${ws}`, { headers: h }));
            }
            return res;
        },
        [COLLOQUY_URL, team.public_token, RATE_LIMIT_NODES],
    );
    for (const r of out) s.note(`${r.label}: ${r.status}${r.retryAfter ? ' (Retry-After ' + r.retryAfter + ')' : ''}`);
    const byLabel = (l) => out.find((r) => r.label.startsWith(l));
    check(out.every((r) => r.status !== 0), 'a refusal reached the page as a network failure (no CORS header on the error)', out.filter((r) => r.status === 0));
    check(byLabel('no widget_session_id').status === 400, 'GET v1 tickets without widget_session_id is not 400', byLabel('no widget_session_id'));
    check(byLabel('unknown token').status === 403, 'an unknown token is not 403 on the v1 surface', byLabel('unknown token'));
    check(byLabel('unknown ticket').status === 404, 'an unknown ticket is not 404', byLabel('unknown ticket'));
    check(byLabel('honeypot').status === 400, 'a truthy _hp is not 400 on the v1 surface', byLabel('honeypot'));
    const burst = out.filter((r) => r.label.startsWith('burst'));
    check(burst.slice(0, 3).every((r) => r.status === 200), 'the first 3 calls of the burst are not all 200', burst);
    // Budgets are per node until limits are shared (docs/scale-out.md): behind a round-robin
    // load balancer over N nodes the refusals start by call 3N+1.
    const over = burst.slice(3 * RATE_LIMIT_NODES);
    check(over.every((r) => r.status === 429), 'calls over widget_session_per_minute=3 are not 429', burst);
    check(over.every((r) => /"code"\s*:\s*"rate_limited"/.test(r.body)), 'a 429 body is not {"code":"rate_limited"}', burst);
    const inbox = await operator.list(team);
    check(inbox.count === 0, `refused calls stored something: operator inbox count ${inbox.count}`, inbox);
});

// ------------------------------------------------------------------------------------------
// runner

function selected() {
    const only = (process.env.E2E_ONLY || ARGS.filter((a) => !a.startsWith('--')).join(','))
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean);
    let list = SCENARIOS;
    if (SMOKE) list = list.filter((s) => s.smoke);
    if (only.length) list = list.filter((s) => only.includes(s.slug) || only.includes(String(s.n)));
    return list;
}

function dumpFailure(s, err) {
    const lines = [];
    lines.push(`    reason: ${err.message}`);
    if (err.details !== undefined) {
        const d = typeof err.details === 'string' ? err.details : JSON.stringify(err.details, null, 1);
        lines.push(`    details: ${d.slice(0, 2500).replace(/\n/g, '\n      ')}`);
    }
    if (!(err instanceof CheckError) && err.stack) lines.push(`    ${err.stack.split('\n').slice(1, 4).join('\n    ')}`);
    for (const v of s.visitors) {
        const last = v.traffic.slice(-10);
        if (last.length) {
            lines.push(`    ${v.name}: last colloquy exchanges seen by the browser:`);
            for (const x of last) {
                lines.push(`      ${x.method} ${x.url} → ${x.status}${x.error ? ' ' + x.error : ''}${x.request ? '  req ' + x.request.slice(0, 200) : ''}${x.response ? '  res ' + x.response.slice(0, 300) : ''}`);
            }
        }
        if (v.console.length) {
            lines.push(`    ${v.name}: console:`);
            for (const c of v.console.slice(-8)) lines.push(`      ${c}`);
        }
    }
    return lines.join('\n');
}

async function main() {
    if (LIST) {
        for (const s of SCENARIOS) console.log(`${s.n}  ${s.slug.padEnd(20)} ${s.title}`);
        return 0;
    }
    if (!SMOKE) {
        const missing = [];
        if (!COLLOQUY_URL) missing.push('COLLOQUY_URL');
        if (!ADMIN_TOKEN) missing.push('ADMIN_TOKEN');
        if (missing.length) {
            log(`run.mjs: set ${missing.join(' and ')} (or use --smoke, which needs no server)`);
            return 2;
        }
        const health = await fetch(`${COLLOQUY_URL}/healthz`).then((r) => r.status).catch((e) => e.message);
        if (health !== 200) {
            log(`run.mjs: ${COLLOQUY_URL}/healthz answered ${health}`);
            return 2;
        }
    }
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    for (const f of fs.readdirSync(ARTIFACTS)) {
        if (/\.(png|json)$/.test(f)) fs.rmSync(path.join(ARTIFACTS, f));
    }

    const server = await startStaticServer();
    SITE = `http://127.0.0.1:${server.address().port}`;
    log(`run.mjs: test site ${SITE}, colloquy ${COLLOQUY_URL || '(none: smoke)'}, browser ${CHROMIUM_PATH}`);
    browser = await launchBrowser();
    log(`run.mjs: ${CHROMIUM_PATH} ${browser.version()} (playwright-core ${JSON.parse(fs.readFileSync(path.join(HERE, 'node_modules/playwright-core/package.json'), 'utf8')).version})`);

    const results = [];
    for (const sc of selected()) {
        const s = {
            slug: sc.slug,
            visitors: [],
            notes: [],
            note(x) {
                this.notes.push(x);
            },
        };
        const started = Date.now();
        let err = null;
        try {
            await sc.fn(s);
        } catch (e) {
            err = e;
        }
        const secs = ((Date.now() - started) / 1000).toFixed(1);
        if (err) {
            for (const v of s.visitors) await v.shot(`FAIL-${v.name}`);
            console.log(`FAIL  ${sc.n} ${sc.slug} — ${sc.title} (${secs} s)`);
            log(dumpFailure(s, err));
        } else {
            console.log(`PASS  ${sc.n} ${sc.slug} — ${sc.title} (${secs} s)`);
        }
        for (const n of s.notes) log(`    note: ${n}`);
        fs.writeFileSync(
            path.join(ARTIFACTS, `${sc.slug}-traffic.json`),
            JSON.stringify(Object.fromEntries(s.visitors.map((v) => [v.name, { traffic: v.traffic, console: v.console }])), null, 1),
        );
        results.push({ scenario: sc.slug, pass: !err, seconds: Number(secs), error: err ? err.message : undefined, notes: s.notes });
        for (const v of s.visitors) await v.dispose();
    }
    await browser.close();
    server.close();
    fs.writeFileSync(path.join(ARTIFACTS, 'results.json'), JSON.stringify(results, null, 1));
    const failed = results.filter((r) => !r.pass).length;
    log(`run.mjs: ${results.length - failed} passed, ${failed} failed; screenshots and traffic logs in ${ARTIFACTS}`);
    return failed || !results.length ? 1 : 0;
}

main().then(
    (code) => process.exit(code),
    async (e) => {
        log(`run.mjs: ${e.stack || e.message}`);
        await browser?.close().catch(() => {});
        process.exit(2);
    },
);
