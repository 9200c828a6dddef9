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

#[test]
fn encode_plug_byte_exact() {
    let b = encode_request(&Request::Plug {
        addr: 0x1_2345_6000_0000,
        nb_blocks: 0x0203,
    });
    #[rustfmt::skip]
    let want = [0, 0, 0, 0, 0, 0, 0, 0,
                0x00, 0x00, 0x00, 0x60, 0x45, 0x23, 0x01, 0x00,
                0x03, 0x02, 0, 0, 0, 0, 0, 0];
    assert_eq!(b, want);
}

#[test]
fn encode_unplug_byte_exact() {
    let b = encode_request(&Request::Unplug {
        addr: 0x8020_0000,
        nb_blocks: 1,
    });
    #[rustfmt::skip]
    let want = [1, 0, 0, 0, 0, 0, 0, 0,
                0x00, 0x00, 0x20, 0x80, 0, 0, 0, 0,
                1, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(b, want);
}

#[test]
fn encode_unplug_all_byte_exact() {
    let mut want = [0u8; 24];
    want[0] = 2;
    assert_eq!(encode_request(&Request::UnplugAll), want);
}

#[test]
fn encode_state_byte_exact() {
    let b = encode_request(&Request::State {
        addr: 0xffff_ffff_ffe0_0000,
        nb_blocks: 0xffff,
    });
    #[rustfmt::skip]
    let want = [3, 0, 0, 0, 0, 0, 0, 0,
                0x00, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff, 0, 0, 0, 0, 0, 0];
    assert_eq!(b, want);
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

#[test]
fn decode_each_response_type() {
    assert_eq!(decode(&PLUG, 0, 7), Ok(Response::Ack));
    assert_eq!(decode(&PLUG, 1, 0), Ok(Response::Nack));
    assert_eq!(decode(&PLUG, 2, 0), Ok(Response::Busy));
    assert_eq!(decode(&PLUG, 3, 0), Ok(Response::Error));
    assert_eq!(
        decode(&STATE, 0, 0),
        Ok(Response::AckState(BlockState::Plugged))
    );
    assert_eq!(
        decode(&STATE, 0, 1),
        Ok(Response::AckState(BlockState::Unplugged))
    );
    assert_eq!(
        decode(&STATE, 0, 2),
        Ok(Response::AckState(BlockState::Mixed))
    );
    assert_eq!(decode(&STATE, 3, 9), Ok(Response::Error));
}

#[test]
fn decode_unknown_type_and_state() {
    assert_eq!(decode(&PLUG, 4, 0), Err(VirtioMemError::BadResponse(4)));
    assert_eq!(
        decode(&STATE, 0xffff, 0),
        Err(VirtioMemError::BadResponse(0xffff))
    );
    assert_eq!(decode(&STATE, 0, 3), Err(VirtioMemError::BadState(3)));
}

#[test]
fn allowed_responses_follow_the_spec_table() {
    assert!(Response::Nack.allowed_for(&PLUG));
    assert!(!Response::Nack.allowed_for(&UNPLUG));
    assert!(!Response::Error.allowed_for(&Request::UnplugAll));
    assert!(Response::Busy.allowed_for(&Request::UnplugAll));
    assert!(!Response::Busy.allowed_for(&STATE));
    assert!(!Response::Ack.allowed_for(&STATE));
    assert!(Response::AckState(BlockState::Mixed).allowed_for(&STATE));
    assert!(!Response::AckState(BlockState::Mixed).allowed_for(&PLUG));
}
