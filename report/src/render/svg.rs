//! Inline SVG charts for the HTML report: plain shapes and text, no scripts, no fonts or
//! images fetched from anywhere.

use std::fmt::Write;

use crate::model::{Bucket, Day, Edge};

const W: f64 = 760.0;
const H: f64 = 220.0;
const LEFT: f64 = 50.0;
const BOTTOM: f64 = 30.0;
const TOP: f64 = 20.0;

/// Escapes text for XML/HTML content and attributes.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn open(o: &mut String, title: &str, height: f64) {
    let _ = write!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="{W}" height="{height}" role="img" aria-label="{t}"><title>{t}</title><rect width="{W}" height="{height}" fill="#ffffff"/>"##,
        t = esc(title)
    );
}

fn axis(o: &mut String, max: u64) {
    let base = H - BOTTOM;
    let _ = write!(
        o,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#444"/><line x1="{LEFT}" y1="{base}" x2="{W}" y2="{base}" stroke="#444"/><text x="{x}" y="{y}" font-size="11" text-anchor="end">{max}</text><text x="{x}" y="{base}" font-size="11" text-anchor="end">0</text>"##,
        x = LEFT - 4.0,
        y = TOP + 10.0
    );
}

/// One stacked series: its name, its colour and its value on a day.
pub type Series<'a> = (&'a str, &'a str, fn(&Day) -> u64);

/// Stacked bars per day.
pub fn daily(title: &str, days: &[Day], series: &[Series<'_>]) -> String {
    let mut o = String::new();
    open(&mut o, title, H);
    let max = days
        .iter()
        .map(|d| series.iter().map(|(_, _, f)| f(d)).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    axis(&mut o, max);
    let plot_h = H - BOTTOM - TOP;
    let slot = (W - LEFT - 10.0) / days.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    for (i, d) in days.iter().enumerate() {
        let x = LEFT + 5.0 + i as f64 * slot;
        let mut y = H - BOTTOM;
        for (name, colour, f) in series {
            let v = f(d);
            if v == 0 {
                continue;
            }
            let h = plot_h * v as f64 / max as f64;
            y -= h;
            let _ = write!(
                o,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}" fill="{colour}"><title>{} {}: {v}</title></rect>"#,
                d.date,
                esc(name)
            );
        }
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            o,
            r#"<text x="{LEFT}" y="{y}" font-size="11">{}</text><text x="{W}" y="{y}" font-size="11" text-anchor="end">{}</text>"#,
            first.date,
            last.date,
            y = H - 10.0
        );
    } else {
        let _ = write!(
            o,
            r#"<text x="{x}" y="{y}" font-size="13" text-anchor="middle">no events in the period</text>"#,
            x = W / 2.0,
            y = H / 2.0
        );
    }
    legend(&mut o, series.iter().map(|(n, c, _)| (*n, *c)));
    o.push_str("</svg>");
    o
}

fn legend<'a>(o: &mut String, items: impl Iterator<Item = (&'a str, &'a str)>) {
    for (i, (name, colour)) in items.enumerate() {
        let x = LEFT + 10.0 + i as f64 * 150.0;
        let _ = write!(
            o,
            r#"<rect x="{x}" y="4" width="10" height="10" fill="{colour}"/><text x="{tx}" y="13" font-size="11">{}</text>"#,
            esc(name),
            tx = x + 14.0
        );
    }
}

pub fn histogram(title: &str, buckets: &[Bucket]) -> String {
    let mut o = String::new();
    open(&mut o, title, H);
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    axis(&mut o, max);
    let plot_h = H - BOTTOM - TOP;
    let slot = (W - LEFT - 10.0) / buckets.len().max(1) as f64;
    for (i, b) in buckets.iter().enumerate() {
        let x = LEFT + 5.0 + i as f64 * slot;
        let h = plot_h * b.count as f64 / max as f64;
        let _ = write!(
            o,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="#4e79a7"><title>{l}: {c}</title></rect><text x="{cx:.1}" y="{ly}" font-size="11" text-anchor="middle">{l}</text><text x="{cx:.1}" y="{vy:.1}" font-size="11" text-anchor="middle">{c}</text>"##,
            y = H - BOTTOM - h,
            w = slot * 0.8,
            l = esc(&b.label),
            c = b.count,
            cx = x + slot * 0.4,
            ly = H - 12.0,
            vy = H - BOTTOM - h - 3.0
        );
    }
    o.push_str("</svg>");
    o
}

/// Callers on the left, services on the right, one line per edge: width by traffic, red
/// when anything was denied (the count is written on the line).
pub fn graph(title: &str, edges: &[Edge]) -> String {
    let mut callers: Vec<&str> = edges.iter().map(|e| e.caller.as_str()).collect();
    let mut services: Vec<&str> = edges.iter().map(|e| e.service.as_str()).collect();
    callers.sort_unstable();
    callers.dedup();
    services.sort_unstable();
    services.dedup();
    let rows = callers.len().max(services.len()).max(1);
    let height = 40.0 + rows as f64 * 28.0;
    let mut o = String::new();
    open(&mut o, title, height);
    if edges.is_empty() {
        let _ = write!(
            o,
            r#"<text x="{x}" y="40" font-size="13" text-anchor="middle">no decisions in the period</text></svg>"#,
            x = W / 2.0
        );
        return o;
    }
    let y_of = |list: &[&str], name: &str| {
        let i = list.iter().position(|n| *n == name).unwrap_or(0);
        30.0 + i as f64 * 28.0
    };
    let max = edges
        .iter()
        .map(|e| e.allow + e.deny)
        .max()
        .unwrap_or(1)
        .max(1);
    let (lx, rx) = (250.0, 510.0);
    for e in edges {
        let (y1, y2) = (y_of(&callers, &e.caller), y_of(&services, &e.service));
        let width = 1.0 + 5.0 * (e.allow + e.deny) as f64 / max as f64;
        let colour = if e.deny > 0 { "#e15759" } else { "#59a14f" };
        let _ = write!(
            o,
            r#"<line x1="{lx}" y1="{y1}" x2="{rx}" y2="{y2}" stroke="{colour}" stroke-width="{width:.1}"><title>{} → {}: {} allowed, {} denied</title></line>"#,
            esc(&e.caller),
            esc(&e.service),
            e.allow,
            e.deny
        );
        if e.deny > 0 {
            let _ = write!(
                o,
                r##"<text x="{x:.1}" y="{y:.1}" font-size="11" fill="#b00" text-anchor="middle">{} denied</text>"##,
                e.deny,
                x = (lx + rx) / 2.0,
                y = (y1 + y2) / 2.0 - 3.0
            );
        }
    }
    for c in &callers {
        let _ = write!(
            o,
            r#"<text x="{x}" y="{y}" font-size="11" text-anchor="end">{}</text>"#,
            esc(short(c)),
            x = lx - 6.0,
            y = y_of(&callers, c) + 4.0
        );
    }
    for s in &services {
        let _ = write!(
            o,
            r#"<text x="{x}" y="{y}" font-size="11">{}</text>"#,
            esc(short(s)),
            x = rx + 6.0,
            y = y_of(&services, s) + 4.0
        );
    }
    o.push_str("</svg>");
    o
}

/// The tail of a long identity, to fit beside the graph (the full one is in the tooltip).
fn short(s: &str) -> &str {
    if s.is_empty() {
        return "(no identity)";
    }
    let n = s.len();
    if n <= 38 {
        return s;
    }
    let mut start = n - 38;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
