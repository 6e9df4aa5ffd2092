// Small inline-SVG charts for the console: the drift trajectory of one session and the ΔW energy per layer of an
// adapter. No library, no outside host; every string goes in through textContent.
"use strict";

window.TonewatchCharts = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, String(value));
    }
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function niceStep(span, ticks) {
    const raw = span / Math.max(1, ticks);
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * magnitude) return m * magnitude;
    return 10 * magnitude;
  }

  function frame(width, height, label) {
    const root = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label, class: "chart",
    });
    root.append(svg("title", {}, label));
    return root;
  }

  function yAxis(root, scaleY, lo, hi, left, right) {
    const step = niceStep(hi - lo, 5);
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) {
      const y = scaleY(v);
      root.append(svg("line", { x1: left, x2: right, y1: y, y2: y, class: v === 0 ? "axis" : "grid" }));
      root.append(svg("text", { x: left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, +v.toFixed(2)));
    }
  }

  function polyline(points, cls) {
    const path = points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    return svg("polyline", { points: path, class: cls, fill: "none" });
  }

  /** CUSUM and EWMA score per turn, the CUSUM threshold (and the EWMA limit when the view carries one) as lines,
   * alarm turns marked: every turn whose detector state alerts gets a `.alarm-marker`, the first of a run also
   * `.alarm-onset` and a triangle above the plot. `turns` are the session's turns (TurnPublic); turns without a
   * drift state (no tone) are skipped. */
  function driftChart(turns) {
    const points = turns.filter((t) => t.drift && typeof t.drift.cusum === "number");
    const width = 760, height = 280, left = 46, right = width - 14, top = 22, bottom = height - 34;
    const root = frame(width, height, "Drift trajectory: CUSUM and EWMA score per turn against the threshold");
    root.setAttribute("id", "drift-chart");
    if (!points.length) {
      root.append(svg("text", { x: width / 2, y: height / 2, class: "empty", "text-anchor": "middle" },
        "no scored turns yet"));
      return root;
    }
    const values = points.flatMap((t) => [t.drift.cusum, t.drift.score, t.drift.threshold,
      typeof t.drift.ewma_limit === "number" ? t.drift.ewma_limit : 0]);
    const hi = Math.max(1, ...values) * 1.1;
    const lo = Math.min(0, ...values) * 1.1;
    const n = points.length;
    const scaleX = (i) => (n === 1 ? (left + right) / 2 : left + (i * (right - left)) / (n - 1));
    const scaleY = (v) => bottom - ((v - lo) * (bottom - top)) / (hi - lo);
    yAxis(root, scaleY, lo, hi, left, right);

    const band = n > 1 ? (right - left) / (n - 1) : 24;
    points.forEach((t, i) => {
      if (t.drift.alert) {
        root.append(svg("rect", {
          x: scaleX(i) - band / 2, y: top, width: band, height: bottom - top, class: "alert-band",
        }));
      }
    });
    const xStep = Math.max(1, Math.ceil(n / 12));
    points.forEach((t, i) => {
      if (i % xStep === 0 || i === n - 1) {
        root.append(svg("text", { x: scaleX(i), y: bottom + 16, class: "tick", "text-anchor": "middle" }, t.seq));
      }
    });
    root.append(svg("text", { x: (left + right) / 2, y: height - 4, class: "axis-label", "text-anchor": "middle" },
      "turn (seq)"));

    root.append(polyline(points.map((t, i) => [scaleX(i), scaleY(t.drift.threshold)]), "series-threshold"));
    if (points.some((t) => typeof t.drift.ewma_limit === "number")) {
      root.append(polyline(points.map((t, i) => [scaleX(i), scaleY(t.drift.ewma_limit || 0)]), "series-ewma-limit"));
    }
    root.append(polyline(points.map((t, i) => [scaleX(i), scaleY(t.drift.score)]), "series-ewma"));
    root.append(polyline(points.map((t, i) => [scaleX(i), scaleY(t.drift.cusum)]), "series-cusum"));

    let previous = false;
    points.forEach((t, i) => {
      const x = scaleX(i), y = scaleY(t.drift.cusum);
      root.append(svg("circle", { cx: x, cy: y, r: 2.5, class: "point-cusum" }));
      if (t.drift.alert) {
        const onset = !previous;
        const marker = svg("circle", {
          cx: x, cy: y, r: 5, class: onset ? "alarm-marker alarm-onset" : "alarm-marker", "data-seq": t.seq,
        });
        const detector = t.drift.detector ? ` (${t.drift.detector})` : "";
        marker.append(svg("title", {}, `turn ${t.seq}: alert${detector}, CUSUM ${t.drift.cusum.toFixed(2)} / ` +
          `${t.drift.threshold.toFixed(2)}, EWMA ${t.drift.score.toFixed(2)}`));
        root.append(marker);
        if (onset) {
          root.append(svg("path", {
            d: `M ${x - 6} ${top - 12} L ${x + 6} ${top - 12} L ${x} ${top - 2} Z`, class: "alarm-flag",
            "data-seq": t.seq,
          }));
        }
      }
      previous = Boolean(t.drift.alert);
    });
    return root;
  }

  /** Frobenius norm of ΔW per layer (the profile's `layers`: {"3": {"frobenius_norm", "modules"}}). */
  function profileChart(profile) {
    const layers = Object.entries(profile.layers || {})
      .map(([layer, s]) => [Number(layer), s.frobenius_norm, s.modules])
      .sort((a, b) => a[0] - b[0]);
    const width = 760, height = 240, left = 52, right = width - 14, top = 14, bottom = height - 34;
    const root = frame(width, height, `ΔW Frobenius norm per layer of adapter ${profile.adapter || ""}`);
    root.setAttribute("id", "profile-chart");
    if (!layers.length) {
      root.append(svg("text", { x: width / 2, y: height / 2, class: "empty", "text-anchor": "middle" },
        "no per-layer modules in this adapter"));
      return root;
    }
    const hi = Math.max(...layers.map((l) => l[1]), 1e-9) * 1.1;
    const scaleY = (v) => bottom - (v * (bottom - top)) / hi;
    yAxis(root, scaleY, 0, hi, left, right);
    const slot = (right - left) / layers.length;
    const xStep = Math.max(1, Math.ceil(layers.length / 16));
    layers.forEach(([layer, norm, modules], i) => {
      const x = left + i * slot + slot * 0.15;
      const bar = svg("rect", {
        x, y: scaleY(norm), width: slot * 0.7, height: Math.max(0, bottom - scaleY(norm)), class: "profile-bar",
        "data-layer": layer,
      });
      bar.append(svg("title", {}, `layer ${layer}: ‖ΔW‖F ${norm.toPrecision(4)} over ${modules} module(s)`));
      root.append(bar);
      if (i % xStep === 0) {
        root.append(svg("text", { x: x + slot * 0.35, y: bottom + 16, class: "tick", "text-anchor": "middle" },
          layer));
      }
    });
    root.append(svg("text", { x: (left + right) / 2, y: height - 4, class: "axis-label", "text-anchor": "middle" },
      "layer"));
    return root;
  }

  return { driftChart, profileChart };
})();
