//! The permessage-deflate codec (RFC 7692 section 7.2): raw DEFLATE, one
//! sync flush per message, the 4-byte tail 00 00 ff ff removed on the wire.
//!
//! zlib-rs (through flate2) does the work: it takes window sizes 9 to 15 in
//! both directions, which the pure-Rust miniz_oxide cannot do when
//! compressing. zlib cannot deflate with an 8-bit window, so a peer that
//! limits us to 8 bits gets every message uncompressed (always allowed).
//!
//! Contexts are created lazily, at the first message that needs one, and
//! dropped after each message when the context is not taken over: an
//! idle connection holds none. No I/O happens here.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What a sync flush ends with; removed by the sender, put back by the receiver.
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// zlib's default level: a good ratio on text, at a speed that keeps up
/// with the socket for the messages such feeds carry.
const LEVEL: u32 = 6;

/// The smallest window zlib deflates with.
pub(crate) const MIN_DEFLATE_WINDOW_BITS: u8 = 9;

/// The compressing side of one connection.
pub struct Deflater {
    ctx: Option<Compress>,
    window_bits: u8,
    /// client_no_context_takeover: a fresh context for every message.
    no_context_takeover: bool,
    /// Messages shorter than this go out uncompressed.
    threshold: usize,
}

impl Deflater {
    pub fn new(window_bits: u8, no_context_takeover: bool, threshold: usize) -> Self {
        Deflater { ctx: None, window_bits, no_context_takeover, threshold }
    }

    /// Whether a context is allocated now.
    #[cfg(test)]
    pub fn has_context(&self) -> bool {
        self.ctx.is_some()
    }

    /// Whether a message of `len` bytes is worth compressing.
    pub fn wants(&self, len: usize) -> bool {
        self.window_bits >= MIN_DEFLATE_WINDOW_BITS && len >= self.threshold
    }

    /// Appends `data` compressed as one message (tail removed) to `out`.
    /// Returns false, with `out` as it was, when the message should go out
    /// uncompressed after all: it did not shrink, or zlib failed. The
    /// context is dropped then, so that the next compressed message refers
    /// only to what the peer has inflated.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        let start = out.len();
        let ok = self.compress_inner(data, out);
        let end = out.len();
        let shrunk = ok
            && end >= start + TAIL.len()
            && out[end - TAIL.len()..] == TAIL
            && end - TAIL.len() - start < data.len().max(1);
        if shrunk {
            out.truncate(end - TAIL.len());
        } else {
            out.truncate(start);
        }
        if !shrunk || self.no_context_takeover {
            self.ctx = None;
        }
        shrunk
    }

    fn compress_inner(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> bool {
        let window_bits = self.window_bits;
        let ctx =
            self.ctx.get_or_insert_with(|| Compress::new_with_window_bits(Compression::new(LEVEL), false, window_bits));
        // Room for the usual case in one call: deflate's worst case is a
        // little over the input, plus the flush's empty stored block.
        // The size is the caller's message: when the memory cannot be had,
        // the message goes out uncompressed.
        if out.try_reserve(input.len() / 2 + 64).is_err() {
            return false;
        }
        loop {
            if out.capacity() - out.len() < 64 && out.try_reserve(out.capacity().max(1024)).is_err() {
                return false;
            }
            let before = ctx.total_in();
            if ctx.compress_vec(input, out, FlushCompress::Sync).is_err() {
                return false;
            }
            let used = usize::try_from(ctx.total_in() - before).unwrap_or(input.len()).min(input.len());
            input = &input[used..];
            // The flush is complete when deflate stopped with output space
            // left (zlib's rule for Z_SYNC_FLUSH).
            if input.is_empty() && out.len() < out.capacity() {
                return true;
            }
        }
    }
}

/// Why inflating failed.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// The message would grow past the limit.
    TooBig,
    /// Not valid DEFLATE data.
    Corrupt(String),
    /// Memory to inflate into could not be had: the length reached, and
    /// how much more was asked for.
    OutOfMemory { held: usize, more: usize },
}

/// The decompressing side of one connection.
pub struct Inflater {
    ctx: Option<Decompress>,
    window_bits: u8,
    /// server_no_context_takeover: a fresh context for every message.
    no_context_takeover: bool,
    /// The sender ended the DEFLATE stream (a final block) in this message.
    ended: bool,
    /// This message brought compressed bytes.
    fed: bool,
}

impl Inflater {
    pub fn new(window_bits: u8, no_context_takeover: bool) -> Self {
        // Inflating with a larger window than the sender's always works, so
        // a peer's 8 bits is read with zlib's smallest, 9.
        Inflater {
            ctx: None,
            window_bits: window_bits.max(MIN_DEFLATE_WINDOW_BITS),
            no_context_takeover,
            ended: false,
            fed: false,
        }
    }

    /// Whether a context is allocated now.
    #[cfg(test)]
    pub fn has_context(&self) -> bool {
        self.ctx.is_some()
    }

    /// Inflates a piece of a compressed message onto `out`, which never
    /// grows past `limit` + 1 bytes (past `limit`: `TooBig`).
    pub fn inflate(&mut self, mut input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        if input.is_empty() {
            return Ok(());
        }
        self.fed = true;
        let window_bits = self.window_bits;
        let ctx = self.ctx.get_or_insert_with(|| Decompress::new_with_window_bits(false, window_bits));
        while !self.ended {
            if out.len() == out.capacity() {
                // Double, but never past the limit (+1 to see it crossed).
                let room = limit.saturating_add(1).saturating_sub(out.len());
                if room == 0 {
                    return Err(InflateError::TooBig);
                }
                let more = out.capacity().clamp(4096, 16 << 20).min(room);
                out.try_reserve_exact(more).map_err(|_| InflateError::OutOfMemory { held: out.len(), more })?;
            }
            let (before_in, before_out) = (ctx.total_in(), ctx.total_out());
            let status = ctx
                .decompress_vec(input, out, FlushDecompress::None)
                .map_err(|e| InflateError::Corrupt(format!("invalid compressed data: {e}")))?;
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            let used = usize::try_from(ctx.total_in() - before_in).unwrap_or(input.len()).min(input.len());
            let produced = ctx.total_out() - before_out;
            input = &input[used..];
            if status == Status::StreamEnd {
                // A final block: what follows in this message is ignored,
                // and the next message starts a new stream.
                self.ended = true;
            } else if out.len() < out.capacity() && (input.is_empty() || (used == 0 && produced == 0)) {
                // Every byte taken and nothing held back for lack of space.
                return Ok(());
            }
        }
        Ok(())
    }

    /// The message's last frame was inflated: puts the tail back, then
    /// drops the context when it is not taken over.
    /// A message with no compressed byte at all (not even the 0x00 of an
    /// empty one) is taken as empty, and the context left as it was.
    pub fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        if !std::mem::take(&mut self.fed) {
            return Ok(());
        }
        let result = self.inflate(&TAIL, out, limit);
        self.fed = false;
        if self.no_context_takeover || self.ended || result.is_err() {
            self.ctx = None;
        }
        self.ended = false;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(n: usize) -> Vec<u8> {
        let mut s = String::new();
        let mut i = 0;
        while s.len() < n {
            s.push_str(&format!(
                "{{\"id\":{i},\"symbol\":\"BTC-USD\",\"price\":\"{}.{}\",\"side\":\"buy\"}},",
                40000 + i % 97,
                i % 10
            ));
            i += 1;
        }
        s.truncate(n);
        s.into_bytes()
    }

    fn inflate_all(inf: &mut Inflater, data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        inf.inflate(data, &mut out, limit)?;
        inf.finish(&mut out, limit)?;
        Ok(out)
    }

    #[test]
    #[cfg_attr(miri, ignore = "megabytes through zlib-rs or tens of thousands of frames: minutes interpreted")]
    fn round_trip_every_window_and_takeover() {
        for bits in 9..=15u8 {
            for no_takeover in [false, true] {
                let mut def = Deflater::new(bits, no_takeover, 0);
                let mut inf = Inflater::new(bits, no_takeover);
                for (i, size) in [0usize, 1, 100, 5000, 70_000, 300].into_iter().enumerate() {
                    let msg = json(size + i);
                    let mut wire = Vec::new();
                    if def.compress(&msg, &mut wire) {
                        assert!(wire.len() < msg.len().max(1));
                        assert_eq!(inflate_all(&mut inf, &wire, 1 << 20).unwrap(), msg, "bits {bits}");
                    }
                    if no_takeover {
                        assert!(!def.has_context() && !inf.has_context(), "context kept without takeover");
                    }
                }
            }
        }
    }

    #[test]
    fn contexts_are_lazy() {
        let mut def = Deflater::new(15, false, 10);
        let inf = Inflater::new(15, false);
        assert!(!def.has_context() && !inf.has_context());
        assert!(!def.wants(9));
        assert!(def.wants(10));
        let mut out = Vec::new();
        assert!(def.compress(&json(1000), &mut out));
        assert!(def.has_context());
        // A peer that limits us to 8 bits gets nothing compressed.
        assert!(!Deflater::new(8, false, 0).wants(1 << 20));
    }

    #[test]
    fn takeover_makes_repeats_cheaper() {
        let msg = json(400);
        let mut def = Deflater::new(15, false, 0);
        let mut first = Vec::new();
        let mut second = Vec::new();
        assert!(def.compress(&msg, &mut first));
        assert!(def.compress(&msg, &mut second));
        assert!(second.len() < first.len() / 4, "{} then {}", first.len(), second.len());
        let mut inf = Inflater::new(15, false);
        assert_eq!(inflate_all(&mut inf, &first, 1000).unwrap(), msg);
        assert_eq!(inflate_all(&mut inf, &second, 1000).unwrap(), msg);
    }

    #[test]
    fn incompressible_data_is_refused_and_the_context_dropped() {
        let mut seed = 1u32;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        let mut def = Deflater::new(15, false, 0);
        let mut out = vec![1, 2, 3];
        assert!(!def.compress(&noise, &mut out));
        assert_eq!(out, vec![1, 2, 3]);
        assert!(!def.has_context());
    }

    #[test]
    fn empty_message_is_one_zero_byte() {
        // RFC 7692 section 7.2.3.6: 0x00. One byte more than none, so
        // an empty message goes out uncompressed.
        let mut def = Deflater::new(15, false, 0);
        let mut out = Vec::new();
        assert!(!def.compress(b"", &mut out));
        assert!(out.is_empty());
        let mut inf = Inflater::new(15, false);
        assert_eq!(inflate_all(&mut inf, &[0x00], 10).unwrap(), b"");
        // And the RFC's "Hello" examples (7.2.3.1, 7.2.3.2).
        // No byte at all: empty too, and the context is not disturbed.
        assert_eq!(inflate_all(&mut inf, &[], 10).unwrap(), b"");
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate_all(&mut inf, &hello, 10).unwrap(), b"Hello");
        assert_eq!(inflate_all(&mut inf, &[0xf2, 0x00, 0x11, 0x00, 0x00], 10).unwrap(), b"Hello");
    }

    #[test]
    #[cfg_attr(miri, ignore = "megabytes through zlib-rs or tens of thousands of frames: minutes interpreted")]
    fn inflated_size_is_bounded_by_the_limit() {
        // 16 MiB of zeros compresses to a few KiB.
        let zeros = vec![0u8; 16 << 20];
        let mut def = Deflater::new(15, true, 0);
        let mut bomb = Vec::new();
        assert!(def.compress(&zeros, &mut bomb));
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let mut inf = Inflater::new(15, false);
        let mut out = Vec::new();
        let limit = 100_000;
        assert_eq!(inf.inflate(&bomb, &mut out, limit), Err(InflateError::TooBig));
        assert!(out.capacity() <= limit + 1, "held {} bytes", out.capacity());
        // Exactly at the limit is fine.
        let mut inf = Inflater::new(15, false);
        let mut def = Deflater::new(15, true, 0);
        let mut wire = Vec::new();
        assert!(def.compress(&zeros[..limit], &mut wire));
        assert_eq!(inflate_all(&mut inf, &wire, limit).unwrap().len(), limit);
    }

    #[test]
    fn corrupt_data_and_final_blocks() {
        let mut inf = Inflater::new(15, false);
        let mut out = Vec::new();
        assert!(matches!(inf.inflate(&[0xff, 0xff, 0xff], &mut out, 100), Err(InflateError::Corrupt(_))));
        // A stream ended with a final block (BFINAL): the next message
        // starts a new stream.
        let mut inf = Inflater::new(15, false);
        let mut full = Vec::with_capacity(100);
        Compress::new(Compression::default(), false)
            .compress_vec(b"final block", &mut full, FlushCompress::Finish)
            .unwrap();
        assert_eq!(inflate_all(&mut inf, &full, 100).unwrap(), b"final block");
        assert_eq!(inflate_all(&mut inf, &full, 100).unwrap(), b"final block");
    }
}
