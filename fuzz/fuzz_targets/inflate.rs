//! The inflater (src/proto/deflate.rs) fed a hostile stream under a small max
//! message size, in pieces the fuzzer chooses.
//!
//! Input: byte 0 sets the window (low 3 bits: 8 + n), no context takeover
//! (bit 3), the limit (bits 4-5: 16, 256, 1024 or 4096 bytes) and the mode
//! (bit 6). Then records: a header byte h and up to h & 0x7f bytes.
//! - Raw mode: each record's bytes are a piece of a compressed message;
//!   h & 0x80 ends the message (the tail is put back, as for a frame with
//!   FIN).
//! - Round-trip mode: each record's bytes are a plain message, compressed
//!   by our deflater with the same parameters and inflated in pieces of
//!   (h & 0x7f) + 1 bytes; what comes out must be the message, or TooBig
//!   exactly when the message is over the limit.
//!
//! Invariants: no panic; the output never holds more than limit + 1 bytes
//! nor allocates more; a TooBig only once the limit is crossed; after an
//! error the message (the connection) ends and nothing more is read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws::fuzzing::{Deflater, InflateError, Inflater};

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else { return };
    let window_bits = 8 + (first & 0x07);
    let no_context_takeover = first & 0x08 != 0;
    let limit = [16usize, 256, 1024, 4096][usize::from(first >> 4) & 3];
    let round_trip = first & 0x40 != 0;
    let mut inflater = Inflater::new(window_bits, no_context_takeover);
    let mut deflater = Deflater::new(window_bits, no_context_takeover, 0);
    let mut out = Vec::new();
    while let Some((&h, tail)) = rest.split_first() {
        let n = usize::from(h & 0x7f).min(tail.len());
        let (record, next) = tail.split_at(n);
        rest = next;
        let result = if round_trip {
            round_trip_one(&mut deflater, &mut inflater, record, usize::from(h & 0x7f) + 1, limit)
        } else {
            let mut r = inflater.inflate(record, &mut out, limit);
            if r.is_ok() && h & 0x80 != 0 {
                r = inflater.finish(&mut out, limit);
                if r.is_ok() {
                    assert!(out.len() <= limit, "a finished message of {} bytes over the limit {limit}", out.len());
                    out.clear();
                }
            }
            r
        };
        check_bounds(&out, limit);
        if let Err(e) = result {
            if e == InflateError::TooBig && !round_trip {
                assert!(out.len() > limit, "TooBig with {} bytes of {limit}", out.len());
            }
            return;
        }
    }
});

fn check_bounds(out: &[u8], limit: usize) {
    assert!(out.len() <= limit + 1, "{} bytes held under a limit of {limit}", out.len());
}

/// Compresses `message` and inflates it in pieces of `piece` bytes.
fn round_trip_one(
    deflater: &mut Deflater,
    inflater: &mut Inflater,
    message: &[u8],
    piece: usize,
    limit: usize,
) -> Result<(), InflateError> {
    let mut wire = Vec::new();
    if !deflater.wants(message.len()) || !deflater.compress(message, &mut wire) {
        // Sent uncompressed: the inflater never sees it.
        return Ok(());
    }
    let mut out = Vec::new();
    let mut result = Ok(());
    for chunk in wire.chunks(piece) {
        result = inflater.inflate(chunk, &mut out, limit);
        assert!(out.capacity() <= limit + 1, "capacity {} under a limit of {limit}", out.capacity());
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = inflater.finish(&mut out, limit);
    }
    match result {
        Ok(()) => assert_eq!(out, message, "round trip changed the message"),
        Err(InflateError::TooBig) => assert!(message.len() > limit, "TooBig for {} bytes of {limit}", message.len()),
        Err(InflateError::Corrupt(e)) => panic!("our own compressed message did not inflate: {e}"),
        Err(InflateError::OutOfMemory { held, .. }) => panic!("out of memory at {held} bytes under a small limit"),
    }
    result
}
