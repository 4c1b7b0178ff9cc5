#!/usr/bin/env node
// tests/e2e/console.mjs — the operator console (/console/) in Debian's headless Chromium,
// driven by playwright-core, against a live colloquy (scripts/e2e.sh starts one and runs this
// after run.mjs).
//
// Scenarios:
//   console-actors  sign in with the admin token; every actor kind is listed; while a small
//                   load runs, each kind's numbers move and the charts draw
//   console-inbox   sign in with a team's secret key; a ticket a visitor opened through the
//                   widget API is listed; the visitor typing and a new message arrive live;
//                   the operator answers and the visitor's poll receives it; a private note is
//                   marked and never reaches the visitor; status change; suspicious visitors,
//                   a block and lifting it
//   console-xss     a visitor message `<img src=x onerror=alert(1)>` shows as text, no dialog
//
// Environment:
//   COLLOQUY_URL         base URL of a running colloquy (required)
//   ADMIN_TOKEN          its admin token (required)
//   CHROMIUM_PATH        browser binary (default /usr/bin/chromium; never downloaded)
//   E2E_ONLY             comma-separated scenario names to run (as for run.mjs; names of
//                        run.mjs's scenarios are ignored here)
//   E2E_TIMEOUT_FACTOR   multiplies every wait (default 1)
//   E2E_ARTIFACTS        screenshot directory on failure (default tests/e2e/artifacts)
//   CONSOLE_SCREENSHOTS  =docs: write docs/console/actors.png and docs/console/inbox.png
//
// Usage: node tests/e2e/console.mjs [scenario…] | --list

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const ARGS = process.argv.slice(2);
const COLLOQUY_URL = (process.env.COLLOQUY_URL || '').replace(/\/+$/, '');
const ADMIN_TOKEN = process.env.ADMIN_TOKEN || '';
const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const FACTOR = Number(process.env.E2E_TIMEOUT_FACTOR || '1') || 1;
const ARTIFACTS = path.resolve(process.env.E2E_ARTIFACTS || path.join(HERE, 'artifacts'));
const SCREENSHOTS = process.env.CONSOLE_SCREENSHOTS === 'docs' ? path.join(ROOT, 'docs/console') : null;
const KINDS = ['rate_limiters', 'ticket_supervisor', 'ticket_actors', 'suspicion_detector', 'mailer'];
const XSS = '<img src=x onerror=alert(1)>';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rand = (n = 4) => crypto.randomBytes(n).toString('hex');
const t = (ms) => Math.round(ms * FACTOR);
const log = (...a) => process.stderr.write(a.join(' ') + '\n');

class CheckError extends Error {}

function check(cond, message) {
    if (!cond) throw new CheckError(message);
}

/** Polls fn() until it returns a truthy value. */
async function waitFor(description, fn, { timeout = 10000, interval = 250 } = {}) {
    const deadline = Date.now() + t(timeout);
    let last;
    for (;;) {
        try {
            last = await fn();
            if (last) return last;
        } catch (e) {
            last = e.message;
        }
        if (Date.now() > deadline) throw new CheckError(`timed out after ${t(timeout) / 1000} s waiting for: ${description} (last: ${JSON.stringify(last)})`);
        await sleep(interval);
    }
}

// --- colloquy from Node: the admin, the visitors, the operator's checks ---------------------

async function api(method, urlPath, { bearer, token, body, headers = {} } = {}) {
    const h = { ...headers };
    if (bearer) h.Authorization = `Bearer ${bearer}`;
    if (token) h['X-Conversations-Token'] = token;
    if (body !== undefined) h['Content-Type'] = 'application/json';
    const res = await fetch(COLLOQUY_URL + urlPath, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json = null;
    try {
        json = text ? JSON.parse(text) : null;
    } catch {
        json = text;
    }
    return { status: res.status, body: json };
}

async function createTeam(extra = {}) {
    const res = await api('POST', '/api/teams', { bearer: ADMIN_TOKEN, body: { name: `console-e2e-${rand()}`, ...extra } });
    check(res.status === 201, `POST /api/teams answered ${res.status}: ${JSON.stringify(res.body)}`);
    return res.body;
}

const UNLIMITED = {
    message_distinct_id_per_minute: 1_000_000,
    message_ip_per_minute: 1_000_000,
    message_team_per_hour: 1_000_000,
    read_distinct_id_per_minute: 1_000_000,
};

async function visitorSays(team, distinctId, message, extra = {}) {
    const res = await api('POST', '/api/conversations/widget/message', { token: team.public_token, body: { distinct_id: distinctId, message, ...extra } });
    check(res.status === 201, `the visitor's POST answered ${res.status}: ${JSON.stringify(res.body)}`);
    return res.body;
}

async function visitorPoll(team, distinctId, ticketId) {
    const res = await api('GET', `/api/conversations/widget/messages/${ticketId}?distinct_id=${encodeURIComponent(distinctId)}`, { token: team.public_token });
    check(res.status === 200, `the visitor's poll answered ${res.status}`);
    return res.body.messages;
}

/**
 * A small load for a few seconds: new tickets (supervisor spawns, ticket actors, rate
 * limiters, suspicion observations), polls, a few rate-limit refusals, and a restore mail (the
 * mailer). Returns when done.
 */
async function smallLoad(seconds) {
    const busy = await createTeam({ rate_limits: UNLIMITED });
    const tight = await createTeam({ rate_limits: { message_distinct_id_per_minute: 2 } });
    const shop = await createTeam({ allowed_widget_domains: ['shop.example.com'] });
    const origin = { Origin: 'https://shop.example.com' };
    const session = crypto.randomUUID();
    const email = `console-${rand()}@example.com`;
    const v1 = await api('POST', '/api/conversations/v1/widget/message', {
        token: shop.public_token, headers: origin,
        body: { widget_session_id: session, message: 'Where is my parcel?', traits: { email } },
    });
    check(v1.status === 200, `v1 message answered ${v1.status}: ${JSON.stringify(v1.body)}`);
    const restore = await api('POST', '/api/conversations/v1/widget/restore/request', {
        token: shop.public_token, headers: origin,
        body: { email, request_url: 'https://shop.example.com/help' },
    });
    check(restore.status === 200, `restore request answered ${restore.status}: ${JSON.stringify(restore.body)}`);

    const until = Date.now() + seconds * 1000;
    let i = 0;
    while (Date.now() < until) {
        const who = `load-${rand()}@example.com`;
        const opened = await visitorSays(busy, who, `load message ${i}`);
        await visitorSays(busy, who, 'and a follow-up', { ticket_id: opened.ticket_id });
        await visitorPoll(busy, who, opened.ticket_id);
        await api('POST', '/api/conversations/widget/message', { token: tight.public_token, body: { distinct_id: 'tight-visitor@example.com', message: `m${i}` } });
        i += 1;
        await sleep(150);
    }
}

// --- the browser ----------------------------------------------------------------------------

let browser;

/** A fresh context and page that records dialogs, console errors and CSP violations. */
async function openConsole(hash) {
    const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
    const page = await context.newPage();
    const seen = { dialogs: [], errors: [] };
    page.on('dialog', async (d) => {
        seen.dialogs.push(`${d.type()}: ${d.message()}`);
        await d.dismiss().catch(() => {});
    });
    page.on('console', (m) => {
        if (m.type() === 'error') seen.errors.push(m.text());
    });
    page.on('pageerror', (e) => seen.errors.push(`pageerror: ${e.message}`));
    await page.goto(`${COLLOQUY_URL}/console/#${hash}`);
    return { context, page, seen };
}

async function cellNumber(page, selector) {
    const text = await page.locator(selector).first().textContent({ timeout: t(5000) });
    const n = Number(String(text).replace(/,/g, ''));
    return Number.isFinite(n) ? n : NaN;
}

async function shot(page, name) {
    if (!SCREENSHOTS) return;
    fs.mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
    log(`console.mjs: wrote docs/console/${name}.png`);
}

function noSurprises(seen, what) {
    check(seen.dialogs.length === 0, `${what}: a dialog fired: ${seen.dialogs.join('; ')}`);
    const bad = seen.errors.filter((e) => !/Failed to load resource.*(401|404)/.test(e));
    check(bad.length === 0, `${what}: browser errors (a CSP violation shows here): ${bad.join(' | ')}`);
}

// --- scenarios ------------------------------------------------------------------------------

const SCENARIOS = {
    async 'console-actors'() {
        await withConsole('actors', 'console-actors', async (page, seen) => {
            await page.locator('#signin-admin').waitFor({ state: 'visible', timeout: t(10000) });
            await page.fill('#signin-admin input[name="token"]', 'not-the-token');
            await page.click('#signin-admin button[type="submit"]');
            await page.locator('#signin-admin [data-role="error"]', { hasText: 'refused' }).waitFor({ timeout: t(5000) });

            await page.fill('#signin-admin input[name="token"]', ADMIN_TOKEN);
            await page.click('#signin-admin button[type="submit"]');
            for (const kind of KINDS) {
                await page.locator(`#actor-table tr[data-kind="${kind}"]`).waitFor({ timeout: t(10000) });
            }
            const stored = await page.evaluate(() => ({ session: Object.values(sessionStorage), cookie: document.cookie, local: localStorage.length }));
            check(stored.session.includes(ADMIN_TOKEN), 'the admin token is kept in sessionStorage');
            check(stored.cookie === '' && stored.local === 0, `no cookie or localStorage holds it: ${JSON.stringify(stored)}`);

            const handled = async () => Object.fromEntries(await Promise.all(KINDS.map(async (k) => [k, await cellNumber(page, `#actor-table tr[data-kind="${k}"] td[data-field="handled"]`)])));
            // Through a load balancer each refresh of the page may come from another node, whose
            // counters are its own: so "before" is the least each kind showed over a few refreshes
            // (every node's, round-robin), and "moved" the most it showed since. On one node this
            // is the plain before/after of a counter that only grows.
            const before = await handled();
            for (const [k, v] of Object.entries(before)) check(Number.isFinite(v), `${k} shows a number of handled messages (got ${v})`);
            for (let i = 0; i < 6; i += 1) {
                await sleep(500);
                const now = await handled();
                for (const k of KINDS) before[k] = Math.min(before[k], now[k]);
            }
            const most = { ...before };
            const refusedBefore = await cellNumber(page, '#tier-table tr[data-tier="message_distinct_id"] td[data-field="total"]');

            await smallLoad(6);

            const moved = await waitFor('every actor kind\'s handled count to move in the page', async () => {
                const now = await handled();
                for (const k of KINDS) most[k] = Math.max(most[k], now[k]);
                const still = KINDS.filter((k) => !(most[k] > before[k]));
                return still.length === 0 ? { ...most } : false;
            }, { timeout: 15000, interval: 500 });
            log(`console.mjs: handled ${JSON.stringify(before)} → ${JSON.stringify(moved)}`);
            await waitFor('the refusals of the tight team to show under their tier', async () =>
                (await cellNumber(page, '#tier-table tr[data-tier="message_distinct_id"] td[data-field="total"]')) > refusedBefore);
            for (const chart of ['throughput', 'depth', 'refusals']) {
                await waitFor(`the ${chart} chart to draw`, async () => (await page.locator(`[data-chart="${chart}"] polyline`).count()) > 0);
            }
            // The page updates itself: the "updated" stamp changes without a reload.
            const stamp = await page.locator('[data-role="updated"]').textContent();
            await waitFor('the view to update again within 2 s', async () => (await page.locator('[data-role="updated"]').textContent()) !== stamp, { timeout: 2500 });
            const tiles = await page.locator('[data-role="tiles"] .tile').count();
            check(tiles >= 5, `the summary tiles are shown (${tiles})`);
            await waitFor('the committer and pool tables', async () =>
                (await page.locator('#committer-table tr[data-field="transactions"]').count()) === 1 && (await page.locator('#pool-table tr[data-field="size"]').count()) === 1);
            if (SCREENSHOTS) {
                // The picture for docs/console.md: the charts while a load runs.
                const load = smallLoad(25);
                await sleep(20000);
                await shot(page, 'actors');
                await load;
            }
            noSurprises(seen, 'actors');
        });
    },

    async 'console-inbox'() {
        const team = await createTeam({ rate_limits: UNLIMITED });
        const visitor = `dana-${rand()}@example.com`;
        const opened = await visitorSays(team, visitor, 'Hi! My order #1042 has not arrived yet. Can you check?', { traits: { name: 'Dana Fischer', email: visitor } });
        const ticket = opened.ticket_id;
        const other = await visitorSays(team, `lee-${rand()}@example.com`, 'Do you ship to Norway?', { traits: { name: 'Lee' } });
        const block = await api('POST', '/api/conversations/blocks', { bearer: team.secret_api_key, body: { distinct_id: `spammer-${rand()}@example.com`, reason: 'sent 40 links' } });
        check(block.status === 201, `POST /blocks answered ${block.status}`);

        await withConsole('inbox', 'console-inbox', async (page, seen) => {
            await page.locator('#signin-team').waitFor({ state: 'visible', timeout: t(10000) });
            await page.fill('#signin-team input[name="key"]', team.secret_api_key);
            await page.fill('#signin-team input[name="name"]', 'Sam from Support');
            await page.click('#signin-team button[type="submit"]');
            const item = page.locator(`[data-role="tickets"] li[data-ticket-id="${ticket}"]`);
            await item.waitFor({ timeout: t(10000) });
            check((await item.textContent()).includes('My order #1042'), 'the list shows the last message');
            check((await item.locator('.badge.unread').textContent()).trim() === '1', 'the list shows one unread message');
            const order = await page.locator('[data-role="tickets"] li').evaluateAll((lis) => lis.map((l) => l.dataset.ticketId));
            check(order.indexOf(other.ticket_id) < order.indexOf(ticket), 'newest activity first');
            await waitFor('status counts', async () => (await page.locator('[data-status="new"] .count').textContent()).trim() === '2');

            await item.locator('button').click();
            await item.locator('.badge.unread').waitFor({ state: 'detached', timeout: t(10000) });
            check((await api('GET', `/api/conversations/tickets/${ticket}`, { bearer: team.secret_api_key })).body.unread_team_count === 0, 'opening the ticket marks it read');
            const conv = page.locator('[data-role="conversation"]');
            await conv.locator('.msg', { hasText: 'My order #1042' }).waitFor({ timeout: t(10000) });
            await conv.locator('[data-role="live"]', { hasText: 'live' }).waitFor({ timeout: t(10000) });

            // The visitor types, then writes: both arrive without a reload.
            const typing = await api('POST', '/api/conversations/widget/typing', { token: team.public_token, body: { distinct_id: visitor, ticket_id: ticket } });
            check(typing.status === 204, `widget typing answered ${typing.status}`);
            await conv.locator('[data-role="typing"]').waitFor({ state: 'visible', timeout: t(5000) });
            await visitorSays(team, visitor, 'It was due last Friday.', { ticket_id: ticket });
            await conv.locator('.msg', { hasText: 'It was due last Friday.' }).waitFor({ timeout: t(5000) });

            // A private note: marked, and never shown to the visitor.
            await conv.locator('textarea[name="content"]').fill('Carrier says it is stuck in Hamburg; refund if not moving by Monday.');
            await conv.locator('button[data-action="note"]').click();
            const note = conv.locator('.msg.private', { hasText: 'stuck in Hamburg' });
            await note.waitFor({ timeout: t(5000) });
            check((await note.textContent()).includes('Private note'), 'the note is marked as private');

            // The reply: the visitor's poll receives it.
            const reply = 'Sorry about that, Dana! The parcel is on its way; you will have it by Tuesday.';
            await conv.locator('textarea[name="content"]').fill(reply);
            await conv.locator('button[data-action="reply"]').click();
            await conv.locator('.msg.author-human:not(.private)', { hasText: 'on its way' }).waitFor({ timeout: t(5000) });
            const polled = await waitFor("the visitor's poll to receive the answer", async () => {
                const msgs = await visitorPoll(team, visitor, ticket);
                return msgs.find((m) => m.content === reply) ? msgs : false;
            });
            const answer = polled.find((m) => m.content === reply);
            check(answer.author_type === 'human' && answer.author_name === 'Sam from Support', `the answer is the human's: ${JSON.stringify(answer)}`);
            check(!polled.some((m) => m.content.includes('Hamburg')), 'the private note never reaches the visitor');

            // Status change.
            await conv.locator('select[name="status"]').selectOption('pending');
            await waitFor('the ticket to be pending', async () => (await api('GET', `/api/conversations/tickets/${ticket}`, { bearer: team.secret_api_key })).body.status === 'pending');

            // Suspicious visitors and blocks: a bot fills the honeypot; the detector flags its
            // IP — never the distinct_id it names, which could be a victim's — and blocks the
            // IP (this test's, so the team's visitors here are blocked too).
            const bot = `bot-${rand()}@example.com`;
            await api('POST', '/api/conversations/widget/message', { token: team.public_token, body: { distinct_id: bot, message: 'cheap pills', _hp: 'http://spam.example' } });
            await page.locator('#suspicious-table tr', { hasText: 'honeypot' }).filter({ hasText: '127.0.0.1' }).first().waitFor({ timeout: t(20000) });
            check(!(await page.locator('#suspicious-table').textContent()).includes(bot), 'the honeypot flags the IP, not the distinct_id it names');
            const ipBlock = page.locator('#blocks-table tr', { hasText: 'detector' }).first();
            await ipBlock.waitFor({ timeout: t(20000) });
            const blockedId = await ipBlock.getAttribute('data-block-id');
            const refused = await api('POST', '/api/conversations/widget/message', { token: team.public_token, body: { distinct_id: visitor, ticket_id: ticket, message: 'hello?' } });
            check(refused.status === 403 && refused.body.code === 'blocked', `the detector's block applies: ${refused.status}`);
            const mine = page.locator(`#blocks-table tr[data-block-id="${block.body.id}"]`);
            check((await mine.textContent()).includes('sent 40 links'), 'the operator\'s block shows its reason');
            await shot(page, 'inbox');

            // Lifting the detector's block lets the visitor write again.
            await ipBlock.locator('button[data-action="lift"]').click();
            await page.locator(`#blocks-table tr[data-block-id="${blockedId}"]`).waitFor({ state: 'detached', timeout: t(15000) });
            const blocks = await api('GET', '/api/conversations/blocks', { bearer: team.secret_api_key });
            check(!blocks.body.results.some((b) => b.id === blockedId), 'the block is lifted');
            await waitFor('the visitor to be let in again', async () =>
                (await api('POST', '/api/conversations/widget/message', { token: team.public_token, body: { distinct_id: visitor, ticket_id: ticket, message: 'Thanks!' } })).status === 201);
            await page.locator('[data-role="conversation"] .msg', { hasText: 'Thanks!' }).waitFor({ timeout: t(5000) });

            const stored = await page.evaluate(() => ({ cookie: document.cookie, local: localStorage.length }));
            check(stored.cookie === '' && stored.local === 0, `no cookie or localStorage holds the key: ${JSON.stringify(stored)}`);
            noSurprises(seen, 'inbox');
        });
    },

    async 'console-xss'() {
        const team = await createTeam({ rate_limits: UNLIMITED });
        const visitor = `mallory-${rand()}@example.com`;
        const opened = await visitorSays(team, visitor, XSS, { traits: { name: '<b onmouseover=alert(2)>Mallory</b>' } });
        await withConsole('inbox', 'console-xss', async (page, seen) => {
            await page.fill('#signin-team input[name="key"]', team.secret_api_key);
            await page.click('#signin-team button[type="submit"]');
            const item = page.locator(`[data-role="tickets"] li[data-ticket-id="${opened.ticket_id}"]`);
            await item.waitFor({ timeout: t(10000) });
            check((await item.locator('.preview').textContent()) === XSS, 'the list preview shows the markup as text');
            await item.locator('button').click();
            const msg = page.locator('[data-role="conversation"] .msg .content').first();
            await msg.waitFor({ timeout: t(10000) });
            check((await msg.textContent()) === XSS, `the message shows as text: ${await msg.textContent()}`);
            // A second copy arrives live over the stream.
            await visitorSays(team, visitor, XSS, { ticket_id: opened.ticket_id });
            await waitFor('the live copy', async () => (await page.locator('[data-role="conversation"] .msg .content').count()) === 2);
            const injected = await page.evaluate(() => document.querySelectorAll('main img, main b[onmouseover], [onerror], [onmouseover]').length);
            check(injected === 0, `no element was made from visitor content (${injected})`);
            await page.locator('[data-role="conversation"] .msg').first().hover();
            await sleep(t(1000)); // an onerror would have fired by now
            noSurprises(seen, 'xss');
        });
    },
};

/** Runs `fn(page, seen)` on a fresh console page; on failure keeps a screenshot in artifacts/. */
async function withConsole(hash, name, fn) {
    const { context, page, seen } = await openConsole(hash);
    try {
        await fn(page, seen);
    } catch (e) {
        fs.mkdirSync(ARTIFACTS, { recursive: true });
        await page.screenshot({ path: path.join(ARTIFACTS, `FAIL-${name}.png`), fullPage: true }).catch(() => {});
        throw e;
    } finally {
        await context.close();
    }
}

async function main() {
    if (ARGS.includes('--list')) {
        for (const name of Object.keys(SCENARIOS)) console.log(name);
        return 0;
    }
    if (!COLLOQUY_URL || !ADMIN_TOKEN) {
        log('console.mjs: set COLLOQUY_URL and ADMIN_TOKEN');
        return 2;
    }
    const only = (process.env.E2E_ONLY || ARGS.filter((a) => !a.startsWith('--')).join(','))
        .split(',').map((x) => x.trim()).filter(Boolean);
    const unknown = only.filter((n) => n.startsWith('console-') && !(n in SCENARIOS));
    if (unknown.length) {
        log(`console.mjs: no scenario ${unknown.join(', ')} (try --list)`);
        return 2;
    }
    const names = Object.keys(SCENARIOS).filter((n) => !only.length || only.includes(n) || only.includes('console'));
    if (!names.length) return 0;
    if (!fs.existsSync(CHROMIUM_PATH)) {
        log(`console.mjs: no browser at ${CHROMIUM_PATH} (apt-get install chromium)`);
        return 2;
    }
    browser = await chromium.launch({
        executablePath: CHROMIUM_PATH,
        headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
        timeout: 60000,
    });
    let failed = 0;
    for (const name of names) {
        const started = Date.now();
        try {
            await SCENARIOS[name]();
            console.log(`PASS  ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
        } catch (e) {
            failed += 1;
            console.log(`FAIL  ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
            log(`    reason: ${e.message}`);
            if (!(e instanceof CheckError) && e.stack) log(`    ${e.stack.split('\n').slice(1, 4).join('\n    ')}`);
        }
    }
    await browser.close();
    return failed ? 1 : 0;
}

main().then((code) => process.exit(code), (e) => {
    log(`console.mjs: ${e.stack || e}`);
    process.exit(1);
});
