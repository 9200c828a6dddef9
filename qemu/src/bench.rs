//! Benchmark bookkeeping: samples per metric, their statistics, the terminal table and the JSON
//! file written by `hotmem-qemu bench` (issue 6).
//!
//! A [`Report`] holds one [`Metric`] per row (today only `boot`: QEMU spawn to the first
//! `hotmem> ` prompt); later metrics (plug 0 -> 4 GiB, unplug, `mem_map` overhead) are more rows.
//! Measuring is the CLI's job; this module only does arithmetic and formatting, so it is unit
//! tested without QEMU.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// Median, minimum and maximum of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Number of samples.
    pub runs: usize,
    /// Middle sample, or the mean of the two middle samples for an even count.
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// Statistics of `samples`; `None` when there are none or one is NaN.
    pub fn of(samples: &[f64]) -> Option<Stats> {
        if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stats {
            runs: n,
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

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
}

impl Metric {
    /// An empty metric.
    pub fn new(name: &str, unit: &str, description: &str) -> Metric {
        Metric {
            name: name.into(),
            unit: unit.into(),
            description: description.into(),
            samples: Vec::new(),
        }
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

    /// The terminal table: metric, runs, median, min, max (three decimals, unit in the header
    /// column of each row).
    pub fn table(&self) -> String {
        let name_width = self
            .metrics
            .iter()
            .map(|m| m.name.len() + m.unit.len() + 3)
            .chain(["metric".len()])
            .max()
            .unwrap_or(6);
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{:<name_width$}  {:>4}  {:>10}  {:>10}  {:>10}",
            "metric", "runs", "median", "min", "max"
        );
        for m in &self.metrics {
            let label = format!("{} ({})", m.name, m.unit);
            match m.stats() {
                Some(s) => {
                    let _ = writeln!(
                        t,
                        "{label:<name_width$}  {:>4}  {:>10.3}  {:>10.3}  {:>10.3}",
                        s.runs, s.median, s.min, s.max
                    );
                }
                None => {
                    let _ = writeln!(
                        t,
                        "{label:<name_width$}  {:>4}  {:>10}  {:>10}  {:>10}",
                        m.samples.len(),
                        "-",
                        "-",
                        "-"
                    );
                }
            }
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
    fn stats_odd_count() {
        let s = Stats::of(&[3.0, 1.0, 2.0, 5.0, 4.0]).unwrap();
        assert_eq!(
            s,
            Stats {
                runs: 5,
                median: 3.0,
                min: 1.0,
                max: 5.0
            }
        );
    }

    #[test]
    fn stats_even_count_averages_the_middle_pair() {
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.runs, 4);
        assert_eq!(s.median, 2.5);
        assert_eq!((s.min, s.max), (1.0, 4.0));
    }

    #[test]
    fn stats_single_and_empty() {
        let s = Stats::of(&[0.75]).unwrap();
        assert_eq!((s.runs, s.median, s.min, s.max), (1, 0.75, 0.75, 0.75));
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[1.0, f64::NAN]), None);
    }

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
        assert_eq!(row, ["boot", "(s)", "3", "1.250", "1.000", "1.500"], "{t}");
        assert!(lines[2].contains(" - "), "{t}");
    }

    #[test]
    fn write_json_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("bench.json");
        sample_report().write_json(&path).unwrap();
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, sample_report().to_json());
    }
}
