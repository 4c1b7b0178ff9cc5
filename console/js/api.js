// The console's only way to the server: the public HTTP API, with a bearer credential that
// lives in sessionStorage (this tab only; never a cookie, so the server never receives it
// unless the console sends it on purpose).

const KEYS = { admin: 'colloquy.console.admin', team: 'colloquy.console.team' };

/** Credentials by kind: `admin` (ADMIN_TOKEN) or `team` (a team's secret API key). */
export const credentials = {
    get: (kind) => sessionStorage.getItem(KEYS[kind]) || '',
    set: (kind, value) => sessionStorage.setItem(KEYS[kind], value),
    clear: (kind) => sessionStorage.removeItem(KEYS[kind]),
};

/** A failed call, with the contract's `{error, code}`. */
export class ApiError extends Error {
    constructor(status, code, message) {
        super(message);
        this.status = status;
        this.code = code;
    }
}

/** `method path` with the `kind` credential; resolves to the JSON body (null for 204). */
export async function call(kind, method, path, body) {
    const headers = { Authorization: `Bearer ${credentials.get(kind)}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
        res = await fetch(path, {
            method,
            headers,
            body: body === undefined ? undefined : JSON.stringify(body),
            cache: 'no-store',
            credentials: 'omit',
        });
    } catch (e) {
        throw new ApiError(0, 'network', `the server did not answer (${e.message})`);
    }
    if (res.status === 204) return null;
    const text = await res.text();
    let data = null;
    try {
        data = text ? JSON.parse(text) : null;
    } catch {
        data = null;
    }
    if (!res.ok) {
        throw new ApiError(res.status, data?.code || `http_${res.status}`, data?.error || res.statusText);
    }
    return data;
}

/**
 * Server-Sent Events read with fetch(): EventSource cannot send an Authorization header, and a
 * secret key must not travel in a URL. Reconnects after a drop with `Last-Event-ID`, so
 * nothing is missed; stops for good on 401/403/404 or when `signal` aborts.
 * `onEvent(name, data)` gets each event's parsed JSON; `onState('live'|'reconnecting'|'closed')`.
 */
export function stream(kind, path, { onEvent, onState = () => {}, signal }) {
    let lastId = '';
    const run = async () => {
        while (!signal.aborted) {
            const headers = { Authorization: `Bearer ${credentials.get(kind)}`, Accept: 'text/event-stream' };
            if (lastId) headers['Last-Event-ID'] = lastId;
            try {
                const res = await fetch(path, { headers, signal, cache: 'no-store', credentials: 'omit' });
                if ([401, 403, 404].includes(res.status)) {
                    onState('closed');
                    return;
                }
                if (!res.ok || !res.body) throw new Error(`status ${res.status}`);
                onState('live');
                const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
                let buffer = '';
                for (;;) {
                    const { value, done } = await reader.read();
                    if (done) break;
                    buffer += value.replace(/\r\n?/g, '\n');
                    let cut;
                    while ((cut = buffer.indexOf('\n\n')) >= 0) {
                        const block = buffer.slice(0, cut);
                        buffer = buffer.slice(cut + 2);
                        const ev = parseEvent(block);
                        if (ev.id) lastId = ev.id;
                        if (ev.data !== undefined) {
                            let data = null;
                            try {
                                data = JSON.parse(ev.data);
                            } catch {
                                continue;
                            }
                            onEvent(ev.name, data);
                        }
                    }
                }
            } catch (e) {
                if (signal.aborted) return;
            }
            onState('reconnecting');
            await new Promise((r) => setTimeout(r, 2000));
        }
    };
    run();
}

function parseEvent(block) {
    const ev = { name: 'message' };
    for (const line of block.split('\n')) {
        if (!line || line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') ev.name = value;
        else if (field === 'id') ev.id = value;
        else if (field === 'data') ev.data = ev.data === undefined ? value : `${ev.data}\n${value}`;
    }
    return ev;
}
