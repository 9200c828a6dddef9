//! QEMU on this terminal: the machine of `make run` and `make debug` (`hotmem-qemu run`).
//!
//! The harness ([`crate::Qemu`]) pipes the console into the test; here a person sits at the
//! keyboard instead. [`Interactive`] renders a [`Machine`] (the same board the tests boot,
//! [`Machine::default`] unless options change it) with this wiring:
//! - `-serial mon:stdio`: the guest console and QEMU's human monitor share the terminal
//!   (`Ctrl-a c` switches between them, `Ctrl-a x` quits QEMU);
//! - `-qmp unix:<socket>,server=on,wait=off`: QMP for scripts, on `<workspace>/target/qmp.sock`
//!   by default ([`default_qmp_socket`]); a socket file left by an earlier run is removed first;
//! - the machine's extra arguments last, after the wiring, so that they can add to or override
//!   anything before them (`make run QEMU_EXTRA=...`);
//! - with [`Interactive::gdb`], `-s -S`: QEMU starts halted and waits for gdb on port 1234.
//!
//! [`Interactive::run`] starts QEMU with this process's stdin, stdout and stderr, waits for it
//! and returns its exit status. Nothing here reads the console or talks QMP.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};

use crate::error::{Error, Result};
use crate::instance::{default_image, qemu_binary, workspace_root};
use crate::machine::Machine;

/// Where QMP listens by default: `<workspace>/target/qmp.sock`.
pub fn default_qmp_socket() -> PathBuf {
    workspace_root().join("target").join("qmp.sock")
}

/// How to start a [`Machine`] on the terminal. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interactive {
    /// Kernel image; [`default_image`] when `None`.
    pub image: Option<PathBuf>,
    /// QEMU binary; [`qemu_binary`] when `None`.
    pub qemu: Option<String>,
    /// The QMP socket.
    pub qmp_socket: PathBuf,
    /// Start halted, waiting for gdb on port 1234 (`-s -S`).
    pub gdb: bool,
}

impl Default for Interactive {
    fn default() -> Self {
        Interactive {
            image: None,
            qemu: None,
            qmp_socket: default_qmp_socket(),
            gdb: false,
        }
    }
}

impl Interactive {
    /// The whole command line for `machine`, QEMU binary first.
    pub fn command_line(&self, machine: &Machine) -> Vec<String> {
        let image = self.image.clone().unwrap_or_else(default_image);
        let mut board = machine.clone();
        let extra = std::mem::take(&mut board.extra_args);
        let mut line = vec![self.qemu.clone().unwrap_or_else(qemu_binary)];
        line.extend(board.args(&image));
        line.extend(
            [
                "-serial",
                "mon:stdio",
                "-qmp",
                &format!("unix:{},server=on,wait=off", self.qmp_socket.display()),
            ]
            .map(String::from),
        );
        line.extend(extra);
        if self.gdb {
            line.extend(["-s", "-S"].map(String::from));
        }
        line
    }

    /// Starts QEMU on this terminal and waits for it to exit.
    pub fn run(&self, machine: &Machine) -> Result<ExitStatus> {
        machine.validate()?;
        let image = self.image.clone().unwrap_or_else(default_image);
        if !image.is_file() {
            return Err(Error::ImageMissing { path: image });
        }
        match std::fs::remove_file(&self.qmp_socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(
                    format!("removing {}", self.qmp_socket.display()),
                    e,
                ))
            }
            _ => {}
        }
        let line = self.command_line(machine);
        Command::new(&line[0])
            .args(&line[1..])
            .status()
            .map_err(|source| Error::Spawn {
                program: line[0].clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_run_machine() {
        let run = Interactive {
            image: Some("target/hotmem.img".into()),
            qemu: Some("qemu-system-aarch64".into()),
            qmp_socket: "target/qmp.sock".into(),
            gdb: false,
        };
        assert_eq!(
            run.command_line(&Machine::default()).join(" "),
            "qemu-system-aarch64 -M virt,gic-version=3 -cpu max -smp 2 -m 512M,maxmem=4608M \
             -object memory-backend-ram,id=mem0,size=4G \
             -device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=0 \
             -nic none -display none -kernel target/hotmem.img \
             -serial mon:stdio -qmp unix:target/qmp.sock,server=on,wait=off"
        );
        let debug = Interactive { gdb: true, ..run };
        let m = Machine::default()
            .bootargs("loglevel=debug")
            .extra_arg("-M")
            .extra_arg("virtualization=on");
        let line = debug.command_line(&m).join(" ");
        assert!(
            line.ends_with(
                "-kernel target/hotmem.img -append loglevel=debug -serial mon:stdio \
                 -qmp unix:target/qmp.sock,server=on,wait=off -M virtualization=on -s -S"
            ),
            "{line}"
        );
    }

    #[test]
    fn missing_image_says_make_kernel() {
        let run = Interactive {
            image: Some("/nonexistent/hotmem.img".into()),
            ..Interactive::default()
        };
        let err = run.run(&Machine::default()).unwrap_err();
        assert!(err.to_string().contains("make kernel"), "{err}");
        assert!(default_qmp_socket().ends_with("target/qmp.sock"));
    }
}
