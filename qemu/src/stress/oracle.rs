//! The agreement oracle of the stress runner: after every step, QMP's view of each device and
//! every account the guest keeps of it must agree, exactly.
//!
//! QMP `query-memory-devices` is the outside truth. After the runner saw each device reach its
//! requested size, or stall for a reason [`super::stall`] excuses, it reads QMP, then `vmem`,
//! `sections`, `mem` and (when the guest has it) `vmem state` over a few ranges, then QMP
//! again; the round only counts when QMP did not move in between. Then, per device (each
//! `vmem` line matched to QMP's device by address):
//! 1. [`disagreement`]: `vmem` shows QMP's region, block, node, plugged and requested sizes,
//!    and nothing pending with `state=ok` unless its stall was excused. These numbers are the
//!    device configuration the guest read, so they only say the guest saw QMP.
//! 2. [`accounting`]: the guest's own books, none copied from the device:
//!    - `guest_plugged_kib` (the driver's units held plugged, when `vmem` prints it) equals
//!      QMP `size`;
//!    - the sections inside the device region hold exactly QMP `size` present, and all of
//!      it online (`sections` counts 2 MiB subsections; the plug unit is a whole number of
//!      them and a device region starts and ends on a 128 MiB section boundary, so the
//!      comparison is exact; memory offline while an UNPLUG's outcome is unknown is present
//!      but not online, which a settled device does not have);
//!    - under `memhp_online=movable`, `mem`'s Movable `present_kib` of each device's node
//!      equals the QMP sizes of the devices on that node (only online pages are in a zone,
//!      and boot RAM is all Normal).
//! 3. [`spot_check`]: `vmem state` over a random block-aligned range inside the usable region
//!    (at most 65535 blocks, [`SpotDraw`] from the run's seed): the device's STATE and the
//!    guest's bitmap agree, and both say `unplugged` when QMP size is 0 and `plugged` when it
//!    is the whole usable region.
//!
//! Each returns a message naming what disagreed (device, key, both numbers, the line), or
//! `None`. All are pure functions of what was read, tested here on fabricated output.

use crate::error::{Error, Result};
use crate::guest::state::MAX_BLOCKS;
use crate::guest::{Mem, Sections, StateLine, Vmem, VmemLine, VmemState};
use crate::machine::KIB;
use crate::qmp::VirtioMemInfo;
use crate::record::Record;

use super::scenario::Rng;

/// Whether a device that did not reach its requested size is explained by the fault armed
/// right now ([`super::faults`]): a refused or replaced reply leaves it busy or stalled with
/// `device_busy` or `device_error`, a failed migration stalled with `pinned` or `unmovable`.
/// A `broken` device is never excused. Only while the fault is armed; once it is disarmed,
/// only [`super::stall::judge`] counts.
pub fn excused_while_injecting(state: &str, reason: &str) -> bool {
    matches!(state, "busy" | "stalled")
        && matches!(
            reason,
            "device_busy" | "device_error" | "pinned" | "unmovable"
        )
}

/// The `vmem` line of QMP device `d` (matched by address); a device `vmem` does not show is an
/// error, not a disagreement to wait out.
pub fn vmem_line<'r>(vmem: &'r Vmem, d: &VirtioMemInfo) -> Result<&'r VmemLine> {
    vmem.by_addr(d.memaddr).ok_or_else(|| {
        Error::Protocol(format!(
            "`vmem` has no line with addr={:#x}:\n{vmem}",
            d.memaddr
        ))
    })
}

/// Why `vmem` does not agree with QMP (yet), or `None` when it does (see the module docs).
/// `before` and `after` are QMP's devices in `ids` order, read just before and just after
/// `vmem`; `stalled` lists the devices whose stall was excused.
pub fn disagreement(
    ids: &[String],
    before: &[VirtioMemInfo],
    vmem: &Vmem,
    after: &[VirtioMemInfo],
    stalled: &[usize],
) -> Result<Option<String>> {
    if before != after {
        return Ok(Some("QMP moved while `vmem` ran".into()));
    }
    if vmem.devices.len() != after.len() {
        return Ok(Some(format!(
            "`vmem` shows {} devices, QMP {}",
            vmem.devices.len(),
            after.len()
        )));
    }
    for (i, d) in after.iter().enumerate() {
        let line = vmem_line(vmem, d)?;
        let node = u64::try_from(d.node).unwrap_or(u64::MAX);
        let want = [
            ("region_kib", line.region_kib, d.max_bytes / KIB),
            ("block_kib", line.block_kib, d.block_size_bytes / KIB),
            ("node", line.node, node),
            ("plugged_kib", line.plugged_kib, d.plugged_bytes / KIB),
            ("requested_kib", line.requested_kib, d.requested_bytes / KIB),
        ];
        for (key, seen, value) in want {
            if seen != value {
                return Ok(Some(format!(
                    "{}: vmem {key}={seen} but QMP says {value}: `{line}`",
                    ids[i]
                )));
            }
        }
        if !stalled.contains(&i) && !line.converged() {
            return Ok(Some(format!("{}: converged in QMP, but `{line}`", ids[i])));
        }
    }
    Ok(None)
}

/// `guest_plugged_kib` of a `vmem` line: the driver's own count of the units it holds plugged
/// (`None` on kernels that do not print it). Read from the record the guest printed, so the
/// oracle needs nothing of [`VmemLine`] beyond its text.
pub fn guest_plugged_kib(line: &VmemLine) -> Result<Option<u64>> {
    let record = Record::parse(&line.to_string())?;
    match record.get("guest_plugged_kib") {
        Some(_) => record.u64("guest_plugged_kib").map(Some),
        None => Ok(None),
    }
}

/// Why the guest's own accounts of the devices do not agree with QMP's `after` (in `ids`
/// order), or `None` when they do (point 2 of the module docs). `movable`: hot-plugged memory
/// goes online into Movable, so `mem`'s Movable present is checked too.
pub fn accounting(
    ids: &[String],
    after: &[VirtioMemInfo],
    vmem: &Vmem,
    sections: &Sections,
    mem: &Mem,
    movable: bool,
) -> Result<Option<String>> {
    for (i, d) in after.iter().enumerate() {
        let line = vmem_line(vmem, d)?;
        let size_kib = d.plugged_bytes / KIB;
        if let Some(g) = guest_plugged_kib(line)? {
            if g != size_kib {
                return Ok(Some(format!(
                    "{}: vmem guest_plugged_kib={g} but QMP size is {size_kib} KiB: `{line}`",
                    ids[i]
                )));
            }
        }
        let held = sections.in_range(d.memaddr, d.memaddr + d.max_bytes)?;
        let (present, online) = (held.present_bytes / KIB, held.online_bytes / KIB);
        if present != size_kib {
            return Ok(Some(format!(
                "{}: the sections of [{:#x}, {:#x}) hold {present} KiB present but QMP size is {size_kib} KiB",
                ids[i],
                d.memaddr,
                d.memaddr + d.max_bytes
            )));
        }
        if online != present {
            return Ok(Some(format!(
                "{}: the sections of [{:#x}, {:#x}) hold {present} KiB present but only {online} KiB online",
                ids[i],
                d.memaddr,
                d.memaddr + d.max_bytes
            )));
        }
    }
    if movable {
        let mut nodes: Vec<i64> = after.iter().map(|d| d.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        for node in nodes {
            let on_node: Vec<usize> = (0..after.len())
                .filter(|&i| after[i].node == node)
                .collect();
            let want: u64 = on_node.iter().map(|&i| after[i].plugged_bytes / KIB).sum();
            let n = u64::try_from(node).unwrap_or(u64::MAX);
            let seen = mem.zone(n, "Movable").map_or(0, |z| z.present_kib);
            if seen != want {
                let names: Vec<&str> = on_node.iter().map(|&i| ids[i].as_str()).collect();
                return Ok(Some(format!(
                    "node {node}: mem's Movable present_kib={seen} but QMP size of {} is {want} KiB in all",
                    names.join(" + ")
                )));
            }
        }
    }
    Ok(None)
}

/// The random part of one spot check, drawn from the run's seed stream whatever the guest
/// prints, so a seed replays the same draws; [`SpotDraw::range`] places it in the usable
/// region `vmem` shows at check time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpotDraw {
    size: u64,
    start: u64,
}

impl SpotDraw {
    /// Two numbers from `rng`.
    pub fn draw(rng: &mut Rng) -> SpotDraw {
        SpotDraw {
            size: rng.next_u64(),
            start: rng.next_u64(),
        }
    }

    /// `(addr, size_kib)` of a block-aligned range inside the usable region of `line`, at most
    /// [`MAX_BLOCKS`] blocks: one time in two at most 8 blocks (a few units around a boundary
    /// of the bitmap), else up to the whole usable region. `None` when nothing is usable.
    pub fn range(&self, line: &VmemLine) -> Option<(u64, u64)> {
        let block_kib = line.block_kib.max(1);
        let blocks = line.usable_kib / block_kib;
        if blocks == 0 {
            return None;
        }
        let most = blocks.min(MAX_BLOCKS);
        let most = if self.size & 1 == 0 {
            most.min(8)
        } else {
            most
        };
        let count = 1 + (self.size >> 1) % most;
        let first = self.start % (blocks - count + 1);
        Some((line.addr + first * block_kib * KIB, count * block_kib))
    }
}

/// Why the answer of `vmem state` over `(addr, size_kib)` of device `d` disagrees (point 3 of
/// the module docs), or `None`. `usable_kib` is the usable region `vmem` showed.
pub fn spot_check(
    id: &str,
    d: &VirtioMemInfo,
    usable_kib: u64,
    (addr, size_kib): (u64, u64),
    answer: &VmemState,
) -> Option<String> {
    let s: &StateLine = match answer {
        VmemState::Refused(why) => {
            return Some(format!(
                "{id}: `vmem state` of {addr:#x}+{size_kib} KiB refused: {why}"
            ))
        }
        VmemState::Seen(s) => s,
    };
    let range = format!("{addr:#x}+{size_kib} KiB");
    if (s.addr, s.size_kib) != (addr, size_kib) {
        return Some(format!(
            "{id}: asked `vmem state` of {range}, it answered `{s}`"
        ));
    }
    if s.device != s.guest {
        return Some(format!(
            "{id}: over {range} the device's STATE says {} but the guest's bitmap {}: `{s}`",
            s.device, s.guest
        ));
    }
    let size_kib_qmp = d.plugged_bytes / KIB;
    let want = match size_kib_qmp {
        0 => Some("unplugged"),
        k if k == usable_kib => Some("plugged"),
        _ => None,
    };
    match want {
        Some(w) if s.device != w => Some(format!(
            "{id}: QMP size is {size_kib_qmp} KiB of {usable_kib} KiB usable, yet over {range} STATE says {}: `{s}`",
            s.device
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_excuses() {
        assert!(excused_while_injecting("busy", "device_busy"));
        assert!(excused_while_injecting("stalled", "device_error"));
        assert!(excused_while_injecting("stalled", "pinned"));
        assert!(!excused_while_injecting("ok", "device_busy"));
        assert!(!excused_while_injecting("broken", "device_error"));
        assert!(!excused_while_injecting("stalled", "floor"));
    }

    fn qmp_dev(plugged_mib: u64, requested_mib: u64) -> VirtioMemInfo {
        VirtioMemInfo {
            id: Some("vm0".into()),
            memaddr: 0x1_4000_0000,
            block_size_bytes: 2 << 20,
            plugged_bytes: plugged_mib << 20,
            requested_bytes: requested_mib << 20,
            max_bytes: 4 << 30,
            node: 0,
            memdev: "/objects/mem0".into(),
        }
    }

    fn vmem(plugged_mib: u64, requested_mib: u64, tail: &str) -> Vmem {
        let line = format!(
            "id=vmem0 addr=0x140000000 region_kib=4194304 block_kib=2048 usable_kib=4194304 \
             plugged_kib={} requested_kib={} {tail}",
            plugged_mib * 1024,
            requested_mib * 1024
        );
        Vmem::parse(&[line]).unwrap().unwrap()
    }

    #[test]
    fn agreement() {
        let ids = ["vm0".to_string()];
        let ok = "pending_kib=0 node=0 state=ok reason=none";
        let stalled = "pending_kib=2048 node=0 state=stalled reason=pinned";
        let q = [qmp_dev(1024, 1024)];
        let agree = |before: &[VirtioMemInfo], v: &Vmem, after: &[VirtioMemInfo], s: &[usize]| {
            disagreement(&ids, before, v, after, s).unwrap()
        };
        assert_eq!(agree(&q, &vmem(1024, 1024, ok), &q, &[]), None);
        let moved = agree(&[qmp_dev(1022, 1024)], &vmem(1024, 1024, ok), &q, &[]).unwrap();
        assert!(moved.contains("QMP moved"), "{moved}");
        let size = agree(&q, &vmem(1022, 1024, ok), &q, &[]).unwrap();
        assert!(
            size.starts_with("vm0: vmem plugged_kib=1046528 but QMP says 1048576"),
            "{size}"
        );
        let node = agree(
            &q,
            &vmem(1024, 1024, &ok.replace("node=0", "node=1")),
            &q,
            &[],
        );
        assert!(node.unwrap().contains("vmem node=1 but QMP says 0"));
        // A stall with QMP and vmem agreeing on the sizes: fine only when it was excused.
        let q = [qmp_dev(1024, 512)];
        assert!(agree(&q, &vmem(1024, 512, stalled), &q, &[])
            .unwrap()
            .contains("converged in QMP, but"));
        assert_eq!(agree(&q, &vmem(1024, 512, stalled), &q, &[0]), None);
        assert!(agree(&q, &Vmem::default(), &q, &[])
            .unwrap()
            .contains("shows 0 devices"));
        let mut elsewhere = q.clone();
        elsewhere[0].memaddr = 0x2_0000_0000;
        assert!(
            disagreement(&ids, &elsewhere, &vmem(1024, 512, stalled), &elsewhere, &[]).is_err()
        );
    }

    /// `sections` for the device region at 0x140000000 with `present`/`online` subsections
    /// spread over its first sections (and boot RAM below it).
    fn sections(present: u64, online: u64) -> Sections {
        let mut lines = vec![
            "section=0 start=0x0 end=0x8000000 node=0 zone=Normal state=online-boot \
             subsections=64/64 online=64/64 isolated=0/64"
                .to_string(),
        ];
        let (mut p, mut o) = (present, online);
        let mut nr = 40u64;
        while p > 0 {
            let (sp, so) = (p.min(64), o.min(64));
            lines.push(format!(
                "section={nr} start={:#x} end={:#x} node=0 zone=Movable state=online-hotplug \
                 subsections={sp}/64 online={so}/64 isolated=0/64",
                nr << 27,
                (nr + 1) << 27
            ));
            (p, o, nr) = (p - sp, o - so, nr + 1);
        }
        Sections::parse(&lines).unwrap()
    }

    fn mem(movable_mib: u64) -> Mem {
        Mem::parse(&[
            "node=0 zone=Normal present_kib=524288 managed_kib=498000 free_kib=400000".to_string(),
            format!(
                "node=0 zone=Movable present_kib={0} managed_kib={0} free_kib={0}",
                movable_mib * 1024
            ),
            "node=all zone=all present_kib=1 managed_kib=1 free_kib=1 reserve_kib=8192 \
             floor_kib=65536"
                .to_string(),
        ])
        .unwrap()
    }

    #[test]
    fn accounts() {
        let ids = ["vm0".to_string()];
        let ok = "pending_kib=0 node=0 state=ok reason=none";
        let q = [qmp_dev(1024, 1024)];
        let check = |v: &Vmem, s: &Sections, m: &Mem, movable: bool| {
            accounting(&ids, &q, v, s, m, movable).unwrap()
        };
        // 1 GiB plugged: 512 subsections in 8 sections, all online; Movable 1 GiB.
        let (v, s, m) = (vmem(1024, 1024, ok), sections(512, 512), mem(1024));
        assert_eq!(check(&v, &s, &m, true), None);
        // (b) the driver's own count, when printed.
        let with = |g: u64| {
            vmem(
                1024,
                1024,
                &format!("{ok} guest_plugged_kib={g} moved_kib=0 left_kib=0"),
            )
        };
        assert_eq!(check(&with(1 << 20), &s, &m, true), None);
        let p = check(&with(1_046_528), &s, &m, true).unwrap();
        assert!(
            p.contains("guest_plugged_kib=1046528 but QMP size is 1048576"),
            "{p}"
        );
        // (c) sections present, and all of it online.
        let p = check(&v, &sections(511, 511), &m, true).unwrap();
        assert!(
            p.contains("hold 1046528 KiB present but QMP size is 1048576"),
            "{p}"
        );
        let p = check(&v, &sections(512, 510), &m, true).unwrap();
        assert!(p.contains("only 1044480 KiB online"), "{p}");
        // (d) Movable present of the node, only under memhp_online=movable.
        let p = check(&v, &s, &mem(1022), true).unwrap();
        assert!(
            p.contains("node 0: mem's Movable present_kib=1046528 but QMP size of vm0"),
            "{p}"
        );
        assert_eq!(check(&v, &s, &mem(1022), false), None);
        // A device region that is not section-aligned cannot be checked: an error.
        let mut odd = q.clone();
        odd[0].memaddr += 2 << 20;
        let odd_v = Vmem::parse(&[v.to_string().replace("0x140000000", "0x140200000")])
            .unwrap()
            .unwrap();
        assert!(accounting(&ids, &odd, &odd_v, &s, &m, true).is_err());
    }

    #[test]
    fn two_devices_on_one_node_share_its_movable_zone() {
        let ids = ["vm0".to_string(), "vm1".to_string()];
        let mut second = qmp_dev(512, 512);
        second.memaddr = 0x2_4000_0000;
        second.id = Some("vm1".into());
        let q = [qmp_dev(1024, 1024), second];
        let lines = [
            "id=vmem0 addr=0x140000000 region_kib=4194304 block_kib=2048 usable_kib=4194304 \
             plugged_kib=1048576 requested_kib=1048576 pending_kib=0 node=0 state=ok reason=none",
            "id=vmem1 addr=0x240000000 region_kib=4194304 block_kib=2048 usable_kib=4194304 \
             plugged_kib=524288 requested_kib=524288 pending_kib=0 node=0 state=ok reason=none",
        ];
        let v = Vmem::parse(&lines).unwrap().unwrap();
        let mut s = sections(512, 512);
        s.lines.extend(
            (72..76)
                .map(|nr: u64| {
                    format!(
                        "section={nr} start={:#x} end={:#x} node=0 zone=Movable \
                         state=online-hotplug subsections=64/64 online=64/64 isolated=0/64",
                        nr << 27,
                        (nr + 1) << 27
                    )
                })
                .map(|l| Sections::parse(&[l]).unwrap().lines.remove(0)),
        );
        assert_eq!(
            accounting(&ids, &q, &v, &s, &mem(1536), true).unwrap(),
            None
        );
        let p = accounting(&ids, &q, &v, &s, &mem(1024), true)
            .unwrap()
            .unwrap();
        assert!(p.contains("QMP size of vm0 + vm1 is 1572864 KiB"), "{p}");
    }

    #[test]
    fn spot_draws_stay_inside_the_usable_region() {
        let v = vmem(1024, 1024, "pending_kib=0 node=0 state=ok reason=none");
        let line = &v.devices[0];
        let mut rng = Rng::new(7);
        let mut small = 0;
        for _ in 0..2000 {
            let (addr, kib) = SpotDraw::draw(&mut rng).range(line).unwrap();
            assert_eq!((addr - line.addr) % (2 << 20), 0);
            assert_eq!(kib % 2048, 0);
            assert!(kib >= 2048 && kib / 2048 <= MAX_BLOCKS);
            assert!(addr + kib * 1024 <= line.addr + line.usable_kib * 1024);
            small += usize::from(kib <= 8 * 2048);
        }
        assert!((800..1400).contains(&small), "{small}");
        // The same seed, the same ranges.
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        assert_eq!(SpotDraw::draw(&mut a), SpotDraw::draw(&mut b));
        let none = vmem(0, 0, "pending_kib=0 node=0 state=ok reason=none").to_string();
        let none = none.replace("usable_kib=4194304", "usable_kib=0");
        let none = Vmem::parse(&[none]).unwrap().unwrap();
        assert_eq!(SpotDraw::draw(&mut a).range(&none.devices[0]), None);
    }

    #[test]
    fn spot_checks() {
        let answer = |device: &str, guest: &str| {
            VmemState::parse(&format!(
                "vmem state: id=vmem0 addr=0x140200000 size_kib=4096 device={device} guest={guest}"
            ))
            .unwrap()
        };
        let range = (0x1_4020_0000, 4096);
        let d = qmp_dev(1024, 1024);
        let usable = 4 << 20;
        assert_eq!(
            spot_check("vm0", &d, usable, range, &answer("mixed", "mixed")),
            None
        );
        let p = spot_check("vm0", &d, usable, range, &answer("plugged", "unplugged")).unwrap();
        assert!(
            p.contains("STATE says plugged but the guest's bitmap unplugged"),
            "{p}"
        );
        let p = spot_check(
            "vm0",
            &qmp_dev(0, 0),
            usable,
            range,
            &answer("mixed", "mixed"),
        );
        assert!(p.unwrap().contains("QMP size is 0 KiB"));
        let full = qmp_dev(4096, 4096);
        assert!(spot_check(
            "vm0",
            &full,
            usable,
            range,
            &answer("unplugged", "unplugged")
        )
        .is_some());
        assert_eq!(
            spot_check("vm0", &full, usable, range, &answer("plugged", "plugged")),
            None
        );
        let p = spot_check(
            "vm0",
            &d,
            usable,
            (0x1_4000_0000, 4096),
            &answer("mixed", "mixed"),
        );
        assert!(p
            .unwrap()
            .contains("asked `vmem state` of 0x140000000+4096 KiB"));
        let refused = VmemState::Refused("device_busy".into());
        assert!(spot_check("vm0", &d, usable, range, &refused)
            .unwrap()
            .contains("refused: device_busy"));
    }
}
