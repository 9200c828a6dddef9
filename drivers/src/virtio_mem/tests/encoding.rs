//! Wire forms, byte for byte, and the spec's request/response table: pure functions, no
//! device.

use super::*;

/// One-block requests at address 0, for decoding (the address does not matter there).
const PLUG: Request = Request::Plug {
    addr: 0,
    nb_blocks: 1,
};
const UNPLUG: Request = Request::Unplug {
    addr: 0,
    nb_blocks: 1,
};
const STATE: Request = Request::State {
    addr: 0,
    nb_blocks: 1,
};

/// The bytes spelled by pairs of hex digits; spaces only group them.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|&b| b != b' ').collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(core::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// Each request's wire form, byte for byte, grouped as: le16 type, 6 bytes padding, le64
/// address, le16 block count, 6 bytes padding.
#[test]
fn encode_byte_exact() {
    #[rustfmt::skip]
    let cases = [
        (Request::Plug { addr: 0x1_2345_6000_0000, nb_blocks: 0x0203 },
         "0000 000000000000 0000006045230100 0302 000000000000"),
        (Request::Unplug { addr: 0x8020_0000, nb_blocks: 1 },
         "0100 000000000000 0000208000000000 0100 000000000000"),
        (Request::UnplugAll, "0200 000000000000 0000000000000000 0000 000000000000"),
        (Request::State { addr: 0xffff_ffff_ffe0_0000, nb_blocks: 0xffff },
         "0300 000000000000 0000e0ffffffffff ffff 000000000000"),
    ];
    for (req, want) in cases {
        assert_eq!(encode_request(&req)[..], hex(want)[..], "{req:?}");
    }
}

fn resp_bytes(ty: u16, state: u16) -> [u8; 10] {
    let mut b = [0x55u8; 10]; // padding is garbage on purpose
    b[0..2].copy_from_slice(&ty.to_le_bytes());
    b[8..10].copy_from_slice(&state.to_le_bytes());
    b
}

/// Decodes a response of this type and state to `req`.
fn decode(req: &Request, ty: u16, state: u16) -> Result<Response, VirtioMemError> {
    decode_response(req, &resp_bytes(ty, state))
}

/// What a response of each type and state decodes to, known or not: the state is read
/// only for STATE.
#[test]
fn decode_each_response_type_and_state() {
    use VirtioMemError::{BadResponse, BadState};
    let cases = [
        (PLUG, 0, 7, Ok(Response::Ack)),
        (PLUG, 1, 0, Ok(Response::Nack)),
        (PLUG, 2, 0, Ok(Response::Busy)),
        (PLUG, 3, 0, Ok(Response::Error)),
        (STATE, 0, 0, Ok(Response::AckState(BlockState::Plugged))),
        (STATE, 0, 1, Ok(Response::AckState(BlockState::Unplugged))),
        (STATE, 0, 2, Ok(Response::AckState(BlockState::Mixed))),
        (STATE, 3, 9, Ok(Response::Error)),
        // Unknown type, unknown state.
        (PLUG, 4, 0, Err(BadResponse(4))),
        (STATE, 0xffff, 0, Err(BadResponse(0xffff))),
        (STATE, 0, 3, Err(BadState(3))),
    ];
    for (req, ty, state, want) in cases {
        assert_eq!(
            decode(&req, ty, state),
            want,
            "{req:?} type {ty} state {state}"
        );
    }
}

/// Some rows of the spec's table ([`Response::allowed_for`]), allowed and not.
#[test]
fn allowed_responses_follow_the_spec_table() {
    let cases = [
        (Response::Nack, PLUG, true),
        (Response::Nack, UNPLUG, false),
        (Response::Error, Request::UnplugAll, false),
        (Response::Busy, Request::UnplugAll, true),
        (Response::Busy, STATE, false),
        (Response::Ack, STATE, false),
        (Response::AckState(BlockState::Mixed), STATE, true),
        (Response::AckState(BlockState::Mixed), PLUG, false),
    ];
    for (resp, req, allowed) in cases {
        assert_eq!(resp.allowed_for(&req), allowed, "{resp:?} to {req:?}");
    }
}
