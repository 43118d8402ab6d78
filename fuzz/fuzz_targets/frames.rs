//! The frame and message layer (src/proto/frames.rs `Reader`) fed a server's
//! byte stream cut into chunks at points the fuzzer chooses.
//!
//! Input: byte 0's low 4 bits say how many chunk-size bytes follow (n);
//! each of those n bytes b gives a chunk of b + 1 bytes, used in turn and
//! cycled; the rest of the input is the stream. n = 0 feeds it whole.
//!
//! Invariants: no panic; the message being assembled never exceeds the max
//! message size (4096) and its buffer never twice that; a control payload
//! buffer stays within a 125-byte frame's; every outcome is a message (text
//! is UTF-8), a ping of at most 125 bytes, a pong, a close with a code
//! allowed on the wire (or 1005 and no reason) and a UTF-8 reason of at
//! most 123 bytes, or a violation with code 1002, 1007 or 1009, after which
//! the connection is failed and nothing more is read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws::fuzzing::{is_valid_wire_close_code, DeflateParams, Incoming, InputBuffer, Reader};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let n = usize::from(first & 0x0f).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let sizes: Vec<usize> =
        if sizes.is_empty() { vec![stream.len().max(1)] } else { sizes.iter().map(|&b| usize::from(b) + 1).collect() };
    // The high bits of the first byte: with permessage-deflate agreed or
    // not, and its parameters (context takeover, the server's window).
    let deflate = (first & 0x10 != 0).then(|| DeflateParams {
        server_no_context_takeover: first & 0x20 != 0,
        client_no_context_takeover: false,
        server_max_window_bits: if first & 0x40 != 0 { 9 } else { 15 },
        client_max_window_bits: 15,
    });
    let mut reader = Reader::new(MAX as u64, deflate.as_ref());
    let mut input = InputBuffer::default();
    let mut fed = 0;
    let mut turn = 0;
    while fed < stream.len() {
        let take = sizes[turn % sizes.len()].min(stream.len() - fed);
        turn += 1;
        input.spare(take)[..take].copy_from_slice(&stream[fed..fed + take]);
        input.commit(take);
        fed += take;
        loop {
            let outcome = reader.next(&mut input);
            let (message_len, message_capacity, control_capacity) = reader.held();
            assert!(message_len <= MAX + 1, "message buffer holds {message_len} bytes");
            assert!(message_capacity <= 2 * MAX + 2, "message buffer capacity {message_capacity}");
            assert!(control_capacity <= 2 * 125, "control buffer capacity {control_capacity}");
            match outcome {
                Ok(None) => break,
                Ok(Some(Incoming::Message { text })) => {
                    let message = reader.message();
                    assert!(message.len() <= MAX);
                    if text {
                        assert!(std::str::from_utf8(message).is_ok(), "text message is not UTF-8");
                    }
                }
                Ok(Some(Incoming::Ping(payload))) => assert!(payload.len() <= 125),
                Ok(Some(Incoming::Pong(_))) => {}
                Ok(Some(Incoming::Close { code, reason })) => {
                    assert!(
                        (code == 1005 && reason.is_empty()) || is_valid_wire_close_code(code),
                        "close code {code} with reason {reason:?}"
                    );
                    assert!(reason.len() <= 123);
                }
                Err(v) => {
                    assert!(matches!(v.code, 1002 | 1007 | 1009), "violation with code {}: {}", v.code, v.message);
                    // The connection fails here: nothing more is read.
                    return;
                }
            }
        }
    }
});
