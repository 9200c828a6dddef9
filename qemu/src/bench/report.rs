//! The benchmark's results: the samples per [`Metric`], the terminal table that sets them
//! beside Linux's, and the JSON file.
//!
//! A [`Metric`] is one measured quantity (name, unit, description, one sample per run, and a
//! [`Reference`]: the same quantity measured on the Linux guest in the same bench run, its own
//! samples and where they come from). A [`Report`] is a whole run: the metrics plus where they
//! come from (machine, QEMU command line, git commit and whether the tree was dirty, time).
//! [`Report::table`] prints metric, runs, median, min and max with four decimals, and, once any
//! metric has a reference, Linux's median and the ratio `linux/ours` (Linux's median over ours:
//! every compared metric is lower-is-better, so it reads as "N times less"); [`Report::write_json`]
//! writes the same data as pretty JSON (`<workspace>/target/bench/bench.json` by default,
//! [`default_out`]), samples of both sides included, so runs can be compared later.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::stats::Stats;

/// One measured quantity: a table row and an entry of the JSON `metrics` array.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Short name, e.g. `boot`.
    pub name: String,
    /// Unit of the samples, e.g. `s`.
    pub unit: String,
    /// What exactly is measured (goes into the JSON only).
    pub description: String,
    /// One value per run, in run order.
    pub samples: Vec<f64>,
    /// The same quantity on the comparison guest (Linux), if it was measured.
    pub reference: Option<Reference>,
}

/// The comparison side of a [`Metric`]: samples in the metric's unit, and where they come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// One value per run of the comparison guest.
    pub samples: Vec<f64>,
    /// Where they come from (goes into the JSON).
    pub source: String,
}

impl Reference {
    /// Statistics over the samples.
    pub fn stats(&self) -> Option<Stats> {
        Stats::of(&self.samples)
    }
}

impl Metric {
    /// An empty metric.
    pub fn new(name: &str, unit: &str, description: &str) -> Metric {
        Metric {
            name: name.into(),
            unit: unit.into(),
            description: description.into(),
            samples: Vec::new(),
            reference: None,
        }
    }

    /// Adds one sample of the comparison guest (the first sets `source`).
    pub fn push_reference(&mut self, sample: f64, source: &str) {
        self.reference
            .get_or_insert_with(|| Reference {
                samples: Vec::new(),
                source: source.into(),
            })
            .samples
            .push(sample);
    }

    /// The reference's median over ours, when both have samples.
    pub fn ratio(&self) -> Option<f64> {
        let ours = self.stats()?.median;
        let theirs = self.reference.as_ref()?.stats()?.median;
        (ours > 0.0).then(|| theirs / ours)
    }

    /// Records one run.
    pub fn push(&mut self, sample: f64) {
        self.samples.push(sample);
    }

    /// Statistics over the samples so far.
    pub fn stats(&self) -> Option<Stats> {
        Stats::of(&self.samples)
    }

    /// The JSON object for this metric.
    pub fn to_json(&self) -> Value {
        let stats = self.stats();
        json!({
            "name": self.name,
            "unit": self.unit,
            "description": self.description,
            "runs": self.samples.len(),
            "samples": self.samples,
            "median": stats.map(|s| s.median),
            "min": stats.map(|s| s.min),
            "max": stats.map(|s| s.max),
            "reference": self.reference.as_ref().map(|r| {
                let st = r.stats();
                json!({
                    "value": st.map(|s| s.median),
                    "source": r.source,
                    "runs": r.samples.len(),
                    "samples": r.samples,
                    "min": st.map(|s| s.min),
                    "max": st.map(|s| s.max),
                })
            }),
            "ratio_reference_over_median": self.ratio(),
        })
    }
}

/// A benchmark run: its metrics and where they come from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// Short machine label ([`crate::Machine`]'s `Display`).
    pub machine: String,
    /// The QEMU command line, shell-quoted.
    pub command_line: String,
    /// `git rev-parse HEAD`, if that worked.
    pub git_commit: Option<String>,
    /// Whether `git status --porcelain` showed local changes (`None` if git did not answer).
    pub git_dirty: Option<bool>,
    /// Seconds since the Unix epoch when the report was made.
    pub timestamp_unix: u64,
    /// The measured quantities, in table order.
    pub metrics: Vec<Metric>,
}

impl Report {
    /// The whole report as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "machine": self.machine,
            "qemu_command_line": self.command_line,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
            "timestamp_unix": self.timestamp_unix,
            "metrics": self.metrics.iter().map(Metric::to_json).collect::<Vec<_>>(),
        })
    }

    /// The terminal table: metric, runs, median, min, max (four decimals, unit in the header
    /// column of each row), and `linux` (its median) and `linux/ours` columns when any metric
    /// has a reference.
    pub fn table(&self) -> String {
        let name_width = self
            .metrics
            .iter()
            .map(|m| m.name.len() + m.unit.len() + 3)
            .chain(["metric".len()])
            .max()
            .unwrap_or(6);
        let with_reference = self.metrics.iter().any(|m| m.reference.is_some());
        let mut t = String::new();
        let mut header = format!(
            "{:<name_width$}  {:>4}  {:>10}  {:>10}  {:>10}",
            "metric", "runs", "median", "min", "max"
        );
        if with_reference {
            header.push_str(&format!("  {:>10}  {:>10}", "linux", "linux/ours"));
        }
        let _ = writeln!(t, "{}", header.trim_end());
        for m in &self.metrics {
            let label = format!("{} ({})", m.name, m.unit);
            let mut row = match m.stats() {
                Some(s) => format!(
                    "{label:<name_width$}  {:>4}  {:>10.4}  {:>10.4}  {:>10.4}",
                    s.runs, s.median, s.min, s.max
                ),
                None => format!(
                    "{label:<name_width$}  {:>4}  {:>10}  {:>10}  {:>10}",
                    m.samples.len(),
                    "-",
                    "-",
                    "-"
                ),
            };
            if with_reference {
                match m.reference.as_ref().and_then(Reference::stats) {
                    Some(r) => row.push_str(&format!("  {:>10.4}", r.median)),
                    None => row.push_str(&format!("  {:>10}", "-")),
                }
                match m.ratio() {
                    Some(x) => row.push_str(&format!("  {:>9.1}x", x)),
                    None => row.push_str(&format!("  {:>10}", "-")),
                }
            }
            let _ = writeln!(t, "{row}");
        }
        t
    }

    /// Writes the JSON (pretty, with a trailing newline) to `path`, creating its directory.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let mut text = serde_json::to_string_pretty(&self.to_json())
            .map_err(|e| Error::Protocol(format!("encoding the bench JSON: {e}")))?;
        text.push('\n');
        std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }
}

/// Default output file: `<workspace>/target/bench/bench.json`.
pub fn default_out() -> PathBuf {
    crate::instance::workspace_root()
        .join("target")
        .join("bench")
        .join("bench.json")
}

/// `git rev-parse HEAD` in `dir`, or `None` if git is missing or `dir` is not a repository.
pub fn git_commit(dir: &Path) -> Option<String> {
    let out = git(dir, &["rev-parse", "HEAD"])?;
    let commit = out.trim();
    (!commit.is_empty()).then(|| commit.to_string())
}

/// Whether the work tree in `dir` has local changes, or `None` if git did not answer.
pub fn git_dirty(dir: &Path) -> Option<bool> {
    git(dir, &["status", "--porcelain"]).map(|out| !out.trim().is_empty())
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_do_not_reorder_samples() {
        let mut m = Metric::new("boot", "s", "spawn to prompt");
        for v in [2.0, 1.0, 3.0] {
            m.push(v);
        }
        assert_eq!(m.stats().unwrap().median, 2.0);
        assert_eq!(m.samples, vec![2.0, 1.0, 3.0]);
    }

    fn sample_report() -> Report {
        let mut boot = Metric::new("boot", "s", "spawn to prompt");
        boot.samples = vec![1.25, 1.0, 1.5];
        Report {
            machine: "max gic3 el1 smp2 512M+vmem4G".into(),
            command_line: "qemu-system-aarch64 -M virt".into(),
            git_commit: Some("abc".into()),
            git_dirty: Some(false),
            timestamp_unix: 1,
            metrics: vec![boot, Metric::new("unplug", "s", "not measured")],
        }
    }

    #[test]
    fn json_has_samples_and_stats() {
        let j = sample_report().to_json();
        assert_eq!(j["git_commit"], "abc");
        assert_eq!(j["qemu_command_line"], "qemu-system-aarch64 -M virt");
        let boot = &j["metrics"][0];
        assert_eq!(boot["name"], "boot");
        assert_eq!(boot["runs"], 3);
        assert_eq!(boot["samples"], json!([1.25, 1.0, 1.5]));
        assert_eq!(boot["median"], 1.25);
        assert_eq!(boot["min"], 1.0);
        assert_eq!(boot["max"], 1.5);
        assert_eq!(j["metrics"][1]["median"], Value::Null);
    }

    #[test]
    fn table_rows() {
        let t = sample_report().table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("metric"), "{t}");
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            ["boot", "(s)", "3", "1.2500", "1.0000", "1.5000"],
            "{t}"
        );
        assert!(lines[2].contains(" - "), "{t}");
    }

    #[test]
    fn no_reference_means_no_linux_columns() {
        let t = sample_report().table();
        assert!(!t.contains("linux"), "{t}");
        let mut m = Metric::new("x", "s", "only Linux ran");
        m.push_reference(1.0, "Linux");
        assert_eq!(m.ratio(), None);
    }

    #[test]
    fn write_json_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("bench.json");
        sample_report().write_json(&path).unwrap();
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, sample_report().to_json());
    }

    #[test]
    fn reference_in_json_and_table() {
        let mut r = sample_report();
        let mut plug = Metric::new("plug_0_4g_qmp_s", "s", "qom-set to QMP size");
        for v in [0.3, 0.21, 0.2] {
            plug.push_reference(v, "Linux");
        }
        plug.samples = vec![0.0061];
        r.metrics.push(plug);
        let j = r.to_json();
        assert_eq!(j["metrics"][0]["reference"], Value::Null);
        assert_eq!(j["metrics"][0]["ratio_reference_over_median"], Value::Null);
        let linux = &j["metrics"][2]["reference"];
        assert_eq!(linux["value"], 0.21);
        assert_eq!(linux["source"], "Linux");
        assert_eq!(linux["runs"], 3);
        assert_eq!(linux["samples"], json!([0.3, 0.21, 0.2]));
        assert_eq!(
            (linux["min"].clone(), linux["max"].clone()),
            (json!(0.2), json!(0.3))
        );
        let ratio = j["metrics"][2]["ratio_reference_over_median"]
            .as_f64()
            .unwrap();
        assert!((ratio - 0.21 / 0.0061).abs() < 1e-9, "{ratio}");
        let t = r.table();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("linux  linux/ours"), "{t}");
        let boot: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(boot[boot.len() - 2..], ["-", "-"], "{t}");
        let plug: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            plug,
            [
                "plug_0_4g_qmp_s",
                "(s)",
                "1",
                "0.0061",
                "0.0061",
                "0.0061",
                "0.2100",
                "34.4x"
            ],
            "{t}"
        );
    }
}
