use super::*;
use alloc::string::ToString;
use alloc::vec::Vec;
use hotmem_drivers::virtio_mem::BlockState;

const PLUG: Request = Request::Plug {
    addr: 0x1_0000_0000,
    nb_blocks: 4,
};
const UNPLUG: Request = Request::Unplug {
    addr: 0x1_0000_0000,
    nb_blocks: 4,
};
const STATE: Request = Request::State {
    addr: 0x1_0000_0000,
    nb_blocks: 4,
};

fn cmd(line: &str) -> Command {
    let words: Vec<&str> = line.split_whitespace().collect();
    parse(&words).unwrap_or_else(|u| panic!("{line}: usage {u}"))
}

fn armed(lines: &[&str]) -> Plan {
    let mut p = Plan::new();
    for l in lines {
        p.apply(cmd(l)).unwrap();
    }
    p
}

fn records(p: &Plan) -> Vec<String> {
    core::iter::once(p.header().to_string())
        .chain(p.rules().map(|(i, r)| RuleRecord(i, r).to_string()))
        .collect()
}

#[test]
fn splitmix64_reference_values() {
    let mut r = SplitMix64::new(0);
    assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
    assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
}

#[test]
fn grammar() {
    assert_eq!(cmd(""), Command::Show);
    assert_eq!(cmd("help"), Command::Help);
    assert_eq!(cmd("off"), Command::Off);
    assert_eq!(cmd("seed 0x10"), Command::Seed(16));
    assert_eq!(
        cmd("reply replace busy plug count=3"),
        Command::Arm(Spec {
            fault: Fault::Reply {
                mode: Mode::Replace,
                answer: Answer::Busy,
                on: On::Plug
            },
            trigger: Trigger {
                count: Some(3),
                ppm: PPM_ALWAYS
            }
        })
    );
    assert_eq!(
        cmd("reply refuse error unplug-all"),
        Command::Arm(Spec {
            fault: Fault::Reply {
                mode: Mode::Refuse,
                answer: Answer::Error,
                on: On::UnplugAll
            },
            trigger: Trigger {
                count: Some(1),
                ppm: PPM_ALWAYS
            }
        })
    );
    let Command::Arm(s) = cmd("migrate ppm=500") else {
        panic!()
    };
    assert_eq!(
        (s.fault, s.trigger.count, s.trigger.ppm),
        (Fault::Migrate, None, 500)
    );
    let Command::Arm(s) = cmd("alloc heap ppm=10 count=2") else {
        panic!()
    };
    assert_eq!(
        s.trigger,
        Trigger {
            count: Some(2),
            ppm: 10
        }
    );
    assert_eq!(
        cmd("config torn count=5"),
        Command::Arm(Spec {
            fault: Fault::Config(ConfigFault::Torn),
            trigger: Trigger {
                count: Some(5),
                ppm: PPM_ALWAYS
            }
        })
    );
    for bad in [
        "seed",
        "seed x",
        "bogus",
        "reply replace plug busy",
        "reply swap busy plug",
        "reply replace busy plug count=0",
        "reply replace busy plug ppm=0",
        "reply replace busy plug ppm=1000001",
        "reply replace busy plug count=1 count=2",
        "reply replace busy plug left=1",
        "config sideways",
        "alloc stack",
        "migrate now",
        "off now",
    ] {
        let words: Vec<&str> = bad.split_whitespace().collect();
        assert!(parse(&words).is_err(), "{bad}");
    }
}

#[test]
fn count_rules_fire_n_times_and_stay_listed() {
    let mut p = armed(&["reply refuse nack plug count=2"]);
    assert_eq!(p.armed(), Armed::REPLY);
    assert_eq!(p.refuse(&UNPLUG), None, "only PLUG");
    assert_eq!(
        p.replace(&PLUG, &Response::Ack),
        None,
        "refuse rules do not replace"
    );
    assert_eq!(p.refuse(&PLUG), Some(Response::Nack));
    assert_eq!(p.refuse(&PLUG), Some(Response::Nack));
    assert_eq!(p.refuse(&PLUG), None, "spent");
    assert_eq!(p.armed(), Armed::default());
    assert_eq!(
        records(&p),
        [
            "inject: seed=0 armed=0",
            "rule=0 kind=reply mode=refuse answer=nack request=plug left=0 ppm=1000000 fired=2"
        ]
    );
    p.apply(Command::Off).unwrap();
    assert_eq!(records(&p), ["inject: seed=0 armed=0"]);
}

#[test]
fn replace_fires_only_on_what_the_device_did() {
    let mut p = armed(&["reply replace error any count=3"]);
    assert_eq!(p.refuse(&PLUG), None);
    assert_eq!(
        p.replace(&PLUG, &Response::Busy),
        None,
        "the device did nothing"
    );
    assert_eq!(p.replace(&PLUG, &Response::Error), None);
    assert_eq!(p.replace(&PLUG, &Response::Ack), Some(Response::Error));
    assert_eq!(
        p.replace(&STATE, &Response::AckState(BlockState::Plugged)),
        Some(Response::Error)
    );
    assert_eq!(p.replace(&UNPLUG, &Response::Ack), Some(Response::Error));
    assert_eq!(p.replace(&UNPLUG, &Response::Ack), None);
}

#[test]
fn first_rule_that_fires_decides() {
    let mut p = armed(&[
        "reply refuse busy unplug count=1",
        "reply refuse error any count=1",
    ]);
    assert_eq!(p.refuse(&UNPLUG), Some(Response::Busy));
    assert_eq!(p.refuse(&UNPLUG), Some(Response::Error));
    assert_eq!(p.refuse(&UNPLUG), None);
}

#[test]
fn alloc_sites() {
    let mut p = armed(&[
        "alloc movable count=1",
        "alloc pages count=1",
        "alloc heap count=1",
    ]);
    assert_eq!(p.armed().bits(), (Armed::PAGES.bits() | Armed::HEAP.bits()));
    assert!(p.alloc(AllocSite::Kernel), "pages covers kernel");
    assert!(!p.alloc(AllocSite::Kernel));
    assert!(p.alloc(AllocSite::Movable));
    assert!(!p.alloc(AllocSite::Movable));
    assert!(p.alloc(AllocSite::Heap));
    assert!(!p.alloc(AllocSite::Heap));
    let mut p = armed(&["config unaligned", "migrate count=2"]);
    assert!(!p.config(ConfigFault::Torn));
    assert!(p.config(ConfigFault::Unaligned));
    assert!(p.migrate() && p.migrate() && !p.migrate());
}

/// The same seed and commands give the same decisions; another seed other ones; about `ppm`
/// of the events fire; `count` bounds a fraction.
#[test]
fn seeded_fractions_replay() {
    let run = |seed: u64| -> Vec<bool> {
        let mut p = armed(&[&alloc::format!("seed {seed}"), "migrate ppm=250000"]);
        (0..4000).map(|_| p.migrate()).collect()
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
    let fired = a.iter().filter(|&&f| f).count();
    assert!((800..1200).contains(&fired), "{fired} of 4000 at 25%");
    let mut p = armed(&["migrate ppm=500000 count=10"]);
    assert_eq!((0..1000).filter(|_| p.migrate()).count(), 10);
    // Reseeding an armed rule re-derives its stream: the same as arming after the seed.
    let mut late = armed(&["migrate ppm=250000", "seed 7"]);
    assert_eq!((0..4000).map(|_| late.migrate()).collect::<Vec<_>>(), a);
}

/// One rule's decisions do not depend on the events another rule sees.
#[test]
fn rules_draw_from_their_own_streams() {
    let alone: Vec<bool> = {
        let mut p = armed(&["migrate ppm=300000", "alloc heap ppm=300000"]);
        (0..500).map(|_| p.migrate()).collect()
    };
    let mut p = armed(&["migrate ppm=300000", "alloc heap ppm=300000"]);
    let mixed: Vec<bool> = (0..500)
        .map(|i| {
            for _ in 0..i % 3 {
                p.alloc(AllocSite::Heap);
            }
            p.migrate()
        })
        .collect();
    assert_eq!(alone, mixed);
}

#[test]
fn slots_fill_then_reuse_spent_rules() {
    let mut p = Plan::new();
    for i in 0..MAX_RULES {
        assert_eq!(p.apply(cmd("migrate count=1")), Ok(Applied::Armed(i)));
    }
    assert_eq!(p.apply(cmd("migrate count=1")), Err(ArmError::Full));
    assert!(p.migrate(), "slot 0 fires and is spent");
    assert_eq!(p.apply(cmd("alloc heap")), Ok(Applied::Armed(0)));
    assert_eq!(p.apply(Command::Off), Ok(Applied::Off));
    assert_eq!(p.armed(), Armed::default());
}

#[test]
fn bootarg_is_the_command_grammar() {
    let boot = parse_bootarg("seed,7;reply,replace,busy,plug,count=3;;migrate,ppm=500").unwrap();
    let shell = armed(&[
        "seed 7",
        "reply replace busy plug count=3",
        "migrate ppm=500",
    ]);
    assert_eq!(boot, shell);
    assert_eq!(
        records(&boot),
        [
            "inject: seed=7 armed=2",
            "rule=0 kind=reply mode=replace answer=busy request=plug left=3 ppm=1000000 fired=0",
            "rule=1 kind=migrate left=- ppm=500 fired=0",
        ]
    );
    for bad in [
        "off",
        "help",
        "reply,replace,busy",
        "seed,7;bogus",
        "migrate,count=1,ppm=2,x,y,z,w,v,u",
        "migrate;migrate;migrate;migrate;migrate;migrate;migrate;migrate;migrate",
    ] {
        assert!(parse_bootarg(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_bootarg(""), Ok(Plan::new()));
}

#[test]
fn help_names_every_form() {
    for form in [
        "off", "seed", "reply", "config", "alloc", "migrate", "count=", "ppm=",
    ] {
        assert!(HELP.iter().any(|l| l.contains(form)), "{form}");
    }
}

/// The model's fault hook (`Mm::set_alloc_fault`) fails exactly the allocations the plan
/// picks, as out-of-memory, and leaves the model consistent.
#[test]
fn model_alloc_hook_fails_what_the_plan_picks() {
    use crate::mm::testing::FakeStore;
    use crate::mm::{AllocError, AllocFlags, MemRegion, Mm, NodeId, PhysAddr};
    use std::sync::Mutex;

    static PLAN: Mutex<Plan> = Mutex::new(Plan::new());
    fn hook(flags: AllocFlags) -> bool {
        let site = if flags.movable {
            AllocSite::Movable
        } else {
            AllocSite::Kernel
        };
        PLAN.lock().unwrap().alloc(site)
    }
    *PLAN.lock().unwrap() = armed(&["alloc movable count=2"]);
    let region = MemRegion {
        base: PhysAddr(1 << 30),
        size_bytes: 128 << 20,
        node: NodeId::ZERO,
    };
    let mut mm = Mm::boot(&[region], &[], 40, FakeStore::default()).unwrap();
    let free = mm.total_stats().free_pages;
    mm.set_alloc_fault(Some(hook));
    assert_eq!(
        mm.alloc_pages(0, AllocFlags::MOVABLE),
        Err(AllocError::NoMemory)
    );
    let kernel = mm.alloc_pages(0, AllocFlags::UNMOVABLE).unwrap();
    assert_eq!(
        mm.alloc_pages(3, AllocFlags::MOVABLE),
        Err(AllocError::NoMemory)
    );
    let movable = mm.alloc_pages(3, AllocFlags::MOVABLE).unwrap();
    assert_eq!(mm.total_stats().free_pages, free - 1 - 8);
    mm.free_pages(kernel, 0).unwrap();
    mm.free_pages(movable, 3).unwrap();
    mm.check().unwrap();
    assert_eq!(mm.total_stats().free_pages, free);
}
