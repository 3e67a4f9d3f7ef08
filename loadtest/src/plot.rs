//! A self-contained SVG of the latency percentile distribution (HdrHistogram style: the x axis
//! stretches the tail, 1/(1−q) on a log scale), one line per transport and run.

use crate::model::Percentiles;
use crate::report::Report;
use std::fmt::Write as _;

const W: f64 = 860.0;
const H: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn x_of(percentile: f64, max_x: f64) -> f64 {
    let q = (percentile / 100.0).min(0.999_99);
    let v = (1.0 / (1.0 - q)).log10();
    LEFT + (W - LEFT - RIGHT) * (v / max_x)
}

/// One line of the plot: label, (percentile, µs) points, colour, dashed, and the summary it
/// came from (for the p50/p99/p99.9 marks).
type Series<'a> = (String, Vec<(f64, f64)>, &'static str, bool, &'a Percentiles);

/// The points a histogram of `count` samples supports: a percentile q needs at least
/// [`MIN_TAIL_SAMPLES`] samples beyond it, or the curve would be the maximum drawn flat.
fn supported(curve: &[(f64, f64)], count: u64) -> Vec<(f64, f64)> {
    curve
        .iter()
        .copied()
        .filter(|(p, _)| *p <= 99.999 && count as f64 * (1.0 - p / 100.0) >= MIN_TAIL_SAMPLES)
        .collect()
}

/// Samples a curve point needs beyond it.
const MIN_TAIL_SAMPLES: f64 = 5.0;

/// Renders the plot; `subtitle` names the run's parameters.
pub fn svg(report: &Report, title: &str, subtitle: &str) -> String {
    let mut series: Vec<Series> = Vec::new();
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let mut runs = vec![(report.run.target.as_str(), &report.run, false)];
    if let Some(f) = &report.floor {
        runs.push(("floor", f, true));
    }
    let mut c = 0;
    for (name, run, dashed) in runs {
        for (transport, p) in &run.latency_us {
            if transport == "all" || p.curve.is_empty() {
                continue;
            }
            series.push((
                format!("{name} {transport}"),
                supported(&p.curve, p.count),
                colours[c % colours.len()],
                dashed,
                p,
            ));
            c += 1;
        }
    }
    let max_x = 5.0; // up to 99.999%
    let max_y_us = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let max_y = nice_ceiling(max_y_us / 1000.0);
    let y_of = |ms: f64| H - BOTTOM - (H - TOP - BOTTOM) * (ms / max_y).min(1.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="18" font-size="15" text-anchor="middle">{}</text><text x="{}" y="34" font-size="11" fill="#555" text-anchor="middle">{}</text>"##,
        (W - RIGHT + LEFT) / 2.0,
        escape(title),
        (W - RIGHT + LEFT) / 2.0,
        escape(subtitle)
    );
    for i in 0..=5 {
        let ms = max_y * i as f64 / 5.0;
        let y = y_of(ms);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            trim(ms)
        );
    }
    for (p, label) in [
        (0.0, "0%"),
        (90.0, "90%"),
        (99.0, "99%"),
        (99.9, "99.9%"),
        (99.99, "99.99%"),
        (99.999, "99.999%"),
    ] {
        let x = x_of(p, max_x);
        let _ = write!(
            s,
            r##"<line x1="{x}" x2="{x}" y1="{TOP}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text><text transform="translate(18 {}) rotate(-90)" text-anchor="middle">latency (ms): receive time − frame timestamp</text>"#,
        (W - RIGHT + LEFT) / 2.0,
        H - 16.0,
        (H - BOTTOM + TOP) / 2.0
    );
    for (i, (name, curve, colour, dashed, summary)) in series.iter().enumerate() {
        let pts: Vec<String> = curve
            .iter()
            .map(|(p, v)| format!("{:.1},{:.1}", x_of(*p, max_x), y_of(v / 1000.0)))
            .collect();
        // p50, p99 and p99.9 marked on the curve (where the samples support them).
        for (q, v) in [
            (50.0, summary.p50),
            (99.0, summary.p99),
            (99.9, summary.p999),
        ] {
            if summary.count as f64 * (1.0 - q / 100.0) >= MIN_TAIL_SAMPLES {
                let _ = write!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"/>"#,
                    x_of(q, max_x),
                    y_of(v / 1000.0)
                );
            }
        }
        let dash = if *dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
            pts.join(" ")
        );
        let ly = TOP + 20.0 + 40.0 * i as f64;
        let lx = W - RIGHT + 15.0;
        let _ = write!(
            s,
            r##"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text><text x="{}" y="{}" font-size="10" fill="#555">p50 {} · p99 {} · p99.9 {} ms</text>"##,
            lx + 30.0,
            lx + 36.0,
            ly + 4.0,
            escape(name),
            lx,
            ly + 19.0,
            trim(summary.p50 / 1000.0),
            trim(summary.p99 / 1000.0),
            trim(summary.p999 / 1000.0),
        );
    }
    s.push_str("</svg>\n");
    s
}

fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.max(1e-3).log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_end_where_the_samples_run_out() {
        let curve: Vec<(f64, f64)> = [50.0, 99.0, 99.9, 99.99, 99.999]
            .iter()
            .map(|p| (*p, 1000.0))
            .collect();
        // 25 000 samples: 99.99% has 2.5 beyond it, too few; 99.9% has 25.
        let kept: Vec<f64> = supported(&curve, 25_000).iter().map(|p| p.0).collect();
        assert_eq!(kept, [50.0, 99.0, 99.9]);
        assert_eq!(supported(&curve, 10_000_000).len(), 5);
    }
}
