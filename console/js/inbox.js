// The inbox view (a team's secret key): tickets by status with unread counts and the last
// message, one ticket's whole conversation (private notes marked), replies, private notes,
// status changes, the visitor typing and new messages live over the operator stream, and the
// suspicious visitors and blocks. Everything visitors wrote is put in as text (dom.js).

import { call, stream } from './api.js';
import { el, replace, ago, num } from './dom.js';

const STATUSES = ['new', 'open', 'pending', 'on_hold', 'resolved'];
const LIST_PERIOD_MS = 3000;
const SIDE_PERIOD_MS = 10000;
const TYPING_SHOWN_MS = 5000;
const NAME_KEY = 'colloquy.console.name';

export class InboxView {
    constructor(root, { onUnauthorized, onStatus }) {
        this.root = root;
        this.onUnauthorized = onUnauthorized;
        this.onStatus = onStatus;
        this.status = ''; // '' = every status
        this.selected = null; // ticket id
        this.timers = [];
        this.streamAbort = null;
        this.lastTypingSent = 0;
        this.renderTabs({});
    }

    start() {
        if (this.timers.length) return;
        const every = (fn, ms) => {
            fn();
            this.timers.push(setInterval(fn, ms));
        };
        every(() => this.refreshList(), LIST_PERIOD_MS);
        every(() => this.refreshSide(), SIDE_PERIOD_MS);
        if (this.selected) this.select(this.selected); // back from another view: live again
    }

    stop() {
        this.timers.forEach(clearInterval);
        this.timers = [];
        this.closeStream();
    }

    /** Turns a failed call into a message, or a sign-out on 401. */
    failed(e, what) {
        if (e.status === 401) {
            this.stop();
            this.onUnauthorized(e);
        } else {
            this.onStatus(`${what}: ${e.message}`, true);
        }
    }

    // --- the list ----------------------------------------------------------------------

    async refreshList() {
        try {
            const q = this.status ? `&status=${encodeURIComponent(this.status)}` : '';
            const [list, ...counts] = await Promise.all([
                call('team', 'GET', `/api/conversations/tickets?limit=100${q}`),
                ...STATUSES.map((s) => call('team', 'GET', `/api/conversations/tickets?limit=1&status=${s}`)),
            ]);
            this.renderTabs(Object.fromEntries(STATUSES.map((s, i) => [s, counts[i].count])));
            this.renderList(list);
            this.onStatus('');
        } catch (e) {
            this.failed(e, 'inbox');
        }
    }

    renderTabs(counts) {
        const total = Object.values(counts).reduce((a, b) => a + b, 0);
        const tab = (value, label, n) =>
            el('button', {
                type: 'button', role: 'tab', class: 'tab', data: { status: value || 'all' },
                'aria-selected': String(this.status === value),
                onclick: () => {
                    this.status = value;
                    this.renderTabs(counts);
                    this.refreshList();
                },
            }, label, ' ', el('span', { class: 'count' }, n === undefined ? '' : num(n)));
        replace(this.root.querySelector('[data-role="statuses"]'),
            tab('', 'All', counts.new === undefined ? undefined : total),
            STATUSES.map((s) => tab(s, s.replace('_', ' '), counts[s])));
    }

    renderList(list) {
        const items = list.results.map((t) => {
            const who = t.distinct_id || (t.widget_session_id ? `session ${t.widget_session_id.slice(0, 8)}` : 'visitor');
            return el('li', { data: { ticketId: t.id, status: t.status }, class: t.id === this.selected ? 'selected' : undefined },
                el('button', { type: 'button', onclick: () => this.select(t.id) },
                    el('span', { class: 'line1' },
                        el('span', { class: 'number' }, `#${t.ticket_number}`),
                        el('span', { class: 'who' }, who),
                        el('span', { class: `badge status-${t.status}` }, t.status.replace('_', ' ')),
                        t.unread_team_count > 0 ? el('span', { class: 'badge unread', title: 'unread visitor messages' }, num(t.unread_team_count)) : null),
                    el('span', { class: 'preview' }, t.last_message || ''),
                    el('span', { class: 'when' }, ago(t.last_message_at || t.created_at))));
        });
        const ol = this.root.querySelector('[data-role="tickets"]');
        if (!items.length) replace(ol, el('li', { class: 'muted empty' }, 'No tickets.'));
        else replace(ol, items);
    }

    // --- one ticket --------------------------------------------------------------------

    async select(id) {
        this.selected = id;
        for (const li of this.root.querySelectorAll('[data-role="tickets"] li')) {
            li.classList.toggle('selected', li.dataset.ticketId === id);
        }
        this.closeStream();
        let ticket;
        try {
            ticket = await call('team', 'GET', `/api/conversations/tickets/${encodeURIComponent(id)}`);
        } catch (e) {
            return this.failed(e, 'ticket');
        }
        if (this.selected !== id) return;
        this.renderConversation(ticket);
        this.openStream(ticket);
        this.markRead(id);
    }

    /** The operator has seen the ticket: its unread count goes back to 0. */
    async markRead(id) {
        try {
            await call('team', 'POST', `/api/conversations/tickets/${encodeURIComponent(id)}/read`);
            this.refreshList();
        } catch (e) {
            this.failed(e, 'mark read');
        }
    }

    renderConversation(t) {
        const who = t.distinct_id || (t.widget_session_id ? `session ${t.widget_session_id}` : 'visitor');
        const traits = Object.entries(t.traits || {}).map(([k, v]) => el('li', {}, el('span', { class: 'muted' }, `${k}: `), String(v)));
        const status = el('select', { name: 'status', 'aria-label': 'Status', onchange: (ev) => this.setStatus(t.id, ev.target.value) },
            STATUSES.map((s) => el('option', { value: s, selected: s === t.status }, s.replace('_', ' '))));
        this.statusSelect = status;
        this.messages = el('ol', { class: 'messages', data: { role: 'messages' } });
        this.seen = new Set();
        this.lastAt = null;
        for (const m of t.messages || []) this.addMessage(m);
        this.typing = el('p', { class: 'typing', data: { role: 'typing' }, hidden: true }, 'The visitor is typing…');
        this.live = el('span', { class: 'live muted', data: { role: 'live' } }, 'connecting…');
        const text = el('textarea', { name: 'content', rows: 3, placeholder: 'Write a reply…', required: true, maxlength: 10000, oninput: () => this.sendTyping(t.id) });
        const error = el('p', { class: 'error', data: { role: 'error' } });
        const form = el('form', { class: 'composer', data: { role: 'composer' } },
            text,
            el('div', { class: 'actions' },
                el('button', { type: 'submit', data: { action: 'reply' } }, 'Send reply'),
                el('button', { type: 'submit', class: 'secondary', data: { action: 'note' } }, 'Add private note')),
            error);
        form.addEventListener('submit', async (ev) => {
            ev.preventDefault();
            const isPrivate = ev.submitter?.dataset.action === 'note';
            const content = text.value.trim();
            if (!content) return;
            const name = sessionStorage.getItem(NAME_KEY) || undefined;
            try {
                const m = await call('team', 'POST', `/api/conversations/tickets/${encodeURIComponent(t.id)}/messages`,
                    { content, author_type: 'human', author_name: name, is_private: isPrivate });
                this.addMessage(m);
                if (m.ticket_status) status.value = m.ticket_status;
                text.value = '';
                replace(error);
                this.refreshList();
            } catch (e) {
                replace(error, e.message);
                if (e.status === 401) this.failed(e, 'reply');
            }
        });
        replace(this.root.querySelector('[data-role="conversation"]'),
            el('header', { class: 'conv-head' },
                el('h3', {}, `#${t.ticket_number} `, el('span', { class: 'who' }, who)),
                el('label', { class: 'inline' }, 'Status ', status),
                this.live),
            el('div', { class: 'meta muted' },
                `opened ${ago(t.created_at)}`,
                t.assignee ? ` · assigned to ${t.assignee}` : '',
                t.suspicion_score ? ` · suspicion score ${t.suspicion_score}` : '',
                t.visitor_read_at ? ` · visitor read ${ago(t.visitor_read_at)}` : ''),
            traits.length ? el('ul', { class: 'traits' }, traits) : null,
            this.messages,
            this.typing,
            form);
    }

    addMessage(m) {
        if (!this.messages || this.seen.has(m.id)) return;
        this.seen.add(m.id);
        if (!this.lastAt || m.created_at > this.lastAt) this.lastAt = m.created_at;
        const author = m.author_type === 'customer' ? (m.author_name || 'Visitor') : (m.author_name || (m.author_type === 'AI' ? 'AI' : 'Operator'));
        const li = el('li', { class: `msg author-${m.author_type.toLowerCase()}${m.is_private ? ' private' : ''}`, data: { messageId: m.id, private: m.is_private } },
            el('div', { class: 'byline' },
                el('b', {}, author),
                m.is_private ? el('span', { class: 'badge note' }, 'Private note') : null,
                el('time', { datetime: m.created_at, title: m.created_at }, ago(m.created_at))),
            el('p', { class: 'content' }, m.content));
        // Keep the conversation in time order even when a live event overtakes a reply.
        const after = [...this.messages.children].find((c) => c.querySelector('time')?.getAttribute('datetime') > m.created_at);
        this.messages.insertBefore(li, after || null);
        li.scrollIntoView({ block: 'nearest' });
    }

    async setStatus(id, status) {
        try {
            await call('team', 'PATCH', `/api/conversations/tickets/${encodeURIComponent(id)}`, { status });
            this.refreshList();
        } catch (e) {
            this.failed(e, 'status');
        }
    }

    /** Tells the visitor an operator is typing, at most every 2 s. */
    sendTyping(id) {
        const now = Date.now();
        if (now - this.lastTypingSent < 2000) return;
        this.lastTypingSent = now;
        call('team', 'POST', `/api/conversations/tickets/${encodeURIComponent(id)}/typing`).catch(() => {});
    }

    openStream(ticket) {
        const abort = new AbortController();
        this.streamAbort = abort;
        const after = this.lastAt ? `?after=${encodeURIComponent(this.lastAt)}` : '';
        let typingTimer = null;
        stream('team', `/api/conversations/tickets/${encodeURIComponent(ticket.id)}/stream${after}`, {
            signal: abort.signal,
            onState: (s) => {
                if (this.streamAbort !== abort) return;
                replace(this.live, s === 'live' ? '● live' : s);
                this.live.classList.toggle('on', s === 'live');
            },
            onEvent: (name, data) => {
                if (this.streamAbort !== abort) return;
                if (name === 'message') {
                    const fresh = !this.seen.has(data.id);
                    this.addMessage(data);
                    if (data.author_type === 'customer') {
                        this.typing.hidden = true;
                        if (fresh && document.visibilityState === 'visible') this.markRead(ticket.id);
                    }
                } else if (name === 'status') {
                    this.statusSelect.value = data.ticket_status;
                } else if (name === 'typing') {
                    this.typing.hidden = false;
                    clearTimeout(typingTimer);
                    typingTimer = setTimeout(() => (this.typing.hidden = true), TYPING_SHOWN_MS);
                }
            },
        });
    }

    closeStream() {
        if (this.streamAbort) this.streamAbort.abort();
        this.streamAbort = null;
    }

    // --- suspicious visitors and blocks -------------------------------------------------

    async refreshSide() {
        try {
            const [suspicious, blocks] = await Promise.all([
                call('team', 'GET', '/api/conversations/suspicious'),
                call('team', 'GET', '/api/conversations/blocks'),
            ]);
            this.renderSuspicious(suspicious);
            this.renderBlocks(blocks);
        } catch (e) {
            this.failed(e, 'blocks');
        }
    }

    renderSuspicious(s) {
        const block = (body, label) => el('button', {
            type: 'button', class: 'small secondary',
            onclick: async () => {
                try {
                    await call('team', 'POST', '/api/conversations/blocks', { ...body, reason: 'blocked from the console' });
                    this.refreshSide();
                } catch (e) {
                    this.failed(e, 'block');
                }
            },
        }, label);
        const rows = s.results.map((r) => el('tr', {},
            el('td', {}, r.distinct_id || '–'),
            el('td', {}, r.ip || '–'),
            el('td', { class: r.score >= s.block_threshold ? 'bad' : 'warn' }, num(r.score)),
            el('td', {}, (r.reasons || []).join(', ')),
            el('td', {}, ago(r.last_seen_at)),
            el('td', { class: 'actions' },
                r.distinct_id ? block({ distinct_id: r.distinct_id }, 'Block visitor') : null,
                r.ip ? block({ ip: r.ip }, 'Block IP') : null)));
        const body = this.root.querySelector('#suspicious-table tbody');
        if (!rows.length) replace(body, el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'Nobody flagged.')));
        else replace(body, rows);
    }

    renderBlocks(b) {
        const rows = b.results.map((x) => el('tr', { data: { blockId: x.id } },
            el('td', {}, x.ip ? `IP ${x.ip}` : `visitor ${x.distinct_id}`),
            el('td', {}, x.reason || ''),
            el('td', {}, x.source),
            el('td', {}, x.expires_at ? x.expires_at.slice(0, 16).replace('T', ' ') : 'never'),
            el('td', { class: 'actions' }, el('button', {
                type: 'button', class: 'small', data: { action: 'lift' },
                onclick: async () => {
                    try {
                        await call('team', 'DELETE', `/api/conversations/blocks/${encodeURIComponent(x.id)}`);
                        this.refreshSide();
                    } catch (e) {
                        this.failed(e, 'lift block');
                    }
                },
            }, 'Lift'))));
        const body = this.root.querySelector('#blocks-table tbody');
        if (!rows.length) replace(body, el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'No active blocks.')));
        else replace(body, rows);
    }
}

export { NAME_KEY };
