// Building the page without HTML strings: every value, above all what visitors wrote, goes in
// as a text node or an attribute, never through innerHTML, so it can only ever show as text.

/**
 * `el('tr', {class: 'x', data: {kind: 'mailer'}, onclick: fn}, 'text', child)`.
 * Attributes are set with setAttribute; strings and numbers become text nodes.
 */
export function el(tag, attrs = {}, ...children) {
    return build(document.createElement(tag), attrs, children);
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** The same for SVG elements (the charts). */
export function svg(tag, attrs = {}, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(node, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'data') {
            for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = String(dv);
        } else if (k.startsWith('on') && typeof v === 'function') {
            node.addEventListener(k.slice(2), v);
        } else {
            node.setAttribute(k, v === true ? '' : String(v));
        }
    }
    append(node, children);
    return node;
}

function append(node, children) {
    for (const c of children.flat()) {
        if (c === undefined || c === null || c === false) continue;
        node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
}

/** Replaces a node's children. */
export function replace(node, ...children) {
    node.replaceChildren();
    append(node, children);
}

/** `12345` → `12,345`; fractions to one decimal. */
export function num(n) {
    if (n === undefined || n === null || Number.isNaN(n)) return '–';
    const digits = Math.abs(n) < 10 && !Number.isInteger(n) ? 1 : 0;
    return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** An ISO timestamp as "12 s ago", "5 min ago", or a date. */
export function ago(iso) {
    if (!iso) return '';
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return '';
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return new Date(t).toISOString().slice(0, 16).replace('T', ' ');
}
