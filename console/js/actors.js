// The actors view (admin token): /api/ops/actors once a second, rates from the difference of
// consecutive samples, tables of the numbers now and charts of the last five minutes.

import { call } from './api.js';
import { el, num, replace } from './dom.js';
import { Chart } from './chart.js';

const KINDS = [
    ['rate_limiters', 'Rate limiters'],
    ['ticket_supervisor', 'Ticket supervisor'],
    ['ticket_actors', 'Ticket actors'],
    ['suspicion_detector', 'Suspicion detector'],
    ['mailer', 'Mailer'],
];
const LABELS = Object.fromEntries(KINDS);
const WINDOW_SECONDS = 300;
const PERIOD_MS = 1000;

export class ActorsView {
    constructor(root, { onUnauthorized, onStatus }) {
        this.root = root;
        this.onUnauthorized = onUnauthorized;
        this.onStatus = onStatus;
        this.timer = null;
        this.prev = null;
        this.peaks = new Map(); // kind → [[t, queued]] over the window
        const chart = (name) => new Chart(root.querySelector(`[data-chart="${name}"]`), { windowSeconds: WINDOW_SECONDS });
        this.charts = { throughput: chart('throughput'), depth: chart('depth'), refusals: chart('refusals') };
    }

    start() {
        if (this.timer) return;
        const tick = async () => {
            await this.refresh();
            if (this.timer) this.timer = setTimeout(tick, PERIOD_MS);
        };
        this.timer = setTimeout(tick, 0);
    }

    stop() {
        clearTimeout(this.timer);
        this.timer = null;
    }

    async refresh() {
        let snap;
        try {
            snap = await call('admin', 'GET', '/api/ops/actors');
        } catch (e) {
            if (e.status === 401) {
                this.stop();
                this.onUnauthorized(e);
            } else {
                this.onStatus(`actors: ${e.message}`, true);
            }
            return;
        }
        const t = Date.now();
        const prev = this.prev;
        this.prev = { t, snap };
        const dt = prev ? (t - prev.t) / 1000 : 0;
        const rate = (now, before) => (prev && dt > 0 ? Math.max(0, (now - before) / dt) : 0);

        const kinds = KINDS.filter(([k]) => snap[k]);
        const handledRate = {};
        const depth = {};
        for (const [k] of kinds) {
            handledRate[k] = rate(snap[k].handled, prev?.snap[k]?.handled ?? snap[k].handled);
            depth[k] = snap[k].queued;
            const peaks = this.peaks.get(k) || [];
            peaks.push([t, snap[k].queued]);
            while (peaks.length && peaks[0][0] < t - WINDOW_SECONDS * 1000) peaks.shift();
            this.peaks.set(k, peaks);
        }
        const gc = snap.group_committer;
        const http = snap.http || { requests: 0 };
        const tiers = snap.rate_limited || {};
        const tierRate = {};
        for (const [tier, n] of Object.entries(tiers)) tierRate[tier] = rate(n, prev?.snap.rate_limited?.[tier] ?? n);
        const refusals = Object.values(tierRate).reduce((a, b) => a + b, 0);

        this.charts.throughput.push(t, { http: rate(http.requests, prev?.snap.http?.requests ?? http.requests), ...handledRate, ...(gc ? { commits: rate(gc.transactions, prev?.snap.group_committer?.transactions ?? gc.transactions) } : {}) },
            { http: 'HTTP requests', commits: 'Transactions', ...LABELS });
        this.charts.depth.push(t, { ...depth, ...(gc ? { committer: gc.queued } : {}), pool_waiting: snap.database_pool?.waiting ?? 0 },
            { committer: 'Group committer', pool_waiting: 'Pool waiters', ...LABELS });
        const activeTiers = Object.fromEntries(Object.entries(tierRate).filter(([tier, v]) => v > 0 || this.charts.refusals.series.has(tier)));
        this.charts.refusals.push(t, { all: refusals, ...activeTiers }, { all: 'All tiers' });
        for (const c of Object.values(this.charts)) c.render();

        this.renderTiles(snap, http, refusals, prev, rate);
        this.renderKinds(kinds, snap, handledRate);
        this.renderCommitter(gc, rate, prev);
        this.renderPool(snap.database_pool);
        this.renderTiers(tiers, tierRate);
        replace(this.root.querySelector('[data-role="updated"]'), `updated ${new Date(t).toLocaleTimeString()}`);
        this.onStatus('');
    }

    renderTiles(snap, http, refusals, prev, rate) {
        const pool = snap.database_pool || {};
        const tile = (field, label, value, hint) =>
            el('div', { class: 'tile', data: { field } }, el('span', { class: 'label' }, label), el('b', {}, value), hint ? el('span', { class: 'hint' }, hint) : null);
        replace(this.root.querySelector('[data-role="tiles"]'),
            tile('requests_per_second', 'HTTP requests/s', num(rate(http.requests, prev?.snap.http?.requests ?? http.requests)), `${num(http.server_errors)} 5xx since start`),
            tile('sse_streams_open', 'SSE streams open', num(snap.sse_streams_open)),
            tile('pool', 'DB pool in use', `${num((pool.size ?? 0) - (pool.available ?? 0))} / ${num(pool.max_size)}`, `${num(pool.waiting)} waiting`),
            tile('committer', 'Commit queue', snap.group_committer ? `${num(snap.group_committer.queued)} / ${num(snap.group_committer.capacity)}` : '–',
                snap.group_committer ? `${num(snap.group_committer.in_flight)} of ${num(snap.group_committer.max_in_flight)} transactions in flight` : ''),
            tile('refusals', 'Refusals/s', num(refusals)),
        );
    }

    renderKinds(kinds, snap, handledRate) {
        const rows = kinds.map(([k, label]) => {
            const s = snap[k];
            const windowPeak = Math.max(0, ...(this.peaks.get(k) || []).map(([, v]) => v));
            const cell = (field, value, cls) => el('td', { data: { field }, class: cls }, num(value));
            return el('tr', { data: { kind: k } },
                el('th', { scope: 'row' }, label),
                cell('alive', s.alive),
                cell('queued', s.queued),
                cell('peak_window', windowPeak),
                cell('peak_queued', s.peak_queued),
                cell('handled_per_second', handledRate[k]),
                cell('handled', s.handled),
                cell('errors', s.errors, s.errors ? 'warn' : undefined),
                cell('restarts', s.restarts, s.restarts ? 'warn' : undefined),
                cell('evictions', s.evictions),
                cell('dropped', s.dropped, s.dropped ? 'bad' : undefined));
        });
        replace(this.root.querySelector('#actor-table tbody'), rows);
    }

    renderCommitter(gc, rate, prev) {
        const body = this.root.querySelector('#committer-table tbody');
        if (!gc) return replace(body, kv('running', 'not reported'));
        replace(body,
            kv('running', gc.running ? 'yes' : 'no (direct commits)'),
            kv('queued', `${num(gc.queued)} of ${num(gc.capacity)}`),
            kv('in_flight', `${num(gc.in_flight)} of ${num(gc.max_in_flight)}`),
            kv('transactions_per_second', num(rate(gc.transactions, prev?.snap.group_committer?.transactions ?? gc.transactions))),
            kv('transactions', num(gc.transactions)),
            kv('failed', num(gc.failed), gc.failed ? 'warn' : undefined),
            kv('dropped', num(gc.dropped), gc.dropped ? 'bad' : undefined));
    }

    renderPool(pool) {
        const body = this.root.querySelector('#pool-table tbody');
        if (!pool) return replace(body);
        replace(body,
            kv('size', `${num(pool.size)} of ${num(pool.max_size)}`),
            kv('available', num(pool.available)),
            kv('waiting', num(pool.waiting), pool.waiting ? 'warn' : undefined));
    }

    renderTiers(tiers, tierRate) {
        const rows = Object.entries(tiers).map(([tier, n]) =>
            el('tr', { data: { tier } }, el('th', { scope: 'row' }, tier),
                el('td', { data: { field: 'per_second' } }, num(tierRate[tier])),
                el('td', { data: { field: 'total' }, class: n ? 'warn' : undefined }, num(n))));
        replace(this.root.querySelector('#tier-table tbody'), rows);
    }
}

function kv(field, value, cls) {
    return el('tr', { data: { field } }, el('th', { scope: 'row' }, field.replaceAll('_', ' ')), el('td', { class: cls }, value));
}
