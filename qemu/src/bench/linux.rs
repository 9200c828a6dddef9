//! The Linux comparison guest: Debian's stock arm64 kernel on the same machine as hotmem, timed
//! through the same QMP polls, for the reference column of the bench.
//!
//! [`measure`] boots the kernel fetched by [`super::fetch`] with the initramfs of
//! [`super::initramfs`] on the bench's [`Machine`] (same `-cpu`, `-smp`, RAM, virtio-mem device;
//! only `-kernel`, `-initrd` and the command line [`BOOTARGS`] differ), `runs` fresh boots per
//! [`LinuxScenario`] of [`scenarios`], and adds each sample to the reference side of the metric
//! of the same name (see [`super::scenario`] for what each name means on hotmem):
//! - `boot`: QEMU spawn to the [`READY_LINE`] that `/init` prints once its shell loop reads
//!   commands (the module is loaded by then);
//! - a plug `L`: `L_qmp_s` (`qom-set` until QMP reports size == requested, the same poller as
//!   hotmem's) and `L_online_s` (`qom-set` until the guest's `memtotal_wait` sees `/proc/meminfo`
//!   MemTotal grown by the plugged size: Linux ACKs a PLUG before the memory is online); for the
//!   0 -> 4 GiB plug also the memmap overhead: MemFree before plus the plugged size minus MemFree
//!   after, per GiB (recorded as the reference of both hotmem rows, `memmap_on_memory` off and
//!   on: Linux's virtio-mem driver never puts the memmap in the plugged memory);
//! - an unplug `L`: `L_qmp_s`, then MemTotal must be back where it was.
//!
//! The data scenario fills a tmpfs (`size=` set explicitly: the default is half the RAM at mount
//! time) with 64 MiB files from `/dev/urandom`, records their md5 sums on the root file system
//! (boot RAM), unplugs everything and checks the sums. Plugged memory is ZONE_MOVABLE
//! (`memhp_default_state=online_movable`) and the highest zone, so the tmpfs pages land there
//! and all of them must migrate.
//!
//! The console protocol ([`Shell`]): each command is one line sent without echo; the guest
//! answers with its output and a `DONE_MARKER <status>` line ([`parse_reply`]). A `Kernel panic`
//! line fails the wait at once.

use std::thread;
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::instance::{LaunchOptions, Qemu};
use crate::machine::{Machine, GIB, KIB};

use super::fetch::LinuxFiles;
use super::initramfs::{self, DATA_DIR, DONE_MARKER, READY_LINE};
use super::report::Metric;
use super::scenario::{
    BOOT_METRIC, MEMMAP_ON_OVERHEAD_METRIC, MEMMAP_OVERHEAD_METRIC, VMEM_QEMU_ID,
};
use super::{poll_qmp, Progress};

/// The Linux command line: the console, and hot-added memory onlined to ZONE_MOVABLE (Debian's
/// config leaves it offline otherwise).
pub const BOOTARGS: &str = "console=ttyAMA0 memhp_default_state=online_movable";
/// What Linux prints when it panics.
const PANIC_TEXT: &str = "Kernel panic";
/// Deadline for a boot to [`READY_LINE`].
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Deadline for a small command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for a resize (Linux retries a failed unplug after 50 s) or for filling and summing
/// the data.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);
/// Size of each data file.
const FILE_MIB: u64 = 64;

/// One step of a Linux scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinuxStep {
    /// Plug `from -> to`; records `<label>_qmp_s` and `<label>_online_s` when labelled, and the
    /// memmap overhead when `overhead`.
    Plug {
        /// Metric prefix, `None` for a setup step.
        label: Option<&'static str>,
        /// Plugged before.
        from_bytes: u64,
        /// Requested.
        to_bytes: u64,
        /// Record [`MEMMAP_OVERHEAD_METRIC`].
        overhead: bool,
    },
    /// Unplug `from -> to`; records `<label>_qmp_s`.
    Unplug {
        /// Metric prefix.
        label: &'static str,
        /// Plugged before.
        from_bytes: u64,
        /// Requested.
        to_bytes: u64,
    },
    /// Mount a tmpfs of `tmpfs_mib` and fill it with `data_mib` of random files, summed.
    Fill {
        /// tmpfs `size=`.
        tmpfs_mib: u64,
        /// Data written.
        data_mib: u64,
    },
    /// `md5sum -c` of the files written by [`LinuxStep::Fill`].
    Verify,
}

/// Steps on one fresh boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxScenario {
    /// Name in progress lines (the hotmem scenario it mirrors).
    pub name: &'static str,
    /// Boot RAM instead of the bench machine's.
    pub ram_bytes: Option<u64>,
    /// In order.
    pub steps: Vec<LinuxStep>,
}

/// The Linux side of the bench's scenarios: the same resizes as hotmem's (idle 0 -> 4 GiB -> 0,
/// idle 0 -> 1 GiB -> 0, and 4 GiB -> 0 holding 1 GiB with 2 GiB of boot RAM).
pub fn scenarios() -> Vec<LinuxScenario> {
    let plug = |label, to_bytes, overhead| LinuxStep::Plug {
        label,
        from_bytes: 0,
        to_bytes,
        overhead,
    };
    vec![
        LinuxScenario {
            name: "plug_4g_unplug_idle",
            ram_bytes: None,
            steps: vec![
                plug(Some("plug_0_4g"), 4 * GIB, true),
                LinuxStep::Unplug {
                    label: "unplug_4g_0_idle",
                    from_bytes: 4 * GIB,
                    to_bytes: 0,
                },
            ],
        },
        LinuxScenario {
            name: "plug_1g",
            ram_bytes: None,
            steps: vec![
                plug(Some("plug_0_1g"), GIB, false),
                LinuxStep::Unplug {
                    label: "unplug_1g_0_idle",
                    from_bytes: GIB,
                    to_bytes: 0,
                },
            ],
        },
        LinuxScenario {
            name: "unplug_4g_0_hog1g_ram2g",
            ram_bytes: Some(2 * GIB),
            steps: vec![
                plug(None, 4 * GIB, false),
                LinuxStep::Fill {
                    tmpfs_mib: 1536,
                    data_mib: 1024,
                },
                LinuxStep::Unplug {
                    label: "unplug_4g_0_hog1g_ram2g",
                    from_bytes: 4 * GIB,
                    to_bytes: 0,
                },
                LinuxStep::Verify,
            ],
        },
    ]
}

impl LinuxScenario {
    /// The metric names its steps record, in order.
    pub fn metric_names(&self) -> Vec<String> {
        let mut out = vec![BOOT_METRIC.to_string()];
        for s in &self.steps {
            match s {
                LinuxStep::Plug {
                    label: Some(l),
                    overhead,
                    ..
                } => {
                    out.push(format!("{l}_qmp_s"));
                    out.push(format!("{l}_online_s"));
                    if *overhead {
                        out.push(MEMMAP_OVERHEAD_METRIC.to_string());
                        out.push(MEMMAP_ON_OVERHEAD_METRIC.to_string());
                    }
                }
                LinuxStep::Unplug { label, .. } => out.push(format!("{label}_qmp_s")),
                LinuxStep::Plug { label: None, .. }
                | LinuxStep::Fill { .. }
                | LinuxStep::Verify => {}
            }
        }
        out
    }
}

/// `/proc/meminfo`'s totals, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total_kib: u64,
    /// `MemFree`.
    pub free_kib: u64,
}

/// Parses `/proc/meminfo` (`Key:   value kB` lines; CRs ignored).
pub fn parse_meminfo(text: &str) -> Result<MemInfo> {
    let get = |key: &str| -> Result<u64> {
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
            .ok_or_else(|| Error::Protocol(format!("/proc/meminfo has no {key}: {text:?}")))?;
        let mut words = line.split_whitespace();
        let value = words.next().and_then(|v| v.parse().ok());
        match (value, words.next()) {
            (Some(v), Some("kB")) => Ok(v),
            _ => Err(Error::Protocol(format!("/proc/meminfo {key}: {line:?}"))),
        }
    };
    Ok(MemInfo {
        total_kib: get("MemTotal")?,
        free_kib: get("MemFree")?,
    })
}

/// What one command answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Its output lines (CR stripped) and exit status.
    Done {
        /// Output lines before the marker.
        lines: Vec<String>,
        /// `$?`.
        status: i32,
    },
    /// The kernel panicked: the panic line.
    Panic(String),
}

/// Scans unconsumed console text for the end of a reply: a complete line `DONE_MARKER <n>` at
/// the start of a line, or a complete `Kernel panic` line. Returns the bytes consumed (through
/// the marker line's newline) and the reply; `None` while the reply is incomplete.
pub fn parse_reply(text: &str) -> Option<(usize, Reply)> {
    let mut start = 0usize;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        if !line.ends_with('\n') {
            return None;
        }
        let body = line.trim_end_matches(['\r', '\n']);
        if body.contains(PANIC_TEXT) {
            return Some((end, Reply::Panic(body.to_string())));
        }
        if let Some(rest) = body.strip_prefix(DONE_MARKER) {
            if let Ok(status) = rest.trim().parse() {
                let lines = text[..start]
                    .lines()
                    .map(|l| l.trim_end_matches('\r').to_string())
                    .collect();
                return Some((end, Reply::Done { lines, status }));
            }
        }
        start = end;
    }
    None
}

/// Scans the boot output for the end of the boot: a complete [`READY_LINE`] (the value is the
/// text before it, the kernel's log and `/init`'s complaints) or a complete `Kernel panic` line
/// (the error is that line). Returns the bytes consumed; `None` while neither is complete.
pub fn scan_ready(text: &str) -> Option<(usize, std::result::Result<String, String>)> {
    let line_end = |at: usize| text[at..].find('\n').map(|n| at + n + 1);
    if let Some(at) = text.find(PANIC_TEXT) {
        let end = line_end(at)?;
        return Some((end, Err(text[at..end].trim().to_string())));
    }
    let at = text.find(READY_LINE)?;
    Some((line_end(at)?, Ok(text[..at].to_string())))
}

/// The `/init` shell loop over the console of a running Linux guest.
struct Shell<'a> {
    vm: &'a mut Qemu,
}

impl Shell<'_> {
    /// Sends `cmd` and waits for its reply; a non-zero status is an error.
    fn run(&mut self, cmd: &str, deadline: impl Into<Deadline>) -> Result<Vec<String>> {
        self.send(cmd)?;
        self.wait_reply(cmd, deadline.into())
    }

    fn send(&mut self, cmd: &str) -> Result<()> {
        self.vm.console().send(format!("{cmd}\n").as_bytes())
    }

    fn wait_reply(&mut self, cmd: &str, deadline: Deadline) -> Result<Vec<String>> {
        let what = format!("the Linux guest's reply to `{cmd}`");
        match self.vm.console().wait_until(&what, deadline, parse_reply)? {
            Reply::Done { lines, status: 0 } => Ok(lines),
            Reply::Done { lines, status } => Err(Error::Protocol(format!(
                "Linux: `{cmd}` exited with {status}: {}",
                lines.join(" / ")
            ))),
            Reply::Panic(line) => Err(Error::GuestPanic { what, line }),
        }
    }

    fn meminfo(&mut self) -> Result<MemInfo> {
        parse_meminfo(&self.run("cat /proc/meminfo", COMMAND_TIMEOUT)?.join("\n"))
    }
}

/// What [`measure`] needs.
pub struct LinuxConfig<'a> {
    /// The fetched kernel, module and busybox.
    pub files: &'a LinuxFiles,
    /// Where the initramfs is written.
    pub work_dir: &'a std::path::Path,
    /// The bench machine (the scenario may change its RAM).
    pub machine: &'a Machine,
    /// QEMU binary and QMP timeout (the image is replaced).
    pub options: &'a LaunchOptions,
    /// Fresh boots per scenario.
    pub runs: usize,
}

/// Builds the initramfs and runs every Linux scenario `runs` times (run 1 of each, then run 2,
/// ...), adding the samples to the references of `metrics` (declared by the caller).
pub fn measure(cfg: &LinuxConfig, metrics: &mut [Metric]) -> Result<()> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
    };
    let cpio = initramfs::build(&read(&cfg.files.busybox)?, &read(&cfg.files.module)?);
    let initrd = cfg.work_dir.join("initramfs.cpio");
    std::fs::write(&initrd, cpio)
        .map_err(|e| Error::io(format!("writing {}", initrd.display()), e))?;
    let options = LaunchOptions {
        image: Some(cfg.files.kernel.clone()),
        ..cfg.options.clone()
    };
    let source = format!(
        "Linux guest {}, same QEMU, machine and run (cmdline {BOOTARGS})",
        cfg.files.package
    );
    let mut first = true;
    for run in 1..=cfg.runs {
        for sc in scenarios() {
            let machine = cfg
                .machine
                .clone()
                .ram(sc.ram_bytes.unwrap_or(cfg.machine.ram_bytes))
                .bootargs(BOOTARGS)
                .extra_arg("-initrd")
                .extra_arg(&initrd.display().to_string());
            let mut vm = Qemu::launch_with(&machine, &options)?;
            if first {
                eprintln!("# linux: {}", vm.command_line());
                first = false;
            }
            let mut progress = Progress::new(format!("linux run {run}/{} {}", cfg.runs, sc.name));
            let mut samples = Vec::new();
            let result = run_scenario(&mut vm, &sc, &mut samples, &mut progress);
            eprintln!("# {}: {}", progress.prefix, progress.items.join(", "));
            if let Err(e) = result {
                eprintln!("\n{}", vm.report());
                return Err(e);
            }
            for (name, value) in samples {
                match metrics.iter_mut().find(|m| m.name == name) {
                    Some(m) => m.push_reference(value, &source),
                    None => panic!("Linux metric {name} was not declared"),
                }
            }
            let _ = vm.qmp().quit(COMMAND_TIMEOUT);
            let _ = vm.wait_exit(COMMAND_TIMEOUT);
        }
    }
    Ok(())
}

fn run_scenario(
    vm: &mut Qemu,
    sc: &LinuxScenario,
    samples: &mut Vec<(String, f64)>,
    progress: &mut Progress,
) -> Result<()> {
    let started = vm.started();
    let what = "the Linux guest's ready line";
    let before = vm
        .console()
        .wait_until(what, BOOT_TIMEOUT.into(), scan_ready)?
        .map_err(|line| Error::GuestPanic {
            what: what.into(),
            line,
        })?;
    if let Some(l) = before.lines().find(|l| l.contains("insmod")) {
        return Err(Error::Protocol(format!("Linux /init: {}", l.trim())));
    }
    let boot = started.elapsed().as_secs_f64();
    samples.push((BOOT_METRIC.into(), boot));
    progress.push(format!("boot {boot:.3}"));
    let mut sh = Shell { vm };
    sh.run(
        "ls /sys/bus/virtio/drivers/virtio_mem | grep -q virtio",
        COMMAND_TIMEOUT,
    )
    .map_err(|_| Error::Protocol("Linux: virtio_mem did not bind the device".into()))?;

    for step in &sc.steps {
        match *step {
            LinuxStep::Plug {
                label,
                from_bytes,
                to_bytes,
                overhead,
            } => {
                let before = sh.meminfo()?;
                let grow_kib = (to_bytes - from_bytes) / KIB;
                sh.send(&format!("memtotal_wait {}", before.total_kib + grow_kib))?;
                let (qmp, online) = resize(&mut sh, to_bytes, true)?;
                let after = sh.meminfo()?;
                let mut note = format!(
                    "{} -> {}: qmp {qmp:.3} s, usable {:.3} s",
                    crate::format_size(from_bytes),
                    crate::format_size(to_bytes),
                    online.unwrap_or(f64::NAN)
                );
                if let Some(l) = label {
                    samples.push((format!("{l}_qmp_s"), qmp));
                    samples.push((format!("{l}_online_s"), online.unwrap_or(f64::NAN)));
                    if overhead {
                        let gib = (to_bytes - from_bytes) as f64 / GIB as f64;
                        let spent = (before.free_kib + grow_kib) as f64 - after.free_kib as f64;
                        samples.push((MEMMAP_OVERHEAD_METRIC.into(), spent / gib));
                        // Linux's one figure is the reference of both hotmem modes.
                        samples.push((MEMMAP_ON_OVERHEAD_METRIC.into(), spent / gib));
                        note.push_str(&format!(", overhead {:.0} KiB/GiB", spent / gib));
                    }
                }
                progress.push(note);
            }
            LinuxStep::Unplug {
                label,
                from_bytes,
                to_bytes,
            } => {
                let before = sh.meminfo()?;
                let (qmp, _) = resize(&mut sh, to_bytes, false)?;
                let after = sh.meminfo()?;
                let want = before.total_kib - (from_bytes - to_bytes) / KIB;
                if after.total_kib != want {
                    return Err(Error::Protocol(format!(
                        "Linux: after unplugging to {}: MemTotal {} kB, expected {want} kB",
                        crate::format_size(to_bytes),
                        after.total_kib
                    )));
                }
                samples.push((format!("{label}_qmp_s"), qmp));
                progress.push(format!(
                    "{} -> {}: qmp {qmp:.3} s",
                    crate::format_size(from_bytes),
                    crate::format_size(to_bytes)
                ));
            }
            LinuxStep::Fill {
                tmpfs_mib,
                data_mib,
            } => {
                let t = Instant::now();
                sh.run(
                    &format!("mount -t tmpfs -o size={tmpfs_mib}m tmpfs {DATA_DIR}"),
                    COMMAND_TIMEOUT,
                )?;
                sh.run(&fill_command(data_mib), STEP_TIMEOUT)?;
                sh.run(&format!("md5sum {DATA_DIR}/* > /md5sums"), STEP_TIMEOUT)?;
                progress.push(format!(
                    "tmpfs {data_mib} MiB written and summed in {:.1} s",
                    t.elapsed().as_secs_f64()
                ));
            }
            LinuxStep::Verify => {
                let lines = sh.run("md5sum -c /md5sums", STEP_TIMEOUT)?;
                let ok = lines.iter().filter(|l| l.ends_with(": OK")).count();
                progress.push(format!("md5 ok {ok} files"));
            }
        }
    }
    Ok(())
}

/// The shell line that writes `data_mib` of random data into [`DATA_DIR`] as [`FILE_MIB`] files
/// (stops at the first failing `dd`, whose status is the line's).
pub fn fill_command(data_mib: u64) -> String {
    let files = data_mib.div_ceil(FILE_MIB);
    let names: Vec<String> = (0..files).map(|i| i.to_string()).collect();
    format!(
        "for i in {}; do dd if=/dev/urandom of={DATA_DIR}/f$i bs=1M count={FILE_MIB} \
         2>/dev/null || break; done",
        names.join(" ")
    )
}

/// `qom-set`, then the QMP poll until size == requested; with `wait_usable`, also the reply of
/// the `memtotal_wait` sent before. Returns the QMP time and the usable time, in seconds.
fn resize(sh: &mut Shell, to_bytes: u64, wait_usable: bool) -> Result<(f64, Option<f64>)> {
    let deadline = Deadline::after(STEP_TIMEOUT);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (console, qmp) = sh.vm.console_and_qmp();
    let t0 = Instant::now();
    qmp.set_requested_size(VMEM_QEMU_ID, to_bytes, COMMAND_TIMEOUT)?;
    let (polled, usable) = thread::scope(|s| {
        let poller = s.spawn(|| poll_qmp(qmp, to_bytes, t0, deadline, &stop));
        let usable = if wait_usable {
            let what = "the Linux guest's memtotal_wait";
            match console.wait_until(what, deadline, parse_reply) {
                Ok(Reply::Done { status: 0, .. }) => Ok(Some(t0.elapsed().as_secs_f64())),
                Ok(other) => Err(Error::Protocol(format!("Linux memtotal_wait: {other:?}"))),
                Err(e) => Err(e),
            }
        } else {
            Ok(None)
        };
        if usable.is_err() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let polled = poller
            .join()
            .unwrap_or_else(|_| Err(Error::Protocol("the QMP poller panicked".into())));
        (polled, usable)
    });
    let usable = usable?;
    let (qmp_time, _) = polled?;
    Ok((qmp_time.as_secs_f64(), usable))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:        2014852 kB\r\nMemFree:         1931520 kB\r\n\
                           MemAvailable:    1911520 kB\r\nBuffers:               0 kB\r\n";

    #[test]
    fn meminfo_totals() {
        assert_eq!(
            parse_meminfo(MEMINFO).unwrap(),
            MemInfo {
                total_kib: 2014852,
                free_kib: 1931520
            }
        );
        assert!(parse_meminfo("MemFree: 1 kB\n").is_err(), "no MemTotal");
        assert!(parse_meminfo("MemTotal: x kB\nMemFree: 1 kB\n").is_err());
        assert!(
            parse_meminfo("MemTotal: 5 MB\nMemFree: 1 kB\n").is_err(),
            "unit"
        );
        // MemTotalX is not MemTotal.
        assert!(parse_meminfo("MemTotalX: 5 kB\nMemFree: 1 kB\n").is_err());
    }

    #[test]
    fn reply_needs_a_complete_marker_line() {
        let text = "a b\r\nc\r\n@@done 0\r\nnext";
        let (used, reply) = parse_reply(text).unwrap();
        assert_eq!(&text[used..], "next");
        assert_eq!(
            reply,
            Reply::Done {
                lines: vec!["a b".into(), "c".into()],
                status: 0
            }
        );
        assert_eq!(
            parse_reply("x\r\n@@done 1"),
            None,
            "marker line not complete"
        );
        assert_eq!(parse_reply("x\r\n@@do"), None);
        assert_eq!(
            parse_reply("@@done 2\r\n").unwrap().1,
            Reply::Done {
                lines: vec![],
                status: 2
            }
        );
        // The marker counts only at the start of a line.
        assert_eq!(parse_reply("echo @@done 0\r\n"), None);
        let (_, p) =
            parse_reply("[  1.0] Kernel panic - not syncing: Attempted to kill init!\r\n").unwrap();
        assert!(matches!(p, Reply::Panic(l) if l.contains("Attempted to kill init")));
    }

    #[test]
    fn ready_line_or_panic_ends_the_boot() {
        let boot = "[    0.0] Booting Linux\r\nhotmem-bench: ready\r\n";
        let (used, before) = scan_ready(boot).unwrap();
        assert_eq!(used, boot.len());
        assert_eq!(before.unwrap(), "[    0.0] Booting Linux\r\n");
        assert_eq!(
            scan_ready("[    0.0] Booting Linux\r\nhotmem-bench: rea"),
            None
        );
        assert_eq!(scan_ready("hotmem-bench: ready"), None, "line not complete");
        let panic = "[ 1.2] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n";
        let (_, err) = scan_ready(panic).unwrap();
        assert!(err
            .unwrap_err()
            .starts_with("Kernel panic - not syncing: VFS"));
    }

    #[test]
    fn scenarios_mirror_hotmem_metric_names() {
        let ours: Vec<String> = super::super::default_scenarios()
            .iter()
            .flat_map(super::super::Scenario::metrics)
            .map(|m| m.name)
            .collect();
        let linux: Vec<String> = scenarios().iter().flat_map(|s| s.metric_names()).collect();
        for name in linux.iter().filter(|n| *n != BOOT_METRIC) {
            assert!(ours.contains(name), "{name} is not a hotmem metric");
        }
        assert_eq!(
            linux,
            [
                BOOT_METRIC,
                "plug_0_4g_qmp_s",
                "plug_0_4g_online_s",
                MEMMAP_OVERHEAD_METRIC,
                MEMMAP_ON_OVERHEAD_METRIC,
                "unplug_4g_0_idle_qmp_s",
                BOOT_METRIC,
                "plug_0_1g_qmp_s",
                "plug_0_1g_online_s",
                "unplug_1g_0_idle_qmp_s",
                BOOT_METRIC,
                "unplug_4g_0_hog1g_ram2g_qmp_s",
            ]
        );
        let data = &scenarios()[2];
        assert_eq!(data.ram_bytes, Some(2 * GIB));
        assert!(matches!(
            data.steps[1],
            LinuxStep::Fill { tmpfs_mib, data_mib: 1024 } if tmpfs_mib > 1024
        ));
    }

    #[test]
    fn fill_writes_the_whole_amount() {
        let c = fill_command(1024);
        assert!(c.starts_with("for i in 0 1 2 "), "{c}");
        assert!(c.contains(" 15; do dd if=/dev/urandom of=/mnt/data/f$i bs=1M count=64"));
        assert!(!c.contains(" 16;"));
        assert!(c.ends_with("|| break; done"));
    }

    #[test]
    fn bootargs_online_hot_added_memory_movable() {
        assert!(BOOTARGS.contains("memhp_default_state=online_movable"));
        assert!(BOOTARGS.contains("console=ttyAMA0"));
    }
}
