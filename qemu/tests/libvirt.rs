//! The kernel as a libvirt domain (`qemu/libvirt/hotmem.xml`), driven with `virsh` the way
//! tp-libvirt's `change_virtio_mem_request_size` drives a guest:
//! - `virsh update-memory-device DOM --requested-size` up (1 GiB) and down (0); each time the
//!   `memory-device-size-change` event arrives with the new size, `virsh dumpxml`'s
//!   `<requested>` and `<current>` show it, and the guest's `vmem` line of that device (matched
//!   by `addr` == the XML's `<address base>`) is converged at the same plugged size;
//! - a second device added with `virsh attach-device --live`, resized to 1 GiB and back to 0,
//!   then removed with `virsh detach-device --live`: the `device-removed` event, `dumpxml`
//!   without it, the guest's `vmem` without it;
//! - `check: ok` after each part.
//!
//! Two placements of the first device: libvirt's default (behind a `pcie-root-port` on `pci.1`,
//! with a spare root port where `attach-device` puts the second one), the domain users get; and
//! `<address type='pci' bus='0' slot='2'/>` on `pcie.0`, the fixed placement (resizes only: a
//! device cannot be hot-added to `pcie.0`).
//!
//! The harness starts `virtlogd` and `libvirtd` when they are not running and stops the ones it
//! started. When libvirt cannot run here (not root, packages missing: `make deps`), the tests
//! fail and say why. One domain at a time; each test defines, boots and undefines its own.

mod common;

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::{poll, BOOT, CMD};
use hotmem_qemu::guest::{self, Vmem};
use hotmem_qemu::libvirt::{
    self, virtio_mem_xml, ConsoleKind, Daemons, Domain, DomainSpec, EventWatch, MemoryDevice,
    Placement,
};
use hotmem_qemu::{default_image, Console, GIB, KIB};

/// From `update-memory-device` to the size-change event with the requested size (QEMU sends
/// at most one per second per device).
const RESIZE: Duration = Duration::from_secs(30);
/// From the event to the guest's `vmem` showing the device converged.
const SETTLE: Duration = Duration::from_secs(30);
/// From the prompt (or `attach-device`) to the guest listing the device.
const SEE_DEVICE: Duration = Duration::from_secs(10);
/// From `detach-device` to the `device-removed` event.
const REMOVED: Duration = Duration::from_secs(30);
/// Between two polls of the shell.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// The alias libvirt gives the domain's own device.
const FIRST: &str = "virtiomem0";

static ONE_DOMAIN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A started domain with its event watcher; prints the domain's report if the test panics.
struct Rig {
    // Dropped in this order: the watcher, the domain (destroyed, undefined), the daemons this
    // test started, then the lock.
    watch: EventWatch,
    domain: Domain,
    _daemons: Daemons,
    _exclusive: std::sync::MutexGuard<'static, ()>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("\n{}", self.domain.report());
        }
    }
}

impl Rig {
    /// Starts the daemons if needed, defines and boots the domain with a 4 GiB device at
    /// `placement` (and 1 GiB of room for an attached one), and waits for the prompt.
    fn start(placement: Placement) -> Rig {
        let exclusive = ONE_DOMAIN_AT_A_TIME
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let daemons = Daemons::ensure(libvirt::DAEMON_READY)
            .unwrap_or_else(|e| panic!("libvirt cannot run on this machine: {e}"));
        let name = Domain::unique_name();
        let spec = DomainSpec {
            console: ConsoleKind::Socket(Domain::socket_path(&name)),
            name,
            image: default_image(),
            ram_bytes: GIB,
            vmem_bytes: 4 * GIB,
            attach_bytes: GIB,
            placement,
        };
        let mut domain = Domain::define(spec, &default_image())
            .unwrap_or_else(|e| panic!("defining the domain: {e}"));
        let started = Instant::now();
        let booted = domain.start().and_then(|()| {
            domain.console()?.wait_for_prompt(BOOT)?;
            EventWatch::start(&domain, libvirt::VIRSH)
        });
        match booted {
            Ok(watch) => {
                eprintln!("[{}] prompt after {:.2?}", domain.name(), started.elapsed());
                Rig {
                    watch,
                    domain,
                    _daemons: daemons,
                    _exclusive: exclusive,
                }
            }
            Err(e) => panic!("starting {}: {e}\n{}", domain.name(), domain.report()),
        }
    }

    fn console(&mut self) -> &mut Console {
        self.domain
            .console()
            .unwrap_or_else(|e| panic!("console: {e}"))
    }

    fn devices(&self) -> Vec<MemoryDevice> {
        self.domain
            .memory_devices()
            .unwrap_or_else(|e| panic!("virsh dumpxml: {e}"))
    }

    fn device(&self, alias: &str) -> MemoryDevice {
        let devs = self.devices();
        devs.iter()
            .find(|d| d.alias == alias)
            .cloned()
            .unwrap_or_else(|| panic!("dumpxml has no {alias}: {devs:?}"))
    }

    /// Waits until the guest's `vmem` satisfies `done` (`None` while it has no device).
    fn wait_vmem(&mut self, what: &str, timeout: Duration, done: impl Fn(&Vmem) -> bool) -> Vmem {
        let (v, _) = poll(what, timeout, POLL_EVERY, || {
            match guest::vmem_if_ready(self.console(), CMD)
                .unwrap_or_else(|e| panic!("shell command `vmem`: {e}"))
            {
                Some(v) if done(&v) => Ok(v),
                Some(v) => Err(v.to_string()),
                None => Err(guest::NO_DEVICE.to_string()),
            }
        });
        v
    }

    /// Waits until the guest lists the device of `alias` (by its base address).
    fn wait_guest_sees(&mut self, alias: &str) {
        let dev = self.device(alias);
        let base = dev
            .base
            .unwrap_or_else(|| panic!("dumpxml: {alias} has no <address base>: {dev:?}"));
        self.wait_vmem(
            &format!("the guest to list {alias} at {base:#x} in `vmem`"),
            SEE_DEVICE,
            |v| v.by_addr(base).is_some(),
        );
    }

    /// `update-memory-device` of `alias` to `bytes`; then the event, `dumpxml` and `vmem` must
    /// all show `bytes`.
    fn resize(&mut self, alias: &str, bytes: u64) {
        let kib = bytes / KIB;
        let since = Instant::now();
        self.domain
            .update_memory_device(Some(alias), bytes)
            .unwrap_or_else(|e| panic!("update-memory-device {alias} {kib} KiB: {e}"));
        let event = self
            .watch
            .wait_size_change(alias, kib, since, RESIZE)
            .unwrap_or_else(|e| panic!("size-change event of {alias} to {kib} KiB: {e}"));
        eprintln!(
            "{alias} -> {kib} KiB: memory-device-size-change after {:.0?}",
            event.at - since
        );
        let dev = self.device(alias);
        assert_eq!(dev.requested_kib, kib, "dumpxml <requested> of {dev:?}");
        assert_eq!(dev.current_kib, Some(kib), "dumpxml <current> of {dev:?}");
        let base = dev
            .base
            .unwrap_or_else(|| panic!("no <address base>: {dev:?}"));
        self.wait_vmem(
            &format!("`vmem` to show {alias} converged at {kib} KiB"),
            SETTLE,
            |v| {
                v.by_addr(base).is_some_and(|l| {
                    l.converged() && l.plugged_kib == kib && l.requested_kib == kib
                })
            },
        );
    }

    fn check_ok(&mut self, when: &str) {
        guest::check(self.console(), CMD).unwrap_or_else(|e| panic!("`check` {when}: {e}"));
    }

    /// Up to 1 GiB and down to 0 on the domain's own device.
    fn resize_first(&mut self) {
        self.wait_guest_sees(FIRST);
        self.resize(FIRST, GIB);
        self.check_ok("at 1 GiB");
        self.resize(FIRST, 0);
        self.check_ok("at 0");
    }
}

/// The fixed placement on `pcie.0`: 0 -> 1 GiB -> 0 with the event, dumpxml and `vmem`
/// agreeing. About 5 s (the daemons' start included; the first start on a fresh machine probes
/// QEMU for about 20 s more).
#[test]
fn libvirt_bus0_resize_up_and_down() {
    let mut rig = Rig::start(Placement::Bus0Slot(2));
    assert_eq!(
        rig.device(FIRST).pci_bus,
        Some(0),
        "the device sits on pcie.0"
    );
    rig.resize_first();
}

/// libvirt's default placement (the device behind a root port): 0 -> 1 GiB -> 0, then a second
/// device attached live, resized 0 -> 1 GiB -> 0 and detached. About 8 s.
#[test]
fn libvirt_default_placement_resize_attach_detach() {
    let mut rig = Rig::start(Placement::Default);
    let bus = rig.device(FIRST).pci_bus;
    assert!(
        bus.is_some_and(|b| b != 0),
        "libvirt's default puts the device behind a root port, not on pcie.0: bus {bus:?}"
    );
    rig.resize_first();

    let xml = virtio_mem_xml(GIB, 0);
    rig.domain
        .attach(&xml)
        .unwrap_or_else(|e| panic!("virsh attach-device: {e}"));
    let devs = rig.devices();
    let second = match devs.as_slice() {
        [a, b] if a.alias == FIRST => b.alias.clone(),
        _ => panic!("dumpxml after attach-device: want {FIRST} and one more: {devs:?}"),
    };
    rig.wait_guest_sees(&second);
    rig.resize(&second, GIB);
    rig.resize(&second, 0);
    // The live element (with the addresses libvirt gave it), as `virsh dumpxml` shows it: the
    // attach XML alone does not name the device once it is running.
    let live = rig
        .domain
        .memory_device_xml(&second)
        .unwrap_or_else(|e| panic!("{e}"));
    let since = Instant::now();
    rig.domain
        .detach(&live)
        .unwrap_or_else(|e| panic!("virsh detach-device: {e}"));
    rig.watch
        .wait_until(REMOVED, |e| {
            e.at >= since && e.kind == "device-removed" && e.detail == second
        })
        .unwrap_or_else(|e| panic!("device-removed of {second}: {e}"));
    let left = rig.devices();
    assert!(
        left.len() == 1 && left[0].alias == FIRST,
        "dumpxml after detach-device: {left:?}"
    );
    let first_base = left[0].base;
    rig.wait_vmem("`vmem` without the detached device", SEE_DEVICE, |v| {
        v.devices.len() == 1 && first_base.is_some_and(|b| v.by_addr(b).is_some())
    });
    rig.check_ok("after detach-device");
}
