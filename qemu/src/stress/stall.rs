//! When a device that did not reach its requested size is excused: the runner's own
//! arithmetic over numbers the kernel prints, so a stall passes only when it was unavoidable.
//!
//! # The numbers
//! From `mem` ([`Room::from_mem`]): free Normal memory (all nodes together), free memory of
//! all zones (the total line), the kernel reserve `R` and the unplug floor `F` (the total
//! line's `reserve_kib`/`floor_kib`). From `pin`: how many pages are pinned and the address
//! of the highest ([`Pins`]; `pin` pins the hog's highest pages). From `sections`: how much
//! of the device region is present above the section of that highest pin. From QMP: plugged
//! and requested size; the plug unit `U = max(block, 2 MiB)`. The hog's size needs no number
//! of its own: its pages are what `mem` shows used, wherever they are.
//!
//! # The rules ([`judge`]), one per (direction, reason); `state=ok` is never a stall
//! - shrink, `floor`: unplugging one more unit moves its used pages into free memory
//!   elsewhere, which must leave `R + F` free: possible iff `free_all - U >= R + F`. The
//!   guest cannot unplug memory holding data that does not fit in free Normal above `R + F`
//!   plus the other free Movable, and this is that sum. Excused iff `free_all < U + R + F`.
//! - shrink, `no_memory`: the same room, with one more unit of slack for the kernel memory a
//!   migration needs on the way (reverse-map and table updates come from the heap):
//!   excused iff `free_all < 2U + R + F`.
//! - shrink, `pinned`: pinned pages cannot move, so a unit holding one cannot go. Excused iff
//!   pins are held, the device holds no more units than there are pinned pages (each could
//!   sit in a unit of its own), and nothing of the device is present in the sections above
//!   the one holding the highest pin (those units hold no pin) — or the room rule above says
//!   no unit can go anyway.
//! - shrink, `unmovable`: never under `memhp_online=movable` (every page in Movable can
//!   move); with hot-plugged memory in Normal only while a hog or pins hold memory there.
//! - grow, `no_memory`: a new section's mem_map (1 MiB) comes from free Normal, which plugging
//!   keeps above `2R`; with 2 MiB for the linear map's table pages and a section-table chunk,
//!   excused iff `free_normal < 2R + 3 MiB`.
//! - everything else (`device_busy`, `device_error`, a grow stalled by `floor`, `pinned` or
//!   `unmovable`, any reason without a stall) is never excused here; an armed fault has its
//!   own excuses ([`super::oracle::excused_while_injecting`]).
//!
//! A run fails when more than [`MAX_STALL_PERCENT`] of its steps stalled ([`too_many_stalls`]),
//! however well each stall was excused.
//!
//! The numbers are read after the stall was seen and QMP stood still; a stall the rules do
//! not excuse is not a failure at once: the runner keeps waiting (the guest retries after its
//! back-off) and fails at its deadline, naming the arithmetic ([`Verdict`]). A kernel that
//! prints no `reserve_kib`/`floor_kib` gets the older rule: `no_memory` and `floor` excused
//! while a hog or pins hold memory.

use std::fmt;

use crate::guest::{Limits, Mem};

/// A run fails when more than this share of its steps stalled.
pub const MAX_STALL_PERCENT: usize = 10;
/// The new mem_map of one section, in KiB (32768 pages of 32 bytes).
pub const MEM_MAP_KIB: u64 = 1024;
/// Table pages of the linear map and a section-table chunk for one plug, in KiB.
pub const PLUG_SLACK_KIB: u64 = 2048;

/// Free memory as `mem` shows it, with the reserve and the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Free Normal memory, all nodes.
    pub free_normal_kib: u64,
    /// Free memory of every zone (the total line).
    pub free_kib: u64,
    /// The reserve and the floor; `None` when the kernel prints neither.
    pub limits: Option<Limits>,
}

impl Room {
    /// The room `mem` shows; `None` when it has no Normal line or no total.
    pub fn from_mem(mem: &Mem) -> Option<Room> {
        Some(Room {
            free_normal_kib: mem.zone_sum("Normal", |z| z.free_kib).ok()?,
            free_kib: mem.total().ok()?.free_kib,
            limits: mem.limits(),
        })
    }
}

/// What `pin` pinned: `pin: pinned pages=P highest=0x…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pins {
    /// Pages pinned.
    pub pages: u64,
    /// Physical address of the highest pinned page.
    pub highest: u64,
}

/// What the scenario holds when a stall is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// A hog runs.
    pub hog: bool,
    /// Pins are held (what `pin` said, if it said it).
    pub pins: Option<Pins>,
    /// Hot-plugged memory goes online into Movable (`memhp_online=movable`, the default).
    pub movable: bool,
}

/// One device that did not reach its requested size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall<'a> {
    /// `vmem`'s `state=`.
    pub state: &'a str,
    /// `vmem`'s `reason=`.
    pub reason: &'a str,
    /// QMP size.
    pub plugged_kib: u64,
    /// QMP requested-size.
    pub requested_kib: u64,
    /// The plug unit: max(block, 2 MiB).
    pub unit_kib: u64,
    /// Present memory of the device region in the sections above the one holding the
    /// highest pin (0 without pins).
    pub above_pins_kib: u64,
}

/// Whether a stall is excused, and the arithmetic that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Unavoidable: why.
    Excused(String),
    /// Not (yet) explained: why not.
    Unexcused(String),
}

impl Verdict {
    /// Whether it is [`Verdict::Excused`].
    pub fn excused(&self) -> bool {
        matches!(self, Verdict::Excused(_))
    }

    fn of(excused: bool, why: String) -> Verdict {
        if excused {
            Verdict::Excused(why)
        } else {
            Verdict::Unexcused(why)
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Excused(why) => write!(f, "excused: {why}"),
            Verdict::Unexcused(why) => write!(f, "not excused: {why}"),
        }
    }
}

/// Judges one stall by the rules of the module docs.
pub fn judge(s: &Stall, room: Option<&Room>, holding: &Holding) -> Verdict {
    let no = |why: &str| Verdict::Unexcused(why.to_string());
    if s.state == "ok" {
        return no("state=ok is no stall");
    }
    let shrinking = s.plugged_kib > s.requested_kib;
    let limits = room.and_then(|r| r.limits.map(|l| (r, l)));
    let held = holding.hog || holding.pins.is_some();
    match (shrinking, s.reason) {
        (true, "unmovable") if holding.movable => {
            no("unmovable under memhp_online=movable: every page in Movable can move")
        }
        (true, "unmovable") => Verdict::of(held, "hot-plugged memory in Normal".into()),
        (_, "floor" | "no_memory") if limits.is_none() => Verdict::of(
            held,
            "the kernel prints no reserve_kib/floor_kib: excused while a hog or pins run".into(),
        ),
        (true, "floor" | "no_memory" | "pinned") => {
            let (room, l) = limits.unwrap_or((&Room::EMPTY, Limits::NONE));
            let slack = if s.reason == "no_memory" {
                s.unit_kib
            } else {
                0
            };
            let need = s.unit_kib + slack + l.reserve_kib + l.floor_kib;
            let full = room.free_kib < need;
            let arithmetic = format!(
                "free {} KiB {} unit {} KiB{} + reserve {} KiB + floor {} KiB",
                room.free_kib,
                if full { "<" } else { ">=" },
                s.unit_kib,
                if slack > 0 {
                    format!(" + slack {slack} KiB")
                } else {
                    String::new()
                },
                l.reserve_kib,
                l.floor_kib
            );
            if s.reason != "pinned" {
                return Verdict::of(full, arithmetic);
            }
            let Some(pins) = holding.pins else {
                return no("pinned, but no pins are held");
            };
            let units = s.plugged_kib / s.unit_kib.max(1);
            let blocked = units <= pins.pages && s.above_pins_kib == 0;
            Verdict::of(
                blocked || (limits.is_some() && full),
                format!(
                    "{units} units plugged, {} pinned pages, {} KiB present above the highest \
                     pin's section {:#x}; {arithmetic}",
                    pins.pages, s.above_pins_kib, pins.highest
                ),
            )
        }
        (false, "no_memory") => {
            let (room, l) = limits.unwrap_or((&Room::EMPTY, Limits::NONE));
            let need = 2 * l.reserve_kib + MEM_MAP_KIB + PLUG_SLACK_KIB;
            let short = room.free_normal_kib < need;
            Verdict::of(
                short,
                format!(
                    "free Normal {} KiB {} 2 x reserve {} KiB + mem_map {MEM_MAP_KIB} KiB + \
                     {PLUG_SLACK_KIB} KiB",
                    room.free_normal_kib,
                    if short { "<" } else { ">=" },
                    l.reserve_kib
                ),
            )
        }
        (false, "floor" | "pinned" | "unmovable") => no("a grow does not stall for that"),
        _ => Verdict::Unexcused(format!("reason={} is never excused", s.reason)),
    }
}

impl Room {
    const EMPTY: Room = Room {
        free_normal_kib: 0,
        free_kib: 0,
        limits: None,
    };
}

impl Limits {
    const NONE: Limits = Limits {
        reserve_kib: 0,
        floor_kib: 0,
    };
}

/// Whether `stalls` of `steps` is more than [`MAX_STALL_PERCENT`] of them.
pub fn too_many_stalls(stalls: usize, steps: usize) -> bool {
    stalls * 100 > steps * MAX_STALL_PERCENT
}

/// The pins `pin` reported: `pin: pinned pages=P highest=0x…`; `None` for any other line.
pub fn parse_pinned(line: &str) -> Option<Pins> {
    let r = crate::record::Record::parse_after(line, "pin: pinned").ok()?;
    Some(Pins {
        pages: r.u64("pages").ok()?,
        highest: r.u64("highest").ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOVABLE: Holding = Holding {
        hog: true,
        pins: None,
        movable: true,
    };

    fn room(free_normal_kib: u64, free_kib: u64) -> Room {
        Room {
            free_normal_kib,
            free_kib,
            limits: Some(Limits {
                reserve_kib: 8192,
                floor_kib: 65536,
            }),
        }
    }

    fn stall<'a>(reason: &'a str, plugged_mib: u64, requested_mib: u64) -> Stall<'a> {
        Stall {
            state: "stalled",
            reason,
            plugged_kib: plugged_mib << 10,
            requested_kib: requested_mib << 10,
            unit_kib: 2048,
            above_pins_kib: 0,
        }
    }

    #[test]
    fn floor_is_the_room_for_one_more_unit() {
        let need = 2048 + 8192 + 65536;
        let s = stall("floor", 512, 0);
        assert!(judge(&s, Some(&room(0, need - 1)), &MOVABLE).excused());
        let v = judge(&s, Some(&room(0, need)), &MOVABLE);
        assert!(!v.excused(), "{v}");
        assert!(v.to_string().contains(">= unit 2048 KiB"), "{v}");
        // The same room excuses no_memory only below one more unit of slack.
        let s = stall("no_memory", 512, 0);
        assert!(judge(&s, Some(&room(0, need + 2047)), &MOVABLE).excused());
        assert!(!judge(&s, Some(&room(0, need + 2048)), &MOVABLE).excused());
        // A hog alone excuses nothing.
        assert!(!judge(
            &stall("floor", 512, 0),
            Some(&room(400 << 10, 1 << 20)),
            &MOVABLE
        )
        .excused());
    }

    #[test]
    fn grow_needs_a_mem_map_above_twice_the_reserve() {
        let need = 2 * 8192 + MEM_MAP_KIB + PLUG_SLACK_KIB;
        let s = stall("no_memory", 0, 512);
        assert!(judge(&s, Some(&room(need - 1, 1 << 30)), &MOVABLE).excused());
        assert!(!judge(&s, Some(&room(need, 0)), &MOVABLE).excused());
        for reason in ["floor", "pinned", "unmovable", "device_busy"] {
            assert!(!judge(&stall(reason, 0, 512), Some(&room(0, 0)), &MOVABLE).excused());
        }
    }

    #[test]
    fn unmovable_never_under_movable() {
        let pinned = Holding {
            pins: Some(Pins {
                pages: 1,
                highest: 0,
            }),
            ..MOVABLE
        };
        let s = stall("unmovable", 512, 0);
        assert!(!judge(&s, Some(&room(0, 0)), &pinned).excused());
        let normal = Holding {
            movable: false,
            ..pinned
        };
        assert!(judge(&s, Some(&room(0, 0)), &normal).excused());
        let idle = Holding {
            hog: false,
            pins: None,
            movable: false,
        };
        assert!(!judge(&s, Some(&room(0, 0)), &idle).excused());
    }

    #[test]
    fn pins_block_only_the_units_they_can_sit_in() {
        let pins = Pins {
            pages: 256,
            highest: 0x1_4100_0000,
        };
        let holding = Holding {
            pins: Some(pins),
            ..MOVABLE
        };
        let plenty = room(400 << 10, 1 << 30);
        // 16 units plugged, 256 pinned pages, nothing above the highest pin: excused.
        assert!(judge(&stall("pinned", 32, 0), Some(&plenty), &holding).excused());
        // More units than pinned pages: some unit holds no pin and could go.
        assert!(!judge(&stall("pinned", 1024, 0), Some(&plenty), &holding).excused());
        // Memory above the highest pin's section holds no pin.
        let above = Stall {
            above_pins_kib: 2048,
            ..stall("pinned", 32, 0)
        };
        assert!(!judge(&above, Some(&plenty), &holding).excused());
        // ... unless no unit can go for want of room.
        assert!(judge(&above, Some(&room(0, 1024)), &holding).excused());
        assert!(!judge(&stall("pinned", 32, 0), Some(&plenty), &MOVABLE).excused());
        assert!(!judge(&stall("pinned", 0, 32), Some(&plenty), &holding).excused());
    }

    #[test]
    fn old_kernels_and_other_reasons() {
        let old = Room {
            limits: None,
            ..room(0, 0)
        };
        assert!(judge(&stall("floor", 512, 0), Some(&old), &MOVABLE).excused());
        let idle = Holding {
            hog: false,
            ..MOVABLE
        };
        assert!(!judge(&stall("no_memory", 512, 0), None, &idle).excused());
        let ok = Stall {
            state: "ok",
            ..stall("floor", 512, 0)
        };
        assert!(!judge(&ok, Some(&room(0, 0)), &MOVABLE).excused());
        assert!(!judge(&stall("device_error", 512, 0), Some(&room(0, 0)), &MOVABLE).excused());
    }

    #[test]
    fn stall_cap() {
        assert!(!too_many_stalls(0, 0));
        assert!(!too_many_stalls(10, 100));
        assert!(too_many_stalls(11, 100));
        assert!(too_many_stalls(1, 9));
        assert!(!too_many_stalls(1, 10));
    }

    #[test]
    fn pin_lines() {
        assert_eq!(
            parse_pinned("pin: pinned pages=256 highest=0x17fff000"),
            Some(Pins {
                pages: 256,
                highest: 0x17ff_f000
            })
        );
        assert_eq!(parse_pinned("pin: no hog running"), None);
    }
}
