//! Executes shell commands (parsing and line editing are in `hotmem::shell`).

use super::cpus::{CPUS, NR_CPUS};
use super::{console, mem};
use crate::println;
use core::sync::atomic::Ordering;
use hotmem::shell::{self, Command, Feed, LineEditor, PROMPT};
use hotmem_arch::pgtable::MemType;
use hotmem_arch::{exception, layout, mmu, psci};

pub fn run() -> ! {
    let mut ed = LineEditor::default();
    console::print(format_args!("{PROMPT}"));
    loop {
        match ed.feed(console::read_byte()) {
            Feed::None => {}
            Feed::Echo(s) => console::print(format_args!("{s}")),
            Feed::Line(line) => {
                console::print(format_args!("\n"));
                match shell::parse(&line) {
                    Ok(cmd) => execute(cmd),
                    Err(e) => println!("{e}"),
                }
                console::print(format_args!("{PROMPT}"));
            }
        }
    }
}

fn execute(cmd: Command) {
    match cmd {
        Command::Empty => {}
        Command::Help => {
            for (c, what) in shell::HELP {
                println!("{c:<16} {what}");
            }
        }
        Command::Cpus => {
            for (i, c) in CPUS
                .iter()
                .take(NR_CPUS.load(Ordering::Relaxed))
                .enumerate()
            {
                println!(
                    "cpu={i} mpidr=0x{:x} online={} ticks={}",
                    c.mpidr.load(Ordering::Relaxed),
                    c.online.load(Ordering::Relaxed) as u8,
                    c.ticks.load(Ordering::Relaxed)
                );
            }
        }
        Command::Fault => {
            // Inside the linear map's range but above any RAM or device: never mapped.
            let va = hotmem_arch::layout::phys_to_virt(0x7fff_0000_0000);
            println!("fault: reading unmapped address 0x{va:x}");
            // SAFETY: deliberately unsound: the read faults, and the exception handler
            // prints the dump and panics; execution never continues past it.
            let v = unsafe { core::ptr::read_volatile(va as *const u64) };
            println!("fault: read 0x{v:x} (unexpected)");
        }
        Command::Peek { pa } => {
            // Device registers can have read side effects (a UART's data register pops a
            // byte): only RAM is read.
            let device = matches!(
                mmu::translate_linear(pa),
                Some((_, a)) if a.mem == MemType::Device
            );
            match linear_va(pa) {
                _ if device => println!("peek: refused addr=0x{pa:x} (device memory)"),
                Some(va) => match exception::probe_read_u64(va) {
                    Some(v) => println!("peek: 0x{pa:x} = 0x{v:016x}"),
                    None => println!("peek: fault addr=0x{pa:x}"),
                },
                None => println!("peek: fault addr=0x{pa:x}"),
            }
        }
        Command::Poweroff => {
            println!("poweroff: bye");
            psci::system_off();
        }
        Command::Reboot => {
            println!("reboot: resetting");
            psci::system_reset();
        }
        Command::Mem => mem::cmd_mem(),
        Command::Sections => mem::cmd_sections(),
        Command::Check => mem::cmd_check(),
        Command::Vmem => super::vmem::cmd_vmem(),
        Command::Memtest { mib } => mem::cmd_memtest(mib),
        Command::Ps => super::task::cmd_ps(),
        Command::HogStart { mib } => super::hog::cmd_start(mib),
        Command::HogStatus => super::hog::cmd_status(),
        Command::HogStop => super::hog::cmd_stop(),
        Command::Pin { mib } => super::hog::cmd_pin(mib),
        Command::Unpin => super::hog::cmd_unpin(),
        Command::Spin { tasks, ms } => super::spin_test::cmd_spin(tasks as usize, ms),
    }
}

/// Linear-map address of `pa`, if the linear map can cover it.
fn linear_va(pa: u64) -> Option<u64> {
    (pa < 1 << layout::SUPPORTED_PA_BITS).then(|| layout::phys_to_virt(pa))
}
