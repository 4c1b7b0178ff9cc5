// The console's entry point: two views behind two credentials, chosen by the URL's hash
// (#actors, #inbox). A credential is asked for once per tab and kept in sessionStorage.

import { call, credentials } from './api.js';
import { replace } from './dom.js';
import { ActorsView } from './actors.js';
import { InboxView, NAME_KEY } from './inbox.js';

const $ = (sel) => document.querySelector(sel);
const statusLine = $('#status');

function setStatus(text, isError = false) {
    replace(statusLine, text);
    statusLine.classList.toggle('error', isError);
}

/** One view: its sign-in form, its panel, and the object that fills it. */
function section({ kind, form, panel, field, check, make }) {
    const s = { kind, form: $(form), panel: $(panel), view: null };
    const showSignIn = (message = '') => {
        s.view?.stop();
        s.panel.hidden = true;
        s.form.hidden = false;
        replace(s.form.querySelector('[data-role="error"]'), message);
        s.form.querySelector('input').focus();
    };
    const showPanel = () => {
        s.form.hidden = true;
        s.panel.hidden = false;
        s.view ??= make(s.panel, {
            onUnauthorized: () => {
                credentials.clear(kind);
                showSignIn('The server refused this credential; sign in again.');
            },
            onStatus: setStatus,
        });
        s.view.start();
    };
    s.form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const data = new FormData(s.form);
        const value = String(data.get(field) || '').trim();
        if (!value) return;
        credentials.set(kind, value);
        if (data.has('name')) sessionStorage.setItem(NAME_KEY, String(data.get('name') || '').trim());
        try {
            await call(kind, 'GET', check);
        } catch (e) {
            credentials.clear(kind);
            replace(s.form.querySelector('[data-role="error"]'), e.status === 401 ? 'That credential was refused.' : e.message);
            return;
        }
        s.form.reset();
        showPanel();
    });
    s.panel.querySelector('[data-role="signout"]').addEventListener('click', () => {
        credentials.clear(kind);
        showSignIn();
    });
    s.enter = () => (credentials.get(kind) ? showPanel() : showSignIn());
    s.leave = () => s.view?.stop();
    return s;
}

const sections = {
    actors: section({
        kind: 'admin', form: '#signin-admin', panel: '#actors', field: 'token', check: '/api/ops/actors',
        make: (root, hooks) => new ActorsView(root, hooks),
    }),
    inbox: section({
        kind: 'team', form: '#signin-team', panel: '#inbox', field: 'key', check: '/api/conversations/tickets?limit=1',
        make: (root, hooks) => new InboxView(root, hooks),
    }),
};

function route() {
    const name = location.hash.replace('#', '') in sections ? location.hash.replace('#', '') : 'actors';
    for (const [n, s] of Object.entries(sections)) {
        const active = n === name;
        $(`#view-${n}`).hidden = !active;
        $(`#nav-${n}`).classList.toggle('active', active);
        if (!active) s.leave();
    }
    setStatus('');
    sections[name].enter();
}

window.addEventListener('hashchange', route);
route();
