//! The plot of a stress run, as a hand-written SVG: requested versus plugged size per device,
//! the steps' outcomes on the time axis, and each step's convergence time.
//!
//! The stress runner records a [`Sample`] (every device's requested and plugged size, QMP's
//! view) whenever either changes and at least once a second, and a [`Mark`] when a step ends
//! (converged after so long, stalled, or failed). [`svg`] draws a fixed 1000x640 picture:
//! - the size panel: per device a dashed requested line and a solid plugged line over elapsed
//!   time, each in a colour of its own ([`COLORS`]: device `i` gets the pair `i`), both step
//!   functions (a size holds until the next sample);
//! - under it, on the time axis, a mark per stalled step (an orange triangle) and per failure
//!   (a red cross, with a red line through the size panel), so the eye finds them at once;
//! - the convergence panel: one dot per timed step at (end of step, time from its last
//!   action to QMP size == requested);
//! - the legend in a column right of the panels, never over the data.
//!
//! Both panels share the time axis; their grids use "nice" ticks (1, 2 or 5 times a power of
//! ten). Every data point lies inside its panel, also for no samples at all; text is
//! XML-escaped. No plotting library: the picture is small and its format is pinned by the
//! tests here.

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

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Converged; the time from its last action to QMP size == requested.
    Converged(Duration),
    /// Converged, but the step is no convergence time (a hog or pin step, a faulted step).
    Untimed,
    /// Stalled for an excused reason.
    Stalled,
    /// The run failed here.
    Failed,
}

/// The end of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Since the start of the run.
    pub at: Duration,
    /// The step's number (1-based).
    pub step: usize,
    /// How it ended.
    pub outcome: Outcome,
}

/// `(plugged, requested)` colour of device `i % COLORS.len()`: eight distinct colours, none the
/// orange of a stall or the red of a failure.
pub const COLORS: [(&str, &str); 4] = [
    ("#1f77b4", "#9467bd"),
    ("#2ca02c", "#8c564b"),
    ("#e377c2", "#7f7f7f"),
    ("#17becf", "#bcbd22"),
];
const STALL: &str = "#ff7f0e";
const FAIL: &str = "#d62728";

const W: f64 = 1000.0;
const H: f64 = 640.0;
const LEFT: f64 = 70.0;
/// The plot area ends here; the legend column is right of it.
const PLOT_RIGHT: f64 = 790.0;
const LEGEND_X: f64 = 806.0;
const SIZE_TOP: f64 = 40.0;
const SIZE_BOTTOM: f64 = 330.0;
/// The strip of stall and failure marks under the size panel.
const MARKS_Y: f64 = 344.0;
const CONV_TOP: f64 = 392.0;
const CONV_BOTTOM: f64 = 590.0;

/// One panel: its vertical extent and scale.
struct Panel {
    top: f64,
    bottom: f64,
    y_max: f64,
}

impl Panel {
    fn y(&self, v: f64) -> f64 {
        self.bottom - v / self.y_max * (self.bottom - self.top)
    }
}

/// The picture of the module docs. `names[i]` labels device `i`.
pub fn svg(title: &str, names: &[String], samples: &[Sample], marks: &[Mark]) -> String {
    let pw = PLOT_RIGHT - LEFT;
    let t_max = samples
        .iter()
        .map(|s| s.at.as_secs_f64())
        .chain(marks.iter().map(|m| m.at.as_secs_f64()))
        .fold(0.0, f64::max)
        .max(1.0);
    let x = |t: f64| LEFT + t / t_max * pw;
    let y_max_bytes = samples
        .iter()
        .flat_map(|s| s.requested.iter().chain(&s.plugged))
        .copied()
        .max()
        .unwrap_or(0)
        .max(GIB);
    let sizes = Panel {
        top: SIZE_TOP,
        bottom: SIZE_BOTTOM,
        y_max: y_max_bytes as f64 / GIB as f64,
    };
    let conv_ms: Vec<(f64, f64)> = marks
        .iter()
        .filter_map(|m| match m.outcome {
            Outcome::Converged(d) => Some((m.at.as_secs_f64(), d.as_secs_f64() * 1e3)),
            _ => None,
        })
        .collect();
    let conv = Panel {
        top: CONV_TOP,
        bottom: CONV_BOTTOM,
        y_max: conv_ms.iter().map(|c| c.1).fold(0.0, f64::max).max(100.0),
    };

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
    // The shared time grid, labelled under each panel.
    let t_step = nice_step(t_max / 8.0);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        for p in [&sizes, &conv] {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/>"##,
                x(t),
                p.top,
                p.bottom
            );
        }
        for label_y in [MARKS_Y + 22.0, CONV_BOTTOM + 16.0] {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{label_y}" text-anchor="middle">{}</text>"#,
                x(t),
                fmt_tick(t)
            );
        }
        t += t_step;
    }
    for (p, label) in [(&sizes, "size (GiB)"), (&conv, "convergence (ms)")] {
        value_grid(&mut s, p);
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{}" width="{pw}" height="{}" fill="none" stroke="black"/>"#,
            p.top,
            p.bottom - p.top
        );
        let mid = (p.top + p.bottom) / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="16" y="{mid}" text-anchor="middle" transform="rotate(-90 16 {mid})">{label}</text>"#
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">elapsed (s)</text>"#,
        LEFT + pw / 2.0,
        H - 14.0
    );
    // One requested and one plugged line per device.
    for (i, name) in names.iter().enumerate() {
        let (plugged_color, requested_color) = COLORS[i % COLORS.len()];
        for (what, color, dash, pick) in [
            (
                "requested",
                requested_color,
                r#" stroke-dasharray="6 4""#,
                0,
            ),
            ("plugged", plugged_color, "", 1),
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
                let (px, py) = (
                    x(sample.at.as_secs_f64()),
                    sizes.y(bytes as f64 / GIB as f64),
                );
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
    }
    // Stalls and failures on the time axis; convergence times in their panel.
    for m in marks {
        let mx = x(m.at.as_secs_f64());
        match m.outcome {
            Outcome::Stalled => {
                let _ = writeln!(
                    s,
                    r#"<path class="stall" d="M{mx:.1},{0:.1} l-4,8 h8 z" fill="{STALL}"><title>step {1} stalled</title></path>"#,
                    MARKS_Y - 6.0,
                    m.step
                );
            }
            Outcome::Failed => {
                let _ = writeln!(
                    s,
                    r#"<g class="fail" stroke="{FAIL}" stroke-width="2"><title>step {} failed</title><line x1="{mx:.1}" y1="{SIZE_TOP}" x2="{mx:.1}" y2="{SIZE_BOTTOM}" stroke-width="1" stroke-opacity="0.6"/><path d="M{:.1},{:.1} l10,10 m0,-10 l-10,10" fill="none"/></g>"#,
                    m.step,
                    mx - 5.0,
                    MARKS_Y - 6.0
                );
            }
            Outcome::Converged(d) => {
                let _ = writeln!(
                    s,
                    r#"<circle class="conv" cx="{mx:.1}" cy="{:.1}" r="2.2" fill="{}"><title>step {}: {:.0} ms</title></circle>"#,
                    conv.y(d.as_secs_f64() * 1e3),
                    COLORS[0].0,
                    m.step,
                    d.as_secs_f64() * 1e3
                );
            }
            Outcome::Untimed => {}
        }
    }
    legend(&mut s, names);
    s.push_str("</svg>\n");
    s
}

/// The value grid and tick labels of a panel.
fn value_grid(s: &mut String, p: &Panel) {
    let step = nice_step(p.y_max / 5.0);
    let mut v = 0.0;
    while v <= p.y_max + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{PLOT_RIGHT}" y2="{0:.1}" stroke="#ddd"/><text x="{1}" y="{2:.1}" text-anchor="end">{3}</text>"##,
            p.y(v),
            LEFT - 6.0,
            p.y(v) + 4.0,
            fmt_tick(v)
        );
        v += step;
    }
}

/// The legend column right of the panels: each device's plugged and requested line, then the
/// marks.
fn legend(s: &mut String, names: &[String]) {
    let (lx, tx) = (LEGEND_X, LEGEND_X + 30.0);
    let mut ly = SIZE_TOP + 10.0;
    for (i, name) in names.iter().enumerate() {
        let (plugged, requested) = COLORS[i % COLORS.len()];
        let name = xml_escape(name);
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{0}" y2="{ly}" stroke="{plugged}" stroke-width="1.8"/><text x="{tx}" y="{1}">{name} plugged</text>"#,
            lx + 24.0,
            ly + 4.0
        );
        ly += 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{0}" y2="{ly}" stroke="{requested}" stroke-width="1.2" stroke-dasharray="6 4"/><text x="{tx}" y="{1}">{name} requested</text>"#,
            lx + 24.0,
            ly + 4.0
        );
        ly += 26.0;
    }
    let _ = writeln!(
        s,
        r#"<path d="M{0},{1} l-4,8 h8 z" fill="{STALL}"/><text x="{tx}" y="{2}">stalled step</text>"#,
        lx + 12.0,
        ly - 4.0,
        ly + 4.0
    );
    ly += 20.0;
    let _ = writeln!(
        s,
        r#"<path d="M{0},{1} l10,10 m0,-10 l-10,10" stroke="{FAIL}" stroke-width="2" fill="none"/><text x="{tx}" y="{2}">failure</text>"#,
        lx + 7.0,
        ly - 5.0,
        ly + 4.0
    );
    let _ = writeln!(
        s,
        r#"<circle cx="{0}" cy="{1}" r="2.2" fill="{2}"/><text x="{tx}" y="{3}">convergence time of a step</text>"#,
        lx + 12.0,
        CONV_TOP + 10.0,
        COLORS[0].0,
        CONV_TOP + 14.0
    );
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

    fn mark(at_s: u64, step: usize, outcome: Outcome) -> Mark {
        Mark {
            at: Duration::from_secs(at_s),
            step,
            outcome,
        }
    }

    /// The points of every polyline.
    fn points(s: &str) -> Vec<Vec<(f64, f64)>> {
        s.split("points=\"")
            .skip(1)
            .map(|poly| {
                poly[..poly.find('"').unwrap()]
                    .split(' ')
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn svg_draws_two_step_lines_per_device_in_their_own_colours() {
        let names = vec!["vm0".to_string(), "vm1 <&>".to_string()];
        let samples = [
            sample(0, &[0, 0], &[0, 0]),
            sample(2, &[GIB, 2 * GIB], &[0, 0]),
            sample(3, &[GIB, 2 * GIB], &[GIB, 2 * GIB]),
            sample(10, &[0, 2 * GIB], &[0, 2 * GIB]),
        ];
        let s = svg("t <1>", &names, &samples, &[]);
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
        // Four lines, four colours.
        let colours: std::collections::BTreeSet<&str> = s
            .split("<polyline fill=\"none\" stroke=\"")
            .skip(1)
            .map(|p| &p[..7])
            .collect();
        assert_eq!(colours.len(), 4, "{colours:?}");
        // Every point lies inside the size panel; a step line has 1 + 2 per later sample.
        for pts in points(&s) {
            assert_eq!(pts.len(), 1 + 2 * (samples.len() - 1), "{pts:?}");
            for (x, y) in pts {
                assert!(
                    (LEFT..=PLOT_RIGHT).contains(&x) && (SIZE_TOP..=SIZE_BOTTOM).contains(&y),
                    "{x},{y}"
                );
            }
        }
        // The legend sits right of the data.
        for text in s.split("<text x=\"").skip(1) {
            let label = &text[text.find('>').unwrap() + 1..text.find("</text>").unwrap()];
            if label.ends_with(" plugged") || label.ends_with(" requested") {
                let x: f64 = text[..text.find('"').unwrap()].parse().unwrap();
                assert!(x > PLOT_RIGHT, "{label} at {x}");
            }
        }
        // Empty input still makes a valid picture.
        let empty = svg("empty", &names, &[], &[]);
        assert!(empty.trim_end().ends_with("</svg>"));
        assert_eq!(empty.matches("<polyline").count(), 4);
    }

    #[test]
    fn svg_marks_stalls_failures_and_convergence_times() {
        let names = vec!["vm0".to_string()];
        let samples = [sample(0, &[0], &[0]), sample(20, &[GIB], &[GIB])];
        let marks = [
            mark(2, 1, Outcome::Converged(Duration::from_millis(250))),
            mark(5, 2, Outcome::Stalled),
            mark(6, 3, Outcome::Untimed),
            mark(9, 4, Outcome::Converged(Duration::from_millis(1200))),
            mark(30, 5, Outcome::Failed),
        ];
        let s = svg("m", &names, &samples, &marks);
        assert_eq!(s.matches("class=\"stall\"").count(), 1);
        assert_eq!(s.matches("class=\"fail\"").count(), 1);
        assert_eq!(s.matches("class=\"conv\"").count(), 2);
        assert!(s.contains("step 2 stalled") && s.contains("step 5 failed"));
        assert!(s.contains("step 4: 1200 ms"));
        // The failure at 30 s is the right end of the time axis.
        assert!(
            s.contains(&format!("x1=\"{PLOT_RIGHT:.1}\" y1=\"{SIZE_TOP}\"")),
            "{s}"
        );
        // The dots lie inside the convergence panel, the slowest step at its top.
        for c in s.split("class=\"conv\" cx=\"").skip(1) {
            let cy: f64 = c
                .split("cy=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!((CONV_TOP..=CONV_BOTTOM).contains(&cy), "{cy}");
        }
        assert!(s.contains(&format!("cy=\"{CONV_TOP:.1}\"")), "{s}");
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
