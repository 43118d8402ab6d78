//! Extension negotiation: the permessage-deflate offer (RFC 7692 section
//! 7.1) and strict checks on the server's Sec-WebSocket-Extensions answer.

use crate::proto::deflate::MIN_DEFLATE_WINDOW_BITS;

/// What the permessage-deflate offer (RFC 7692) asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressionOptions {
    /// Off: no offer, and an extension in the answer fails the connection.
    pub enabled: bool,
    /// Ask to compress each message on its own (client_no_context_takeover).
    pub client_no_context_takeover: bool,
    /// Ask the server to do the same (server_no_context_takeover).
    pub server_no_context_takeover: bool,
    /// 8..=15, or None: `client_max_window_bits` without a value, which lets
    /// the server choose.
    pub client_max_window_bits: Option<u8>,
    /// 8..=15, or None: not asked for.
    pub server_max_window_bits: Option<u8>,
    /// Messages shorter than this many bytes go out uncompressed.
    pub threshold: u64,
}

/// Messages shorter than this go out uncompressed by default: below it,
/// deflate saves a few bytes at best (see README.md, Compression).
pub(crate) const DEFAULT_COMPRESSION_THRESHOLD: u64 = 32;

impl Default for CompressionOptions {
    fn default() -> Self {
        // As browsers offer: "permessage-deflate; client_max_window_bits".
        CompressionOptions {
            enabled: true,
            client_no_context_takeover: false,
            server_no_context_takeover: false,
            client_max_window_bits: None,
            server_max_window_bits: None,
            threshold: DEFAULT_COMPRESSION_THRESHOLD,
        }
    }
}

pub(crate) const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// What client and server agreed on for permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server starts each message with an empty context.
    pub server_no_context_takeover: bool,
    /// We start each message with an empty context.
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window is at most 2^bits (8..=15).
    pub server_max_window_bits: u8,
    /// Ours is at most 2^bits (8..=15).
    pub client_max_window_bits: u8,
}

/// A window size as offered: zlib cannot deflate with 8 bits, so a request
/// for 8 is sent as 9.
fn offered_bits(bits: u8) -> u8 {
    bits.max(MIN_DEFLATE_WINDOW_BITS)
}

/// The Sec-WebSocket-Extensions value to send; None when compression is off.
pub fn offer(c: &CompressionOptions) -> Option<String> {
    if !c.enabled {
        return None;
    }
    let mut s = String::from(PERMESSAGE_DEFLATE);
    if c.client_no_context_takeover {
        s.push_str("; client_no_context_takeover");
    }
    if c.server_no_context_takeover {
        s.push_str("; server_no_context_takeover");
    }
    if let Some(bits) = c.server_max_window_bits {
        s.push_str(&format!("; server_max_window_bits={}", offered_bits(bits)));
    }
    match c.client_max_window_bits {
        None => s.push_str("; client_max_window_bits"),
        Some(bits) => s.push_str(&format!("; client_max_window_bits={}", offered_bits(bits))),
    }
    Some(s)
}

/// One extension of a header value: its name and parameters.
type Element = (String, Vec<(String, Option<String>)>);

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// RFC 6455 section 9.1 grammar: `ext *( ";" param [ "=" (token |
/// quoted-string) ] )`, comma-separated, optional whitespace around.
/// Empty list elements are skipped (RFC 9110 section 5.6.1).
fn parse_list(value: &str) -> Result<Vec<Element>, String> {
    let mut chars = value.chars().peekable();
    let mut out: Vec<Element> = Vec::new();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
    };
    let token = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        let mut t = String::new();
        while let Some(c) = chars.peek().copied().filter(|c| is_tchar(*c)) {
            t.push(c);
            chars.next();
        }
        t
    };
    loop {
        skip_ws(&mut chars);
        match chars.peek() {
            None => return Ok(out),
            Some(',') => {
                chars.next();
                continue;
            }
            Some(_) => {}
        }
        let name = token(&mut chars);
        if name.is_empty() {
            return Err("an extension name is not a token".into());
        }
        let mut params = Vec::new();
        loop {
            skip_ws(&mut chars);
            match chars.next() {
                None | Some(',') => break,
                Some(';') => {}
                Some(c) => return Err(format!("unexpected {c:?} after {name}")),
            }
            skip_ws(&mut chars);
            let param = token(&mut chars);
            if param.is_empty() {
                return Err(format!("a parameter of {name} is not a token"));
            }
            skip_ws(&mut chars);
            let mut value = None;
            if chars.peek() == Some(&'=') {
                chars.next();
                skip_ws(&mut chars);
                if chars.peek() == Some(&'"') {
                    chars.next();
                    let mut v = String::new();
                    loop {
                        match chars.next() {
                            None => return Err(format!("unterminated quoted value of {param}")),
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some(c) => v.push(c),
                                None => return Err(format!("unterminated quoted value of {param}")),
                            },
                            Some(c) => v.push(c),
                        }
                    }
                    value = Some(v);
                } else {
                    let v = token(&mut chars);
                    if v.is_empty() {
                        return Err(format!("parameter {param} has an empty value"));
                    }
                    value = Some(v);
                }
            }
            params.push((param, value));
        }
        out.push((name, params));
    }
}

/// A window size in an answer: a plain decimal number 8..=15 (RFC 7692
/// section 7.1.2: no sign, no leading zero).
fn parse_bits(param: &str, value: Option<&str>) -> Result<u8, String> {
    let value = value.ok_or_else(|| format!("{param} has no value"))?;
    let plain =
        !value.is_empty() && value.len() <= 2 && value.bytes().all(|b| b.is_ascii_digit()) && !value.starts_with('0');
    match value.parse::<u8>() {
        Ok(bits @ 8..=15) if plain => Ok(bits),
        _ if plain => Err(format!("{param}={value} is out of range 8..15")),
        _ => Err(format!("{param}={value:?} is not a plain number")),
    }
}

/// Checks the server's Sec-WebSocket-Extensions values against what we
/// offered. `Ok(None)`: no extension in use.
pub fn accept(values: &[&str], offer: &CompressionOptions) -> Result<Option<DeflateParams>, String> {
    let what = || format!("server's Sec-WebSocket-Extensions {:?}", values.join(", "));
    let mut elements = Vec::new();
    for v in values {
        elements.extend(parse_list(v).map_err(|e| format!("{}: {e}", what()))?);
    }
    let mut agreed: Option<DeflateParams> = None;
    for (name, params) in elements {
        // RFC 6455 4.1 step 6: only what was offered may be used.
        if !offer.enabled || !name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
            return Err(format!("server chose extension {name:?}, which was not offered"));
        }
        if agreed.is_some() {
            return Err(format!("{}: permessage-deflate accepted twice", what()));
        }
        agreed = Some(accept_deflate(&params, offer).map_err(|e| format!("{}: {e}", what()))?);
    }
    Ok(agreed)
}

fn accept_deflate(params: &[(String, Option<String>)], offer: &CompressionOptions) -> Result<DeflateParams, String> {
    let mut seen: Vec<String> = Vec::new();
    let mut server_no_context_takeover = false;
    let mut client_no_context_takeover = false;
    let mut server_bits = None;
    let mut client_bits = None;
    for (name, value) in params {
        let lower = name.to_ascii_lowercase();
        if seen.contains(&lower) {
            return Err(format!("parameter {name} is repeated"));
        }
        seen.push(lower.clone());
        let no_value = || match value {
            None => Ok(true),
            Some(v) => Err(format!("parameter {name} takes no value (got {v:?})")),
        };
        match lower.as_str() {
            "server_no_context_takeover" => server_no_context_takeover = no_value()?,
            "client_no_context_takeover" => client_no_context_takeover = no_value()?,
            "server_max_window_bits" => {
                let bits = parse_bits(name, value.as_deref())?;
                if let Some(asked) = offer.server_max_window_bits.map(offered_bits) {
                    if bits > asked {
                        return Err(format!("server_max_window_bits={bits} is larger than the {asked} offered"));
                    }
                }
                server_bits = Some(bits);
            }
            "client_max_window_bits" => {
                // Offered without a value: the server may pick any size;
                // with one: at most that (RFC 7692 section 7.1.2.2).
                let bits = parse_bits(name, value.as_deref())?;
                if let Some(offered) = offer.client_max_window_bits.map(offered_bits) {
                    if bits > offered {
                        return Err(format!("client_max_window_bits={bits} is larger than the {offered} offered"));
                    }
                }
                client_bits = Some(bits);
            }
            _ => return Err(format!("unknown parameter {name}")),
        }
    }
    // What a server that accepts the offer must answer (RFC 7692 7.1.1.1, 7.1.2.1).
    if offer.server_no_context_takeover && !server_no_context_takeover {
        return Err("server_no_context_takeover was offered but the answer lacks it".into());
    }
    if offer.server_max_window_bits.is_some() && server_bits.is_none() {
        return Err("server_max_window_bits was offered but the answer lacks it".into());
    }
    let ours = offer.client_max_window_bits.map_or(15, offered_bits);
    Ok(DeflateParams {
        server_no_context_takeover,
        client_no_context_takeover: client_no_context_takeover || offer.client_no_context_takeover,
        server_max_window_bits: server_bits.unwrap_or(15),
        client_max_window_bits: client_bits.map_or(ours, |b| b.min(ours)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_offer() -> CompressionOptions {
        CompressionOptions::default()
    }

    #[test]
    fn offers() {
        assert_eq!(offer(&default_offer()).unwrap(), "permessage-deflate; client_max_window_bits");
        let mut c = default_offer();
        c.enabled = false;
        assert_eq!(offer(&c), None);
        let c = CompressionOptions {
            client_no_context_takeover: true,
            server_no_context_takeover: true,
            client_max_window_bits: Some(8),
            server_max_window_bits: Some(8),
            ..default_offer()
        };
        assert_eq!(
            offer(&c).unwrap(),
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover; \
             server_max_window_bits=9; client_max_window_bits=9"
        );
    }

    #[test]
    fn accepted_answers() {
        let o = default_offer();
        let p = |v: &str| accept(&[v], &o).unwrap().unwrap();
        assert_eq!(
            p("permessage-deflate"),
            DeflateParams {
                server_no_context_takeover: false,
                client_no_context_takeover: false,
                server_max_window_bits: 15,
                client_max_window_bits: 15
            }
        );
        let all = p("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=8");
        assert_eq!(
            all,
            DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 10,
                client_max_window_bits: 8
            }
        );
        assert_eq!(p("Permessage-Deflate ;client_max_window_bits = \"12\"").client_max_window_bits, 12);
        assert_eq!(accept(&[], &o), Ok(None));
        assert_eq!(accept(&[""], &o), Ok(None));
        assert_eq!(accept(&["", " , "], &o), Ok(None));
        // Our own no-takeover request holds even if the answer omits it.
        let c = CompressionOptions { client_no_context_takeover: true, client_max_window_bits: Some(11), ..o };
        let got = accept(&["permessage-deflate"], &c).unwrap().unwrap();
        assert!(got.client_no_context_takeover);
        assert_eq!(got.client_max_window_bits, 11);
    }

    #[test]
    fn refused_answers() {
        let o = default_offer();
        for (answer, fault) in [
            ("permessage-deflate; foo", "unknown parameter foo"),
            ("permessage-deflate; foo=1", "unknown parameter foo"),
            ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", "repeated"),
            ("permessage-deflate; client_max_window_bits=10; client_max_window_bits=10", "repeated"),
            ("permessage-deflate; server_max_window_bits=7", "out of range"),
            ("permessage-deflate; server_max_window_bits=16", "out of range"),
            ("permessage-deflate; client_max_window_bits=0", "not a plain number"),
            ("permessage-deflate; server_max_window_bits=09", "not a plain number"),
            ("permessage-deflate; server_max_window_bits=+9", "not a plain number"),
            ("permessage-deflate; server_max_window_bits=9.0", "not a plain number"),
            ("permessage-deflate; server_max_window_bits=abc", "not a plain number"),
            ("permessage-deflate; server_max_window_bits=100", "not a plain number"),
            ("permessage-deflate; server_max_window_bits", "has no value"),
            ("permessage-deflate; client_max_window_bits", "has no value"),
            ("permessage-deflate; server_no_context_takeover=1", "takes no value"),
            ("permessage-deflate, permessage-deflate", "accepted twice"),
            ("permessage-deflate; client_max_window_bits=\"10", "unterminated"),
            ("permessage-deflate; ", "not a token"),
            ("x-webkit-deflate-frame", "not offered"),
            ("permessage-deflate, foo", "not offered"),
        ] {
            let e = accept(&[answer], &o).unwrap_err();
            assert!(e.contains(fault), "{answer}: {e}");
        }
        let e = accept(&["permessage-deflate", "permessage-deflate"], &o).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        // client_max_window_bits in the answer when we offered none.
        let c = CompressionOptions { client_max_window_bits: Some(10), ..default_offer() };
        assert!(accept(&["permessage-deflate; client_max_window_bits=11"], &c).unwrap_err().contains("larger"));
        let c = CompressionOptions { server_max_window_bits: Some(10), ..default_offer() };
        assert!(accept(&["permessage-deflate; server_max_window_bits=11"], &c).unwrap_err().contains("larger"));
        assert!(accept(&["permessage-deflate"], &c).unwrap_err().contains("lacks"));
        let c = CompressionOptions { server_no_context_takeover: true, ..default_offer() };
        assert!(accept(&["permessage-deflate"], &c).unwrap_err().contains("lacks"));
        // Compression off: nothing was offered, so nothing may be chosen.
        let off = CompressionOptions { enabled: false, ..default_offer() };
        assert!(accept(&["permessage-deflate"], &off).unwrap_err().contains("not offered"));
    }
}
