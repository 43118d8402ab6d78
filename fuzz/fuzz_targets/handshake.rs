//! The handshake response parser (src/proto/handshake.rs `parse_response`) with
//! a fixed key and two offered subprotocols.
//!
//! Input: byte 0 times 512 is the size of an `X-Pad` header inserted after
//! the first line (so that heads around and over the 64 KiB bound are
//! reached); the rest is the response.
//!
//! Invariants: no panic; `Ok(None)` (wait for more) only while the input is
//! at most 64 KiB, so a server cannot make the client buffer without bound;
//! a success has a head of at most 64 KiB within the input, agrees on no
//! extension and on one of the offered subprotocols or none, and parsing
//! exactly its head gives the same answer, as does any longer input; every
//! strict prefix of a complete head is "incomplete" or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws::fuzzing::{parse_response, CompressionOptions, MAX_RESPONSE_HEAD};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fuzz_target!(|data: &[u8]| {
    let Some((&pad, rest)) = data.split_first() else { return };
    let mut buf = Vec::with_capacity(rest.len() + usize::from(pad) * 512 + 16);
    if pad > 0 {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").map_or(rest.len(), |i| i + 2);
        buf.extend_from_slice(&rest[..line_end]);
        buf.extend_from_slice(b"X-Pad: ");
        buf.resize(buf.len() + usize::from(pad) * 512, b'a');
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(&rest[line_end..]);
    } else {
        buf.extend_from_slice(rest);
    }
    let offered = vec!["chat".to_string(), "superchat".to_string()];
    // As a browser offers: permessage-deflate with client_max_window_bits.
    let offer = CompressionOptions::default();
    match parse_response(&buf, KEY, &offered, &offer) {
        Ok(None) => assert!(buf.len() <= MAX_RESPONSE_HEAD, "still waiting after {} bytes", buf.len()),
        Ok(Some(agreed)) => {
            assert!(agreed.head_len <= buf.len() && agreed.head_len <= MAX_RESPONSE_HEAD);
            // Only permessage-deflate can be agreed, and then it is parsed.
            assert!(agreed.extensions.is_empty() == agreed.deflate.is_none(), "{:?}", agreed.extensions);
            assert!(agreed.protocol.is_empty() || offered.contains(&agreed.protocol), "{:?}", agreed.protocol);
            let head = &buf[..agreed.head_len];
            assert_eq!(parse_response(head, KEY, &offered, &offer), Ok(Some(agreed)));
            for cut in [head.len() - 1, head.len().saturating_sub(2), head.len() / 2] {
                if let Ok(Some(a)) = parse_response(&head[..cut], KEY, &offered, &offer) {
                    panic!("a prefix of {cut} of {} bytes was complete: {a:?}", head.len());
                }
            }
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
