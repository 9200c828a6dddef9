//! `hotmem-qemu`: command-line front end of the harness library.
//!
//! ```text
//! cargo run -p hotmem-qemu -- run   [MACHINE] [--debug] [--qmp SOCKET] [-- QEMU ARGS...]
//!                                                          QEMU on this terminal (make run, make debug)
//! cargo run -p hotmem-qemu -- boot  [MACHINE] [-c CMD]...  boot, show the console, run CMDs, power off
//! cargo run -p hotmem-qemu -- args  [MACHINE]              print the QEMU command line
//! cargo run -p hotmem-qemu -- probe [MACHINE]              start QEMU, query QMP, quit (does QEMU accept it?)
//! cargo run -p hotmem-qemu --release -- bench [MACHINE] [--runs N] [--linux-runs N]
//!                      [--only hotmem|linux] [--out FILE]  plug/unplug timings, hotmem beside
//!                                                          Linux: table, JSON
//! cargo run -p hotmem-qemu -- libvirt-run [--ram SIZE] [--vmem SIZE] [--bus0]
//!                                                          the kernel as a libvirt domain, virsh console
//! cargo run -p hotmem-qemu --release -- stress [--seed N] [--steps N] [--duration 15m]
//!                      [--topology default|two-node] [--inject] [--out DIR] [--plot FILE]
//!                                                          seeded random resize/reset/hog/pin steps
//! ```
//! MACHINE options default to `make run`'s machine; see `--help`. `run` starts it on the
//! terminal through [`hotmem_qemu::interactive`], so the Makefile holds no copy of the machine. The benchmark's arithmetic and
//! JSON live in [`hotmem_qemu::bench`], the stress runner in [`hotmem_qemu::stress`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hotmem_qemu::bench::{self, Report};
use hotmem_qemu::interactive::Interactive;
use hotmem_qemu::libvirt::{self, Placement};
use hotmem_qemu::stress::{self, Topology};
use hotmem_qemu::{
    format_size, parse_size, Error, Gic, LaunchOptions, Machine, Qemu, Result, VirtioMem,
};

const USAGE: &str = "\
usage: hotmem-qemu <run|boot|args|probe|bench|stress|libvirt-run> [options] [-- QEMU ARGS...]
  run     boot on this terminal: console and QEMU monitor on stdio (Ctrl-a c switches, Ctrl-a x
          quits), QMP on target/qmp.sock; exits with QEMU's status (make run, make debug)
  boot    boot, print the console live, run each -c command, then poweroff
  args    print the QEMU command line
  probe   start QEMU without waiting for the kernel, query QMP, quit
  bench   boot time, plug 0->4G / 0->1G (QMP, online, guest), unplug 4G->0 idle and with data,
          mem_map overhead, on hotmem and on Debian's arm64 Linux (fetched with apt into
          target/linux; $HOTMEM_LINUX_MIRROR replaces the mirror) on the same machine: fresh
          boots per scenario, print a table with both columns and the ratio, write --out as JSON
  libvirt-run  define and start qemu/libvirt/hotmem.xml (--ram, --vmem; as root) and attach
          with `virsh console` (Ctrl-] leaves); the domain is undefined on exit (make libvirt-run)
  stress  seeded random scenarios (resizes, overlapping resizes, system_reset, and hog/pin when
          the guest has them), checked against QMP after every step; progress, summary, plot
machine options (default: make run's machine):
  --cpu MODEL        -cpu (max, cortex-a53, cortex-a57, cortex-a72, neoverse-n1)
  --gic 2|3          GIC version
  --el2              enter at EL2 (virtualization=on)
  --smp N            CPU count
  --ram SIZE         boot RAM, e.g. 512M
  --numa SIZE,SIZE   NUMA nodes with these sizes (CPUs spread evenly)
  --vmem SIZE        add a virtio-mem device (the first --vmem replaces the default; 0 = none)
  --append ARGS      kernel command line
  --image PATH       kernel image (default: $HOTMEM_IMAGE or target/hotmem.img)
  --boot-timeout S   seconds to wait for the prompt (default 60)
  -c CMD             shell command to run after boot (repeatable)
  -- ARGS...         extra QEMU arguments, verbatim (run: after the console and QMP wiring)
libvirt-run options:
  --bus0             the device at a fixed slot on pcie.0 instead of libvirt's default placement
run options:
  --debug            start halted, waiting for gdb on port 1234 (-s -S)
  --qmp SOCKET       QMP socket (default: <workspace>/target/qmp.sock)
bench options:
  --runs N           hotmem runs per scenario, each on a fresh boot (default 5)
  --linux-runs N     Linux runs per scenario, each on a fresh boot (default 3)
  --only GUEST       hotmem or linux: measure that guest alone (default: both)
  --out FILE         JSON results (default: <workspace>/target/bench/bench.json)
stress options (the machine comes from --topology; --image and --boot-timeout apply):
  --seed N           PRNG seed (default: from the clock; printed either way)
  --steps N          stop after N steps (default: no limit)
  --duration D       start no step after D, e.g. 15m, 90s, 1h (default 15m)
  --topology T       default (512M, one 4G device) or two-node (2x512M, a 2G device per node)
  --inject           arm a seeded fault along some resize steps (refused or replaced device
                     replies, failing migrations), when the guest has `inject`
  --out DIR          failure directories <DIR>/<seed>-<step>/ (default: <workspace>/target/stress)
  --plot FILE        requested vs plugged SVG (default: target/bench/stress.svg, or
                     target/bench/stress-two-node.svg)";

/// Default `--runs`.
const BENCH_RUNS: usize = 5;
/// Default `--linux-runs`.
const BENCH_LINUX_RUNS: usize = 3;

struct Cli {
    verb: String,
    machine: Machine,
    image: Option<std::path::PathBuf>,
    commands: Vec<String>,
    boot_timeout: Duration,
    runs: usize,
    /// `bench --linux-runs`.
    linux_runs: usize,
    /// `bench --only`.
    guests: bench::Guests,
    out: Option<PathBuf>,
    stress: StressArgs,
    /// `run --debug`.
    debug: bool,
    /// `libvirt-run --bus0`.
    bus0: bool,
    /// `run --qmp`.
    qmp: Option<PathBuf>,
}

/// `stress` options.
struct StressArgs {
    seed: Option<u64>,
    steps: Option<usize>,
    duration: Duration,
    topology: Topology,
    plot: Option<PathBuf>,
    inject: bool,
}

/// Default `--duration` of `stress`.
const STRESS_DURATION: Duration = Duration::from_secs(15 * 60);

fn parse_args(args: &[String]) -> Result<Cli> {
    let bad = |m: String| Error::Machine(m);
    let mut it = args.iter();
    let verb = it
        .next()
        .cloned()
        .ok_or_else(|| bad("missing subcommand".into()))?;
    let mut cli = Cli {
        verb,
        machine: Machine::default(),
        image: None,
        commands: Vec::new(),
        boot_timeout: Duration::from_secs(60),
        runs: BENCH_RUNS,
        linux_runs: BENCH_LINUX_RUNS,
        guests: bench::Guests::Both,
        out: None,
        stress: StressArgs {
            seed: None,
            steps: None,
            duration: STRESS_DURATION,
            topology: Topology::Default,
            plot: None,
            inject: false,
        },
        debug: false,
        bus0: false,
        qmp: None,
    };
    let mut vmem_seen = false;
    while let Some(opt) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| bad(format!("{opt} needs a value")))
        };
        match opt.as_str() {
            "--cpu" => cli.machine.cpu = value()?,
            "--gic" => {
                cli.machine.gic = match value()?.as_str() {
                    "2" => Gic::V2,
                    "3" => Gic::V3,
                    v => return Err(bad(format!("--gic {v}: want 2 or 3"))),
                }
            }
            "--el2" => cli.machine.el2 = true,
            "--smp" => {
                let v = value()?;
                cli.machine.smp = v.parse().map_err(|_| bad(format!("--smp {v}")))?;
            }
            "--ram" => cli.machine.ram_bytes = parse_size(&value()?)?,
            "--numa" => {
                let sizes = value()?
                    .split(',')
                    .map(parse_size)
                    .collect::<Result<Vec<u64>>>()?;
                cli.machine = cli.machine.clone().numa_nodes(&sizes);
            }
            "--vmem" => {
                if !vmem_seen {
                    cli.machine.virtio_mem.clear();
                    vmem_seen = true;
                }
                let size = parse_size(&value()?)?;
                if size > 0 {
                    cli.machine.virtio_mem.push(VirtioMem::new(size));
                }
            }
            "--append" => cli.machine.bootargs = value()?,
            "--image" => cli.image = Some(value()?.into()),
            "--boot-timeout" => {
                let v = value()?;
                let secs: u64 = v.parse().map_err(|_| bad(format!("--boot-timeout {v}")))?;
                cli.boot_timeout = Duration::from_secs(secs);
            }
            "-c" => cli.commands.push(value()?),
            "--runs" => {
                let v = value()?;
                cli.runs = match v.parse() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(bad(format!("--runs {v}: want a positive count"))),
                };
            }
            "--linux-runs" => {
                let v = value()?;
                cli.linux_runs = match v.parse() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(bad(format!("--linux-runs {v}: want a positive count"))),
                };
            }
            "--only" => {
                cli.guests = match value()?.as_str() {
                    "hotmem" => bench::Guests::Hotmem,
                    "linux" => bench::Guests::Linux,
                    v => return Err(bad(format!("--only {v}: want hotmem or linux"))),
                }
            }
            "--out" => cli.out = Some(value()?.into()),
            "--seed" => {
                let v = value()?;
                cli.stress.seed = Some(v.parse().map_err(|_| bad(format!("--seed {v}")))?);
            }
            "--steps" => {
                let v = value()?;
                cli.stress.steps = Some(v.parse().map_err(|_| bad(format!("--steps {v}")))?);
            }
            "--duration" => cli.stress.duration = stress::parse_duration(&value()?)?,
            "--topology" => cli.stress.topology = Topology::parse(&value()?)?,
            "--plot" => cli.stress.plot = Some(value()?.into()),
            "--inject" => cli.stress.inject = true,
            "--debug" => cli.debug = true,
            "--bus0" => cli.bus0 = true,
            "--qmp" => cli.qmp = Some(value()?.into()),
            "--" => {
                cli.machine.extra_args.extend(it.by_ref().cloned());
                break;
            }
            other => return Err(bad(format!("unknown option {other}"))),
        }
    }
    // --smp after --numa: spread the CPUs again.
    if !cli.machine.numa.is_empty() {
        let sizes: Vec<u64> = cli.machine.numa.iter().map(|n| n.size_bytes).collect();
        cli.machine = cli.machine.clone().numa_nodes(&sizes);
    }
    Ok(cli)
}

fn run(cli: Cli) -> Result<ExitCode> {
    if cli.verb == "run" {
        return run_interactive(&cli);
    }
    let options = LaunchOptions {
        image: cli.image.clone(),
        ..LaunchOptions::default()
    };
    match cli.verb.as_str() {
        "args" => {
            let image = options.image.unwrap_or_else(hotmem_qemu::default_image);
            let mut line = vec![hotmem_qemu::instance::qemu_binary()];
            line.extend(cli.machine.args(&image));
            println!("{}", hotmem_qemu::instance::shell_join(&line));
            Ok(())
        }
        "probe" => {
            let mut vm = Qemu::launch_with(&cli.machine, &options)?;
            let t = Duration::from_secs(10);
            let version = vm.qmp().version().to_string();
            let summary = vm.qmp().memory_size_summary(t)?;
            let devices = vm.qmp().virtio_mem_devices(t)?;
            println!("QEMU {version} accepts: {}", vm.machine());
            println!(
                "base memory {}, plugged {}",
                format_size(summary.base_bytes),
                format_size(summary.plugged_bytes)
            );
            for d in devices {
                println!(
                    "virtio-mem {} at {:#x}: block {} plugged {} requested {} max {} node {}",
                    d.id.as_deref().unwrap_or("?"),
                    d.memaddr,
                    format_size(d.block_size_bytes),
                    format_size(d.plugged_bytes),
                    format_size(d.requested_bytes),
                    format_size(d.max_bytes),
                    d.node
                );
            }
            vm.qmp().quit(t)?;
            vm.wait_exit(t)?;
            Ok(())
        }
        "boot" => {
            let mut vm = Qemu::launch_with(&cli.machine, &options)?;
            eprintln!("# {}", vm.command_line());
            vm.console().set_echo(true);
            let result = (|| {
                let took = vm.wait_for_boot(cli.boot_timeout)?;
                eprintln!("\n# prompt after {took:.2?}");
                for c in &cli.commands {
                    vm.console().command(c, Duration::from_secs(30))?;
                }
                let status = vm.poweroff(Duration::from_secs(30))?;
                eprintln!("\n# QEMU exited: {status}");
                Ok(())
            })();
            if result.is_err() {
                vm.console().set_echo(false);
                eprintln!("\n{}", vm.report());
            }
            result
        }
        "bench" => run_bench(&cli, &options),
        "libvirt-run" => {
            let image = options.image.unwrap_or_else(hotmem_qemu::default_image);
            let placement = if cli.bus0 {
                Placement::Bus0Slot(2)
            } else {
                Placement::Default
            };
            let vmem = cli.machine.virtio_mem_bytes();
            let status = libvirt::run_on_terminal(&image, cli.machine.ram_bytes, vmem, placement)?;
            eprintln!("# virsh console exited: {status}");
            Ok(())
        }
        "stress" => run_stress(&cli, options),
        other => Err(Error::Machine(format!("unknown subcommand {other}"))),
    }
    .map(|()| ExitCode::SUCCESS)
}

/// `run`: the machine on this terminal (see [`hotmem_qemu::interactive`]); prints the QEMU
/// command line first and exits with QEMU's status.
fn run_interactive(cli: &Cli) -> Result<ExitCode> {
    let mut terminal = Interactive {
        image: cli.image.clone(),
        gdb: cli.debug,
        ..Interactive::default()
    };
    if let Some(socket) = &cli.qmp {
        terminal.qmp_socket = socket.clone();
    }
    let line = terminal.command_line(&cli.machine);
    eprintln!("# {}", hotmem_qemu::instance::shell_join(&line));
    let status = terminal.run(&cli.machine)?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// `bench`: [`bench::run`] (hotmem's scenarios `cli.runs` times, Linux's `cli.linux_runs`
/// times, each on a fresh boot); prints the table and writes the JSON report.
fn run_bench(cli: &Cli, options: &LaunchOptions) -> Result<()> {
    let measured = bench::run(&bench::RunConfig {
        machine: &cli.machine,
        options,
        runs: cli.runs,
        linux_runs: cli.linux_runs,
        boot_timeout: cli.boot_timeout,
        guests: cli.guests,
    })?;
    let metrics = measured.metrics;
    let root = hotmem_qemu::workspace_root();
    let report = Report {
        machine: cli.machine.to_string(),
        command_line: measured.command_line,
        git_commit: bench::git_commit(&root),
        git_dirty: bench::git_dirty(&root),
        timestamp_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        metrics,
    };
    let out = cli.out.clone().unwrap_or_else(bench::default_out);
    report.write_json(&out)?;
    println!("machine: {}", report.machine);
    print!("{}", report.table());
    println!("results: {}", out.display());
    Ok(())
}

/// `stress`: one seeded run on `--topology`; fails (non-zero exit) on the first failing step.
fn run_stress(cli: &Cli, options: LaunchOptions) -> Result<()> {
    let a = &cli.stress;
    let cfg = stress::StressConfig {
        topology: a.topology,
        options,
        seed: a.seed.unwrap_or_else(stress::seed_from_clock),
        steps: a.steps,
        duration: Some(a.duration),
        out_dir: cli
            .out
            .clone()
            .unwrap_or_else(|| hotmem_qemu::workspace_root().join("target").join("stress")),
        plot: a.plot.clone().unwrap_or_else(|| a.topology.default_plot()),
        boot_timeout: cli.boot_timeout,
        inject: a.inject,
    };
    stress::run(&cfg).map(drop)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return if args.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    match parse_args(&args).and_then(run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hotmem-qemu: {e}");
            ExitCode::FAILURE
        }
    }
}
