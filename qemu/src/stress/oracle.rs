//! The agreement oracle of the stress runner: when the guest agrees with QMP, and when a device
//! that did not reach its requested size is excused.
//!
//! QMP `query-memory-devices` is the outside truth, the guest's `vmem` its own view. After every
//! step the runner waits until each device's QMP size equals its requested size, or until every
//! device that did not get there is stalled for a reason the scenario explains ([`excused`]).
//! Then the two views must agree ([`disagreement`]): QMP is read before and after `vmem`, the
//! pair only counts when QMP did not move in between, and each device's `vmem` line (matched by
//! address) must show QMP's region, block, node, plugged and requested sizes, and nothing pending
//! with `state=ok` unless its stall was excused. Both are pure functions of what was read.

use crate::error::{Error, Result};
use crate::guest::{Vmem, VmemLine};
use crate::machine::KIB;
use crate::qmp::VirtioMemInfo;

/// Whether a device that did not reach its requested size is explained by what the scenario
/// does: `state` must not be `ok`, and `reason` must be one the guest may give right now. Pins
/// and unmovable pages can only hold up a shrink (`shrinking`: plugged above requested); a short
/// memory (`no_memory`, `floor`) can hold up either direction (plugging needs a mem_map).
pub fn excused(
    state: &str,
    reason: &str,
    shrinking: bool,
    hog: bool,
    pinned: bool,
    memory_short: bool,
) -> bool {
    state != "ok"
        && match reason {
            "pinned" => shrinking && pinned,
            "unmovable" => shrinking && (hog || pinned),
            "no_memory" | "floor" => hog || pinned || memory_short,
            _ => false,
        }
}

/// Whether a device that did not reach its requested size is explained by the fault armed
/// right now ([`super::faults`]): a refused or replaced reply leaves it busy or stalled with
/// `device_busy` or `device_error`, a failed migration stalled with `pinned` or `unmovable`.
/// A `broken` device is never excused. Only while the fault is armed; once it is disarmed,
/// only [`excused`] counts.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excuses() {
        // (state, reason, shrinking, hog, pinned, memory_short)
        assert!(!excused("ok", "pinned", true, true, true, true));
        assert!(excused("stalled", "pinned", true, true, true, false));
        assert!(
            !excused("stalled", "pinned", false, true, true, false),
            "grow"
        );
        assert!(!excused("stalled", "pinned", true, true, false, true));
        assert!(excused("stalled", "unmovable", true, true, false, false));
        assert!(
            !excused("stalled", "unmovable", false, true, true, true),
            "grow"
        );
        assert!(!excused("stalled", "unmovable", true, false, false, true));
        assert!(excused("stalled", "no_memory", false, true, false, false));
        assert!(excused("stalled", "floor", true, false, false, true));
        assert!(!excused("stalled", "floor", true, false, false, false));
        assert!(!excused("busy", "device_busy", true, true, true, true));
        assert!(!excused("broken", "none", true, true, true, true));
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
}
