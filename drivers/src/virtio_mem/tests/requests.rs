//! Requests over the fake queue (each response type, late answers, reset, short
//! responses), interrupts, and what drop leaves behind.

use super::fake::{ack_after, ack_state, ready, resp, seen, Dev, Driver, Reply};
use super::*;

/// One block at the start of QEMU's region.
const PLUG_ONE: Request = Request::Plug {
    addr: 0x8000_0000,
    nb_blocks: 1,
};

/// Scripts `reply`, sends `req`, and lets each `wait` call advance the fake's clock.
fn send(
    dev: &Dev,
    vm: &mut Driver,
    req: Request,
    reply: Reply,
) -> Result<Response, VirtioMemError> {
    dev.borrow_mut().script.push_back(reply);
    let d = dev.clone();
    vm.request(req, &mut || d.borrow_mut().tick())
}

#[test]
fn each_response_type_over_the_queue() {
    let (dev, mut vm) = ready();
    let plug = Request::Plug {
        addr: 0x8000_0000,
        nb_blocks: 512,
    };
    assert_eq!(send(&dev, &mut vm, plug, resp(0)), Ok(Response::Ack));
    assert_eq!(send(&dev, &mut vm, plug, resp(1)), Ok(Response::Nack));
    assert_eq!(send(&dev, &mut vm, plug, resp(2)), Ok(Response::Busy));
    assert_eq!(send(&dev, &mut vm, plug, resp(3)), Ok(Response::Error));
    let unplug = Request::Unplug {
        addr: 0x8020_0000,
        nb_blocks: 3,
    };
    assert_eq!(send(&dev, &mut vm, unplug, resp(0)), Ok(Response::Ack));
    assert_eq!(
        send(&dev, &mut vm, Request::UnplugAll, resp(0)),
        Ok(Response::Ack)
    );
    let st = Request::State {
        addr: 0x8000_0000,
        nb_blocks: 2,
    };
    for (s, want) in [
        (0, BlockState::Plugged),
        (1, BlockState::Unplugged),
        (2, BlockState::Mixed),
    ] {
        assert_eq!(
            send(&dev, &mut vm, st, ack_state(s)),
            Ok(Response::AckState(want))
        );
    }
    assert_eq!(
        send(&dev, &mut vm, plug, resp(9)),
        Err(VirtioMemError::BadResponse(9))
    );
    let d = dev.borrow();
    assert_eq!(d.seen.len(), 10);
    assert_eq!(d.seen[0], seen(0, 0x8000_0000, 512));
    assert_eq!(d.seen[4], seen(1, 0x8020_0000, 3));
    assert_eq!(d.seen[5], seen(2, 0, 0));
    assert_eq!(d.seen[6], seen(3, 0x8000_0000, 2));
    assert_eq!(d.notifies, 10);
    assert_eq!(d.waits, 0, "no wait when the answer is immediate");
    assert!(
        !vm.is_broken(),
        "an unknown response type alone does not break the device"
    );
}

#[test]
fn late_response_calls_wait() {
    let (dev, mut vm) = ready();
    let reply = ack_after(2);
    assert_eq!(send(&dev, &mut vm, PLUG_ONE, reply), Ok(Response::Ack));
    assert_eq!(dev.borrow().waits, 2);
    // The queue keeps working afterwards (descriptors were recycled).
    for _ in 0..5 {
        assert_eq!(send(&dev, &mut vm, PLUG_ONE, resp(0)), Ok(Response::Ack));
    }
}

#[test]
fn needs_reset_resets_and_breaks() {
    let (dev, mut vm) = ready();
    assert_eq!(
        send(&dev, &mut vm, PLUG_ONE, Reply::NeedsReset),
        Err(VirtioMemError::DeviceNeedsReset)
    );
    assert!(vm.is_broken());
    {
        let d = dev.borrow();
        assert_eq!(d.waits, 1);
        assert_eq!(d.status, DeviceStatus::FAILED);
        assert_eq!(d.queue.desc, 0);
    }
    assert_eq!(
        vm.request(PLUG_ONE, &mut || panic!("no wait")),
        Err(VirtioMemError::Broken)
    );
    assert_eq!(dev.borrow().seen.len(), 1, "nothing sent once broken");
}

#[test]
fn short_response_is_an_error() {
    let (dev, mut vm) = ready();
    assert_eq!(
        send(&dev, &mut vm, PLUG_ONE, Reply::Short(2)),
        Err(VirtioMemError::ShortResponse(2))
    );
    assert_eq!(send(&dev, &mut vm, PLUG_ONE, resp(0)), Ok(Response::Ack));
}

#[test]
fn ack_interrupt_bits() {
    let (dev, mut vm) = ready();
    for (isr, want) in [
        (0, (false, false)),
        (1, (false, true)),
        (2, (true, false)),
        (3, (true, true)),
    ] {
        dev.borrow_mut().isr = isr;
        assert_eq!(vm.ack_interrupt(), want, "isr {isr}");
        assert_eq!(dev.borrow().isr, 0, "reading the ISR clears it");
    }
}

#[test]
fn config_change_seen_during_request_is_reported_later() {
    let (dev, mut vm) = ready();
    dev.borrow_mut().isr = 2; // a resize arrived while we wait
    let reply = ack_after(1);
    assert_eq!(send(&dev, &mut vm, PLUG_ONE, reply), Ok(Response::Ack));
    assert_eq!(vm.ack_interrupt(), (true, false));
    assert_eq!(vm.ack_interrupt(), (false, false));
}

#[test]
fn drop_unsets_queue_and_resets() {
    let (dev, vm) = ready();
    drop(vm);
    let d = dev.borrow();
    assert_eq!(d.queue_unset_calls, 1);
    assert_eq!(d.status, DeviceStatus::empty());
    assert_eq!(d.queue.desc, 0);
}
