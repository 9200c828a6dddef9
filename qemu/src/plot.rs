//! The requested-versus-plugged plot of a stress run, as a hand-written SVG.
//!
//! The stress runner records a [`Sample`] (every device's requested and plugged size, QMP's
//! view) whenever either changes and at least once a second; [`svg`] draws them: per device a
//! dashed requested line and a solid plugged line over elapsed time, both step functions (a size
//! holds until the next sample), with a grid of "nice" ticks (1, 2 or 5 times a power of ten)
//! and a legend. The output is a fixed 960x420 picture whose every point lies inside the plot
//! area, also for no samples at all; text is XML-escaped. No plotting library: the picture is
//! small and its format is pinned by the tests here.

use std::fmt::Write as _;
use std::time::Duration;

use crate::machine::GIB;

/// Requested and plugged size of every device (QMP's view) at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Since the start of the run.
    pub at: Duration,
    /// Requested size per device.
    pub requested: Vec<u64>,
    /// Plugged size per device.
    pub plugged: Vec<u64>,
}

/// A hand-written SVG line plot of requested (dashed) and plugged (solid) size per device over
/// elapsed time, drawn as step functions. `names[i]` labels device `i`.
pub fn svg(title: &str, names: &[String], samples: &[Sample]) -> String {
    const W: f64 = 960.0;
    const H: f64 = 420.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    const COLORS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let t_max = samples
        .iter()
        .map(|s| s.at.as_secs_f64())
        .fold(0.0, f64::max)
        .max(1.0);
    let y_max_bytes = samples
        .iter()
        .flat_map(|s| s.requested.iter().chain(&s.plugged))
        .copied()
        .max()
        .unwrap_or(0)
        .max(GIB);
    let y_max = y_max_bytes as f64 / GIB as f64;
    let x = |t: f64| LEFT + t / t_max * pw;
    let y = |gib: f64| TOP + ph - gib / y_max * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        xml_escape(title)
    );
    // Grid and ticks.
    let t_step = nice_step(t_max / 8.0);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
            x(t),
            TOP,
            TOP + ph,
            TOP + ph + 16.0,
            fmt_tick(t)
        );
        t += t_step;
    }
    let g_step = nice_step(y_max / 6.0);
    let mut g = 0.0;
    while g <= y_max + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="#ddd"/><text x="{3}" y="{4:.1}" text-anchor="end">{5}</text>"##,
            LEFT,
            y(g),
            LEFT + pw,
            LEFT - 6.0,
            y(g) + 4.0,
            fmt_tick(g)
        );
        g += g_step;
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">elapsed (s)</text>"#,
        LEFT + pw / 2.0,
        H - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">size (GiB)</text>"#,
        TOP + ph / 2.0
    );
    // One requested and one plugged line per device.
    for (i, name) in names.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for (what, dash, pick) in [
            ("requested", r#" stroke-dasharray="6 4""#, 0),
            ("plugged", "", 1),
        ] {
            let mut points = String::new();
            let mut last: Option<f64> = None;
            for sample in samples {
                let series = if pick == 0 {
                    &sample.requested
                } else {
                    &sample.plugged
                };
                let Some(&bytes) = series.get(i) else {
                    continue;
                };
                let (px, py) = (x(sample.at.as_secs_f64()), y(bytes as f64 / GIB as f64));
                if let Some(prev) = last {
                    let _ = write!(points, "{px:.1},{prev:.1} ");
                }
                let _ = write!(points, "{px:.1},{py:.1} ");
                last = Some(py);
            }
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="{}"{dash} points="{}"><title>{} {what}</title></polyline>"#,
                if pick == 0 { 1.2 } else { 1.8 },
                points.trim_end(),
                xml_escape(name)
            );
        }
        // Legend.
        let ly = TOP + 14.0 + 32.0 * i as f64;
        let lx = LEFT + 10.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="1.8"/><text x="{}" y="{}">{} plugged</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            xml_escape(name)
        );
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{0}" x2="{1}" y2="{0}" stroke="{color}" stroke-width="1.2" stroke-dasharray="6 4"/><text x="{2}" y="{3}">{4} requested</text>"#,
            ly + 14.0,
            lx + 24.0,
            lx + 30.0,
            ly + 18.0,
            xml_escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|&v| v >= raw)
        .unwrap_or(10.0 * pow)
}

fn fmt_tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: u64, requested: &[u64], plugged: &[u64]) -> Sample {
        Sample {
            at: Duration::from_secs(at_s),
            requested: requested.to_vec(),
            plugged: plugged.to_vec(),
        }
    }

    #[test]
    fn svg_draws_two_step_lines_per_device() {
        let names = vec!["vm0".to_string(), "vm1 <&>".to_string()];
        let samples = [
            sample(0, &[0, 0], &[0, 0]),
            sample(2, &[GIB, 2 * GIB], &[0, 0]),
            sample(3, &[GIB, 2 * GIB], &[GIB, 2 * GIB]),
            sample(10, &[0, 2 * GIB], &[0, 2 * GIB]),
        ];
        let s = svg("t <1>", &names, &samples);
        assert!(
            s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{s}"
        );
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 4);
        assert_eq!(
            s.matches("stroke-dasharray").count(),
            4,
            "2 lines + 2 legend"
        );
        assert!(s.contains("t &lt;1&gt;") && s.contains("vm1 &lt;&amp;&gt;"));
        assert!(!s.contains("NaN") && !s.contains("inf"));
        // Every point lies inside the plot area (x 70..940, y 40..370).
        for poly in s.split("points=\"").skip(1) {
            let pts = &poly[..poly.find('"').unwrap()];
            let n = pts.split(' ').count();
            // A step line: 1 + 2 per later sample.
            assert_eq!(n, 1 + 2 * (samples.len() - 1), "{pts}");
            for p in pts.split(' ') {
                let (x, y) = p.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!(
                    (70.0..=940.0).contains(&x) && (40.0..=370.0).contains(&y),
                    "{p}"
                );
            }
        }
        // Empty input still makes a valid picture.
        let empty = svg("empty", &names, &[]);
        assert!(empty.trim_end().ends_with("</svg>"));
        assert_eq!(empty.matches("<polyline").count(), 4);
    }

    #[test]
    fn nice_steps() {
        for (raw, step) in [
            (0.7, 1.0),
            (1.3, 2.0),
            (3.0, 5.0),
            (7.0, 10.0),
            (120.0, 200.0),
        ] {
            assert_eq!(nice_step(raw), step, "nice_step({raw})");
        }
        for (v, tick) in [(0.5, "0.5"), (2.0, "2")] {
            assert_eq!(fmt_tick(v), tick, "fmt_tick({v})");
        }
    }
}
