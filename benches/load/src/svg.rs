//! A self-contained SVG chart of a latency distribution: a histogram of the latencies (top)
//! and the latency by percentile (bottom), with axes, ticks and labels.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const W: f64 = 960.0;
const H: f64 = 775.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 40.0;
const PLOT_W: f64 = W - LEFT - RIGHT;
/// Top panel: y from `TOP_Y` to `TOP_Y + PANEL_H`.
const TOP_Y: f64 = 110.0;
const BOTTOM_Y: f64 = 455.0;
const PANEL_H: f64 = 250.0;
const BINS: usize = 60;

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `target` ticks over `range`.
pub fn nice_step(range: f64, target: usize) -> f64 {
    if !(range.is_finite() && range > 0.0) {
        return 1.0;
    }
    let raw = range / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Formats a tick value without trailing noise.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, size: u32, extra: &str, s: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}" {extra}>{}</text>"#,
        escape(s)
    );
}

fn line(out: &mut String, x1: f64, y1: f64, x2: f64, y2: f64, style: &str) {
    let _ = writeln!(
        out,
        r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {style}/>"#
    );
}

/// Draws a y axis with grid lines for values 0..=max, mapped onto the panel at `top`.
fn y_axis(out: &mut String, top: f64, max: f64, label: &str) {
    let step = nice_step(max, 5);
    let mut v = 0.0;
    while v <= max * 1.000_001 {
        let y = top + PANEL_H - v / max * PANEL_H;
        line(
            out,
            LEFT,
            y,
            LEFT + PLOT_W,
            y,
            r##"stroke="#e3e3e3" stroke-width="1""##,
        );
        line(out, LEFT - 5.0, y, LEFT, y, r##"stroke="#333""##);
        text(
            out,
            LEFT - 8.0,
            y + 4.0,
            "end",
            12,
            "",
            &tick_label(v, step),
        );
        v += step;
    }
    let cy = top + PANEL_H / 2.0;
    text(
        out,
        22.0,
        cy,
        "middle",
        13,
        &format!(r#"transform="rotate(-90 22 {cy:.1})""#),
        label,
    );
    line(out, LEFT, top, LEFT, top + PANEL_H, r##"stroke="#333""##);
    line(
        out,
        LEFT,
        top + PANEL_H,
        LEFT + PLOT_W,
        top + PANEL_H,
        r##"stroke="#333""##,
    );
}

/// The 1-2-5 values `v` with `lo <= v <= hi`.
fn one_two_five(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor() - 1.0);
    while decade <= hi * 10.0 {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= lo * 0.999_999 && v <= hi * 1.000_001 {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

/// A log axis range from the 1-2-5 value at or below `min` to the one at or above `max`
/// (at least one step wide).
pub fn log_range(min: f64, max: f64) -> (f64, f64) {
    let min = if min > 0.0 { min } else { 0.001 };
    let max = max.max(min);
    let below = one_two_five(min / 10.0, min).last().copied().unwrap_or(min);
    let above = one_two_five(max, max * 10.0)
        .first()
        .copied()
        .unwrap_or(max);
    if above > below {
        (below, above)
    } else {
        (below, below * 2.0)
    }
}

/// Tick values for a log axis: the 1-2-5 values inside the range.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    one_two_five(lo, hi)
}

/// Formats a log-axis tick (0.05, 0.1, 2, 500, 1000) without trailing zeros.
fn fmt_tick(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Renders the chart. `hist` holds latencies in microseconds.
pub fn render(title: &str, subtitle: &[String], hist: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>"#
    );
    text(
        &mut out,
        W / 2.0,
        30.0,
        "middle",
        20,
        r#"font-weight="bold""#,
        title,
    );
    for (i, sub) in subtitle.iter().take(2).enumerate() {
        let y = 52.0 + 17.0 * i as f64;
        text(&mut out, W / 2.0, y, "middle", 13, r##"fill="#444""##, sub);
    }

    if hist.is_empty() {
        text(&mut out, W / 2.0, H / 2.0, "middle", 18, "", "no samples");
        out.push_str("</svg>\n");
        return out;
    }

    let ms = |us: u64| us as f64 / 1000.0;
    let max_us = hist.max();
    // Top panel: histogram over log-spaced bins from a 1-2-5 value at or below the fastest
    // sample to one at or above the slowest, so that both the body and the tail show.
    let (lo_ms, hi_ms) = log_range(ms(hist.min().max(1)), ms(max_us.max(1)));
    let (llo, lhi) = (lo_ms.log10(), hi_ms.log10());
    let mut bins = [0u64; BINS];
    for v in hist.iter_recorded() {
        let value_ms = ms(hist.median_equivalent(v.value_iterated_to()).max(1));
        let f = (value_ms.log10() - llo) / (lhi - llo);
        let i = ((f * BINS as f64) as usize).min(BINS - 1);
        bins[i] += v.count_at_value();
    }
    text(
        &mut out,
        LEFT,
        TOP_Y - 12.0,
        "start",
        14,
        r#"font-weight="bold""#,
        "Latency histogram",
    );
    let count_max = bins.iter().copied().max().unwrap_or(1).max(1) as f64;
    let y_step = nice_step(count_max, 5);
    let y_max = (count_max / y_step).ceil() * y_step;
    y_axis(&mut out, TOP_Y, y_max, "count");
    let bar_w = PLOT_W / BINS as f64;
    for (i, &c) in bins.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let h = (c as f64 / y_max * PANEL_H).max(1.0);
        let x = LEFT + i as f64 * bar_w;
        let from = 10f64.powf(llo + (lhi - llo) * i as f64 / BINS as f64);
        let to = 10f64.powf(llo + (lhi - llo) * (i + 1) as f64 / BINS as f64);
        let _ = writeln!(
            out,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#4878d0"><title>{}–{} ms: {c}</title></rect>"##,
            TOP_Y + PANEL_H - h,
            (bar_w - 1.0).max(0.5),
            crate::report::fmt_ms(Some(from)),
            crate::report::fmt_ms(Some(to)),
        );
    }
    for t in log_ticks(lo_ms, hi_ms) {
        let x = LEFT + (t.log10() - llo) / (lhi - llo) * PLOT_W;
        line(
            &mut out,
            x,
            TOP_Y + PANEL_H,
            x,
            TOP_Y + PANEL_H + 5.0,
            r##"stroke="#333""##,
        );
        text(
            &mut out,
            x,
            TOP_Y + PANEL_H + 19.0,
            "middle",
            12,
            "",
            &fmt_tick(t),
        );
    }
    text(
        &mut out,
        LEFT + PLOT_W / 2.0,
        TOP_Y + PANEL_H + 40.0,
        "middle",
        13,
        "",
        "latency (ms, log scale)",
    );

    // Bottom panel: latency by percentile, x = log10(1 / (1 - q)).
    text(
        &mut out,
        LEFT,
        BOTTOM_Y - 12.0,
        "start",
        14,
        r#"font-weight="bold""#,
        "Latency by percentile",
    );
    let max_ms = ms(max_us);
    let ly_step = nice_step(max_ms, 5);
    let ly_max = (max_ms / ly_step).ceil().max(1.0) * ly_step;
    y_axis(&mut out, BOTTOM_Y, ly_max, "latency (ms)");
    // Up to 99.99 %, or 99.999 % with enough samples to mean anything.
    let x_dec = if hist.len() >= 100_000 { 5.0 } else { 4.0 };
    let px = |d: f64| LEFT + d / x_dec * PLOT_W;
    let py = |v_ms: f64| BOTTOM_Y + PANEL_H - v_ms / ly_max * PANEL_H;
    let mut points = String::new();
    let steps = 400;
    for i in 0..=steps {
        let d = x_dec * i as f64 / steps as f64;
        let q = 1.0 - 10f64.powf(-d);
        let v = ms(hist.value_at_quantile(q));
        let _ = write!(points, "{:.1},{:.1} ", px(d), py(v));
    }
    let _ = writeln!(
        out,
        r##"<polyline points="{}" fill="none" stroke="#4878d0" stroke-width="2"/>"##,
        points.trim_end()
    );
    let ticks = [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ];
    for (d, label) in ticks.iter().filter(|(d, _)| *d <= x_dec) {
        let x = px(*d);
        line(
            &mut out,
            x,
            BOTTOM_Y + PANEL_H,
            x,
            BOTTOM_Y + PANEL_H + 5.0,
            r##"stroke="#333""##,
        );
        text(
            &mut out,
            x,
            BOTTOM_Y + PANEL_H + 19.0,
            "middle",
            12,
            "",
            label,
        );
    }
    text(
        &mut out,
        LEFT + PLOT_W / 2.0,
        BOTTOM_Y + PANEL_H + 40.0,
        "middle",
        13,
        "",
        "percentile",
    );
    // Marked percentiles.
    let marks = [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9")];
    for (q, name) in marks {
        let d = -(1.0f64 - q).log10();
        let v = ms(hist.value_at_quantile(q));
        let (x, y) = (px(d), py(v));
        let _ = writeln!(
            out,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="#d65f5f"/>"##
        );
        text(
            &mut out,
            x + 6.0,
            y - 6.0,
            "start",
            12,
            r##"fill="#b03030" stroke="white" stroke-width="3" paint-order="stroke""##,
            &format!("{name} {} ms", crate::report::fmt_ms(Some(v))),
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{new_histogram, record};
    use std::time::Duration;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(1.0, 5), 0.2);
        assert_eq!(nice_step(7.3, 8), 1.0);
        assert_eq!(nice_step(300.0, 5), 100.0);
        assert_eq!(nice_step(0.0, 5), 1.0);
    }

    #[test]
    fn log_axis_range_and_ticks() {
        assert_eq!(log_range(0.147, 23.17), (0.1, 50.0));
        assert_eq!(log_range(1.0, 1.0), (1.0, 2.0));
        assert_eq!(log_range(0.3, 0.7), (0.2, 1.0));
        assert_eq!(log_ticks(0.1, 50.0).len(), 9);
        assert_eq!(fmt_tick(0.05), "0.05");
        assert_eq!(fmt_tick(200.0), "200");
    }

    #[test]
    fn escape_handles_markup() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }

    fn well_formed(svg: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(svg).expect("well-formed XML")
    }

    #[test]
    fn chart_is_well_formed_svg_with_axes_and_labels() {
        let mut h = new_histogram();
        for i in 0..10_000u64 {
            record(&mut h, Duration::from_micros(500 + (i * 37) % 3000));
        }
        record(&mut h, Duration::from_millis(250));
        let svg = render("connect <test> & co", &["10000 connections".into()], &h);
        let doc = well_formed(&svg);
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        let texts: Vec<String> = root
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(str::to_string))
            .collect();
        for want in [
            "latency (ms)",
            "count",
            "percentile",
            "99%",
            "connect <test> & co",
        ] {
            assert!(texts.iter().any(|t| t == want), "missing {want}: {texts:?}");
        }
        assert!(texts.iter().any(|t| t.starts_with("p99 ")), "{texts:?}");
        let bars = root
            .descendants()
            .filter(|n| n.has_tag_name("rect"))
            .count();
        assert!(bars > 10, "{bars} bars");
        assert_eq!(
            root.descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .count(),
            1
        );
    }

    #[test]
    fn empty_chart_is_well_formed() {
        let svg = render("empty", &[], &new_histogram());
        let doc = well_formed(&svg);
        assert!(svg.contains("no samples"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
    }

    #[test]
    fn single_value_chart_is_well_formed() {
        let mut h = new_histogram();
        record(&mut h, Duration::from_micros(1));
        well_formed(&render("one", &["x".into()], &h));
    }
}
