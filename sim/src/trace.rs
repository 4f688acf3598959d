//! APDU trace lines (`iotsafe-sim apdu`) that never show secrets: the data of COMPUTE PRF
//! (`48`) and COMPUTE HKDF (`4A`) commands (explicit secrets `D1`/`D4`) and their answers
//! (derived keys), including answers fetched with GET RESPONSE, are replaced by their length.

/// INS bytes whose command data and response data are redacted.
pub const SECRET_INS: [u8; 2] = [0x48, 0x4A];

/// Formats a command/response trace, redacting secret-bearing data.
#[derive(Debug, Default, Clone)]
pub struct Tracer {
    /// The last command was a secret one (or a GET RESPONSE continuing it).
    secret: bool,
}

impl Tracer {
    /// A tracer with no history.
    pub fn new() -> Tracer {
        Tracer::default()
    }

    /// The trace text of a command (hex, or header ‖ `<n bytes redacted>` ‖ Le).
    pub fn command(&mut self, apdu: &[u8]) -> String {
        let ins = apdu.get(1).copied();
        match ins {
            Some(i) if SECRET_INS.contains(&i) => self.secret = true,
            Some(0xC0) => {}
            _ => self.secret = false,
        }
        if !ins.is_some_and(|i| SECRET_INS.contains(&i)) || apdu.len() <= 5 {
            return hex::encode_upper(apdu);
        }
        let lc = apdu[4] as usize;
        let (data_len, le) = if apdu.len() == 5 + lc {
            (lc, None)
        } else if apdu.len() == 6 + lc {
            (lc, apdu.last().copied())
        } else {
            return format!(
                "{} <{} bytes redacted>",
                hex::encode_upper(&apdu[..4]),
                apdu.len() - 4
            );
        };
        let mut s = format!(
            "{} <{data_len} bytes redacted>",
            hex::encode_upper(&apdu[..5])
        );
        if let Some(le) = le {
            s.push_str(&format!(" {le:02X}"));
        }
        s
    }

    /// The trace text of the response to the last command given to [`Tracer::command`].
    pub fn response(&self, resp: &[u8]) -> String {
        if !self.secret || resp.len() <= 2 {
            return hex::encode_upper(resp);
        }
        let (data, sw) = resp.split_at(resp.len() - 2);
        format!("<{} bytes redacted> {}", data.len(), hex::encode_upper(sw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::decode_hex as h;

    #[test]
    fn redacts_prf_hkdf_and_their_get_response() {
        let mut t = Tracer::new();
        assert_eq!(t.command(&h("80CB000000").unwrap()), "80CB000000");
        assert_eq!(t.response(&h("01029000").unwrap()), "01029000");
        let cmd = h("804800000B D103AABBCC D201FF D30120 00").unwrap();
        let line = t.command(&cmd);
        assert_eq!(line, "804800000B <11 bytes redacted> 00");
        assert!(!line.contains("AABBCC"));
        assert_eq!(t.response(&h("6120").unwrap()), "6120");
        assert_eq!(t.command(&h("80C0000020").unwrap()), "80C0000020");
        assert_eq!(
            t.response(&[vec![0x5A; 32], vec![0x90, 0x00]].concat()),
            "<32 bytes redacted> 9000"
        );
        assert_eq!(t.command(&h("804A0100").unwrap()), "804A0100");
        assert_eq!(
            t.command(&h("804A010003 D1").unwrap()),
            "804A0100 <2 bytes redacted>"
        );
        // Another command ends the redaction.
        t.command(&h("80CB000000").unwrap());
        assert_eq!(t.response(&h("01029000").unwrap()), "01029000");
    }
}
