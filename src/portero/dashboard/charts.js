// Small SVG line charts: a few hundred points per line, redrawn whole on every poll (cheaper than diffing).
const NS = "http://www.w3.org/2000/svg";
export const PALETTE = ["#2f7ed8", "#e8743b", "#19a979", "#ed4a7b", "#945ecf", "#13a4b4", "#525df4", "#bf399e", "#6c8893", "#ee6868"];

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function clock(at) {
  const d = new Date(at * 1000);
  return d.toTimeString().slice(0, 5) + (d.getSeconds() ? `:${String(d.getSeconds()).padStart(2, "0")}` : "");
}

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// lines: [{label, color, points: [[t, v], ...], legend?, value?}]; markers: [{at, label}]; step: seconds between points.
export function lineChart(svg, legend, lines, { since, until, step, format, markers = [], empty }) {
  const width = svg.clientWidth || 480;
  const height = svg.clientHeight || 150;
  const pad = { left: 52, right: 8, top: 10, bottom: 18 };
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const top = niceMax(Math.max(0, ...lines.flatMap((line) => line.points.map((p) => p[1]))));
  const span = Math.max(until - since, 1);
  const x = (t) => pad.left + ((t - since) / span) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  const parts = [];
  for (const fraction of [0, 0.5, 1]) {
    const at = y(top * fraction);
    parts.push(el("line", { x1: pad.left, x2: width - pad.right, y1: at, y2: at, class: "grid" }));
    parts.push(el("text", { x: pad.left - 4, y: at + 4, class: "axis", "text-anchor": "end" }, format(top * fraction)));
  }
  for (const [fraction, anchor] of [[0, "start"], [0.5, "middle"], [1, "end"]]) {
    parts.push(el("text", { x: x(since + span * fraction), y: height - 4, class: "axis", "text-anchor": anchor }, clock(since + span * fraction)));
  }
  let count = 0;
  const gap = Math.max(step, 1) * 2.5; // a missing sample is a gap, not a straight line across it
  for (const line of lines) {
    let d = "";
    let previous = null;
    for (const [t, v] of line.points) {
      if (t < since) continue;
      d += `${previous === null || t - previous > gap ? "M" : "L"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      previous = t;
      count += 1;
    }
    if (d) parts.push(el("path", { d, stroke: line.color, class: "line" }));
  }
  for (const marker of markers) {
    if (marker.at < since) continue;
    const at = x(marker.at);
    parts.push(el("line", { x1: at, x2: at, y1: pad.top, y2: height - pad.bottom, class: "marker" }));
    const label = el("path", { d: `M${at - 5},${pad.top} L${at + 5},${pad.top} L${at},${pad.top + 7} Z`, class: "marker-head" });
    label.appendChild(el("title", {}, marker.label));
    parts.push(label);
  }
  if (count === 0) parts.push(el("text", { x: width / 2, y: height / 2, class: "empty", "text-anchor": "middle" }, empty));
  svg.replaceChildren(...parts);
  svg.dataset.points = String(count);
  // The legend: lines with `legend: false` (a replica that is gone) are drawn but not listed; `value`, when given,
  // is the figure shown (null: none now), else the line's last point.
  const items = lines.filter((line) => line.legend !== false).map((line) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = line.color;
    const last = line.value !== undefined ? line.value : line.points.at(-1)?.[1];
    item.dataset.label = line.label;
    item.append(swatch, `${line.label} ${last === null || last === undefined ? "–" : format(last)}`);
    return item;
  });
  legend.replaceChildren(...items);
}
