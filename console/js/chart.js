// Small time-series charts, drawn as SVG by hand: the last few minutes of a few series, so a
// spike is seen rather than read. No library; colours come from the stylesheet (.s0 … .s7).

import { el, svg, num, replace } from './dom.js';

const W = 480;
const H = 140;
const PAD = { left: 44, right: 8, top: 8, bottom: 18 };

export class Chart {
    /**
     * @param {HTMLElement} figure  where the chart goes (its figcaption is kept)
     * @param {{windowSeconds?: number}} options  how much history to show
     */
    constructor(figure, { windowSeconds = 300 } = {}) {
        this.windowMs = windowSeconds * 1000;
        this.series = new Map(); // key → {label, points: [[t, v]]}
        this.plot = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'plot', role: 'img' });
        this.legend = el('ul', { class: 'legend' });
        figure.append(this.plot, this.legend);
    }

    /** Adds one sample per series at time `t` (ms); series appear in first-seen order. */
    push(t, values, labels = {}) {
        for (const [key, v] of Object.entries(values)) {
            if (!this.series.has(key)) this.series.set(key, { label: labels[key] || key, points: [] });
            const s = this.series.get(key);
            s.points.push([t, Number.isFinite(v) ? v : 0]);
            while (s.points.length && s.points[0][0] < t - this.windowMs) s.points.shift();
        }
        this.now = t;
    }

    render() {
        const now = this.now || Date.now();
        const from = now - this.windowMs;
        let max = 0;
        for (const s of this.series.values()) for (const [, v] of s.points) max = Math.max(max, v);
        const top = niceCeil(max);
        const x = (t) => PAD.left + ((t - from) / this.windowMs) * (W - PAD.left - PAD.right);
        const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
        const nodes = [];
        for (const frac of [0, 0.5, 1]) {
            const v = top * frac;
            nodes.push(svg('line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
            const label = v.toLocaleString('en-US', { maximumFractionDigits: 2 });
            nodes.push(svg('text', { class: 'axis', x: PAD.left - 4, y: y(v) + 4, 'text-anchor': 'end' }, label));
        }
        const minutes = Math.round(this.windowMs / 60000);
        nodes.push(svg('text', { class: 'axis', x: PAD.left, y: H - 4 }, `−${minutes} min`));
        nodes.push(svg('text', { class: 'axis', x: W - PAD.right, y: H - 4, 'text-anchor': 'end' }, 'now'));
        const items = [];
        let i = 0;
        for (const [key, s] of this.series) {
            const cls = `s${i % 8}`;
            if (s.points.length > 1) {
                const pts = s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
                nodes.push(svg('polyline', { class: `line ${cls}`, points: pts, data: { series: key } }));
            }
            const last = s.points.length ? s.points[s.points.length - 1][1] : 0;
            items.push(el('li', {}, el('span', { class: `swatch ${cls}` }), `${s.label} `, el('b', {}, num(last))));
            i += 1;
        }
        replace(this.plot, nodes);
        replace(this.legend, items);
    }
}

/** The smallest of 1, 2, 2.5, 5 × 10^k at or above `v` (at least 1). */
function niceCeil(v) {
    if (!(v > 1)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
}
