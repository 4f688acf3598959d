//! AT command syntax: final results and `+CME ERROR` codes, answers, parameters, framing.

/// `+CME ERROR` codes used by the modem (3GPP TS 27.007 §9.2.1).
pub mod cme {
    /// Operation not allowed (CCHO: no free logical channel, the card answered `6A81`).
    /// 27.007 has no code of its own for it; modems report the refusal as a generic one
    /// (MBIM and QMI have `NoLogicalChannels` / `InsufficientResources`).
    pub const NOT_ALLOWED: u16 = 3;
    /// SIM not inserted (card removed).
    pub const SIM_NOT_INSERTED: u16 = 10;
    /// SIM failure.
    pub const SIM_FAILURE: u16 = 13;
    /// SIM busy (the `busy_every` quirk).
    pub const SIM_BUSY: u16 = 14;
    /// Invalid index (CGLA/CCHC: unknown session id).
    pub const INVALID_INDEX: u16 = 21;
    /// Not found (CCHO: the AID cannot be selected).
    pub const NOT_FOUND: u16 = 22;
    /// Incorrect parameters (bad syntax, bad hex, length mismatch).
    pub const INCORRECT_PARAMETERS: u16 = 50;
    /// Unknown (the card answered something unexpected).
    pub const UNKNOWN: u16 = 100;

    /// The verbose text (`AT+CMEE=2`).
    pub fn text(code: u16) -> &'static str {
        match code {
            NOT_ALLOWED => "operation not allowed",
            SIM_NOT_INSERTED => "SIM not inserted",
            SIM_FAILURE => "SIM failure",
            SIM_BUSY => "SIM busy",
            INVALID_INDEX => "invalid index",
            NOT_FOUND => "not found",
            INCORRECT_PARAMETERS => "incorrect parameters",
            _ => "unknown",
        }
    }
}

/// The final result of a command.
pub(super) enum Final {
    Ok,
    Error,
    Cme(u16),
}

pub(super) struct Answer {
    pub(super) info: Vec<String>,
    pub(super) fin: Final,
    /// How long the SIM took beyond the usual (the `slow_keygen_ms` quirk), in milliseconds.
    pub(super) late_ms: u64,
}

impl Answer {
    pub(super) fn ok() -> Answer {
        Answer {
            info: Vec::new(),
            fin: Final::Ok,
            late_ms: 0,
        }
    }
    pub(super) fn error() -> Answer {
        Answer {
            info: Vec::new(),
            fin: Final::Error,
            late_ms: 0,
        }
    }
    pub(super) fn cme(code: u16) -> Answer {
        Answer {
            info: Vec::new(),
            fin: Final::Cme(code),
            late_ms: 0,
        }
    }
    pub(super) fn info(line: String) -> Answer {
        Answer {
            info: vec![line],
            fin: Final::Ok,
            late_ms: 0,
        }
    }
}

/// A parsed command parameter.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Param {
    Int(u64),
    Str(String),
}

/// Splits `a,"b,c",d` at commas outside quotes. Strings must be quoted, numbers decimal.
pub(super) fn parse_params(s: &str) -> Option<Vec<Param>> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| {
            let p = p.trim();
            if let Some(inner) = p.strip_prefix('"') {
                let inner = inner.strip_suffix('"')?;
                if inner.contains('"') {
                    return None;
                }
                Some(Param::Str(inner.to_string()))
            } else if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse().ok().map(Param::Int)
            } else {
                None
            }
        })
        .collect()
}

/// Decodes the hex of a CSIM/CGLA/CCHO parameter: non-empty, even, hex digits only.
pub(super) fn strict_hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    hex::decode(s).ok()
}

/// Appends `\r\n<line>\r\n`.
pub(super) fn frame(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        assert_eq!(
            parse_params(r#"10, "0070000001""#),
            Some(vec![Param::Int(10), Param::Str("0070000001".into())])
        );
        assert_eq!(
            parse_params(r#""a,b",3"#),
            Some(vec![Param::Str("a,b".into()), Param::Int(3)])
        );
        assert_eq!(parse_params(r#"10,00A0"#), None);
        assert_eq!(parse_params(r#"10,"00"#), None);
        assert_eq!(parse_params(r#"-1"#), None);
        assert_eq!(parse_params(""), None);
        assert_eq!(parse_params("99999999999999999999999"), None);
    }
}
