/* finetune-gateway dashboard: line charts as SVG built with DOM APIs (createElementNS,
 * textContent), never markup from strings. Points come downsampled from the server. */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 640, H = 260, M = { left: 56, right: 16, top: 26, bottom: 32 };

  function node(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    if (text !== undefined) n.textContent = String(text);
    return n;
  }

  function ticks(lo, hi, count) {
    if (lo === hi) return [lo];
    const step = (hi - lo) / (count - 1);
    return Array.from({ length: count }, (_, i) => lo + i * step);
  }

  function label(v) {
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
    return Number.isInteger(v) ? String(v) : v.toFixed(a >= 10 ? 1 : 3);
  }

  /* series: [{name, points: [[step, value], ...], total}] */
  function draw(container, series) {
    container.replaceChildren();
    const drawn = series.filter((s) => s.points.length > 0);
    if (drawn.length === 0) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "No metrics reported.";
      container.append(p);
      return;
    }
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const s of drawn) for (const [x, y] of s.points) {
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    const pw = W - M.left - M.right, ph = H - M.top - M.bottom;
    const sx = (x) => M.left + ((x - x0) / (x1 - x0)) * pw;
    const sy = (y) => M.top + (1 - (y - y0) / (y1 - y0)) * ph;
    const svg = node("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    svg.append(node("title", {}, drawn.map((s) => s.name).join(", ") + " by step"));
    for (const t of ticks(y0, y1, 5)) {
      svg.append(node("line", { class: "grid", x1: M.left, x2: W - M.right, y1: sy(t), y2: sy(t) }));
      svg.append(node("text", { x: M.left - 6, y: sy(t) + 4, "text-anchor": "end" }, label(t)));
    }
    for (const t of ticks(x0, x1, 6)) {
      svg.append(node("text", { x: sx(t), y: H - M.bottom + 16, "text-anchor": "middle" }, label(Math.round(t))));
    }
    svg.append(node("line", { class: "axis", x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom }));
    svg.append(node("line", { class: "axis", x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }));
    svg.append(node("text", { x: W - M.right, y: H - 4, "text-anchor": "end" }, "step"));
    drawn.forEach((s, i) => {
      const pts = s.points.map(([x, y]) => `${sx(x).toFixed(2)},${sy(y).toFixed(2)}`).join(" ");
      const line = node("polyline", {
        class: `line series-${i % 3}`, points: pts, "data-series": s.name, "data-points": s.points.length,
      });
      line.append(node("title", {}, `${s.name}: ${s.total} steps`));
      svg.append(line);
      if (s.points.length === 1) {
        const [x, y] = s.points[0];
        svg.append(node("circle", { class: `series-${i % 3}`, cx: sx(x), cy: sy(y), r: 3 }));
      }
      const lx = M.left + i * 190;
      svg.append(node("rect", { class: `series-${i % 3}`, x: lx, y: 8, width: 12, height: 4 }));
      const note = s.points.length < s.total ? ` (${s.total} steps, ${s.points.length} points)` : "";
      svg.append(node("text", { class: "legend", x: lx + 16, y: 14 }, s.name + note));
    });
    container.append(svg);
  }

  window.FtgChart = { draw };
})();
