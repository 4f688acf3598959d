//! The SIM-access commands: `AT+CSIM` (an APDU on any channel) and `AT+CCHO` / `AT+CGLA` /
//! `AT+CCHC` (logical channels opened, used and closed by the modem).

use super::ModemOptions;
use super::at::{Answer, Param, cme, parse_params, strict_hex};
use super::server::Server;
use crate::shared::CardSlot;

/// Puts logical channel `ch` (0..=19) into a host's CLA byte, keeping the class
/// (inter-industry / proprietary), chaining and secure-messaging indication.
pub fn cla_on_channel(cla: u8, ch: u8) -> u8 {
    let further = cla & 0x40 != 0;
    let prop = cla & 0x80;
    let chain = cla & 0x10;
    if ch <= 3 {
        if further {
            let sm = if cla & 0x20 != 0 { 0x08 } else { 0 };
            prop | chain | sm | ch
        } else {
            (cla & 0xFC) | ch
        }
    } else {
        let sm = if further {
            cla & 0x20
        } else if cla & 0x0C != 0 {
            0x20
        } else {
            0
        };
        prop | 0x40 | sm | chain | ((ch - 4) & 0x0F)
    }
}

/// Where the `hex_session_ids` quirk starts counting, as in Sierra's `+CCHO: 00000000038aa32f`.
const HEX_SESSION_BASE: u64 = 0x038a_a32f;

/// On-card key generation, slow on a real card (the `slow_keygen_ms` quirk): GENERATE KEY PAIR,
/// and STORE DATA of a "create ECC key pair" object (tag `71`), which generates a persistent key.
const INS_GENERATE_KEY_PAIR: u8 = 0xB9;
const INS_STORE_DATA: u8 = 0xE2;
const TAG_CREATE_KEY_PAIR: u8 = 0x71;

/// A session id as `AT+CCHO` writes it.
fn session_id_text(sid: u64, opts: &ModemOptions) -> String {
    if opts.hex_session_ids {
        format!("{:016x}", HEX_SESSION_BASE + sid)
    } else {
        sid.to_string()
    }
}

/// A session id parameter of `AT+CGLA`/`AT+CCHC`: decimal, or with the `hex_session_ids` quirk
/// exactly the 16 hex digits `AT+CCHO` wrote (leading zeros included; the server upper-cases
/// command lines, so case is not compared).
fn parse_session_id(param: &str, opts: &ModemOptions) -> Option<u64> {
    let param = param.trim();
    if opts.hex_session_ids {
        if param.len() != 16 || !param.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return u64::from_str_radix(param, 16)
            .ok()?
            .checked_sub(HEX_SESSION_BASE);
    }
    match parse_params(param).as_deref() {
        Some([Param::Int(sid)]) => Some(*sid),
        _ => None,
    }
}

/// The logical channel a host's CLA byte names (0 for the basic channel).
fn channel_of_cla(cla: u8) -> u8 {
    if cla & 0x40 != 0 {
        4 + (cla & 0x0F)
    } else {
        cla & 0x03
    }
}

impl<C: CardSlot> Server<C> {
    /// Forgets the session table when the SIM was power-cycled (reset, removed) since we last
    /// looked: a modem that resets its SIM knows every channel is gone.
    fn sync_presence(&mut self) -> bool {
        if self.control.card_power_cycled(&mut self.seen_epoch) {
            self.sessions.clear();
            self.sessions_changed();
        }
        self.card().is_present()
    }

    /// Brings the open-session counters up to date with the session table.
    fn sessions_changed(&self) {
        self.control.record_open_sessions(self.sessions.len());
    }

    fn busy(&mut self, opts: &ModemOptions) -> bool {
        self.control
            .sim_busy(opts.busy_every, &mut self.busy_counter)
    }

    pub(super) fn csim(&mut self, params: &str, opts: &ModemOptions) -> Answer {
        let apdu = match parse_params(params).as_deref() {
            Some([Param::Int(len), Param::Str(hex)]) if *len == hex.len() as u64 => strict_hex(hex),
            _ => None,
        };
        let Some(apdu) = apdu else {
            return Answer::cme(cme::INCORRECT_PARAMETERS);
        };
        if !self.sync_presence() {
            return Answer::cme(cme::SIM_NOT_INSERTED);
        }
        if opts.csim_basic_only && channel_of_cla(apdu[0]) != 0 {
            return Answer::error();
        }
        if self.busy(opts) {
            return Answer::cme(cme::SIM_BUSY);
        }
        let r = hex::encode_upper(self.card().transmit(&apdu));
        let mut answer = Answer::info(format!("+CSIM: {},\"{r}\"", r.len()));
        answer.late_ms = late_ms(&apdu, opts);
        answer
    }

    pub(super) fn ccho(&mut self, params: &str, opts: &ModemOptions) -> Answer {
        let aid = match parse_params(params).as_deref() {
            Some([Param::Str(hex)]) if hex.len() <= 32 => strict_hex(hex),
            _ => None,
        };
        let Some(aid) = aid else {
            return Answer::cme(cme::INCORRECT_PARAMETERS);
        };
        if !self.sync_presence() {
            return Answer::cme(cme::SIM_NOT_INSERTED);
        }
        let card = self.card();
        let r = card.transmit(&[0x00, 0x70, 0x00, 0x00, 0x01]);
        let ch = match r.as_slice() {
            [ch, 0x90, 0x00] => *ch,
            [0x6A, 0x81] => return Answer::cme(cme::NOT_ALLOWED),
            _ => return Answer::cme(cme::UNKNOWN),
        };
        let Some(cla) = crate::card::cla_for_channel(ch, false) else {
            card.transmit(&[0x00, 0x70, 0x80, ch]);
            return Answer::cme(cme::UNKNOWN);
        };
        let mut select = vec![cla, 0xA4, 0x04, 0x00, aid.len() as u8];
        select.extend_from_slice(&aid);
        let r = card.transmit(&select);
        match r.as_slice() {
            [.., 0x90, 0x00] | [.., 0x61, _] => {}
            other => {
                card.transmit(&[0x00, 0x70, 0x80, ch]);
                return Answer::cme(if other.ends_with(&[0x6A, 0x82]) {
                    cme::NOT_FOUND
                } else {
                    cme::UNKNOWN
                });
            }
        }
        let sid = self.next_session;
        self.next_session += 1;
        self.sessions.insert(sid, ch);
        self.sessions_changed();
        let id = session_id_text(sid, opts);
        Answer::info(if opts.bare_ccho {
            id
        } else {
            format!("+CCHO: {id}")
        })
    }

    pub(super) fn cgla(&mut self, params: &str, opts: &ModemOptions) -> Answer {
        let (sid, rest) = params.split_once(',').unwrap_or((params, ""));
        let parsed = match (parse_session_id(sid, opts), parse_params(rest).as_deref()) {
            (Some(sid), Some([Param::Int(len), Param::Str(hex)])) if *len == hex.len() as u64 => {
                strict_hex(hex).map(|a| (sid, a))
            }
            _ => None,
        };
        let Some((sid, mut apdu)) = parsed else {
            return Answer::cme(cme::INCORRECT_PARAMETERS);
        };
        if !self.sync_presence() {
            return Answer::cme(cme::SIM_NOT_INSERTED);
        }
        let Some(&ch) = self.sessions.get(&sid) else {
            return Answer::cme(cme::INVALID_INDEX);
        };
        if self.busy(opts) {
            return Answer::cme(cme::SIM_BUSY);
        }
        apdu[0] = cla_on_channel(apdu[0], ch);
        let r = hex::encode_upper(self.card().transmit(&apdu));
        let mut answer = Answer::info(format!("+CGLA: {},\"{r}\"", r.len()));
        answer.late_ms = late_ms(&apdu, opts);
        answer
    }

    pub(super) fn cchc(&mut self, params: &str, opts: &ModemOptions) -> Answer {
        let Some(sid) = parse_session_id(params, opts) else {
            return Answer::cme(cme::INCORRECT_PARAMETERS);
        };
        if !self.sync_presence() {
            return Answer::cme(cme::SIM_NOT_INSERTED);
        }
        let Some(ch) = self.sessions.remove(&sid) else {
            return Answer::cme(cme::INVALID_INDEX);
        };
        self.sessions_changed();
        self.card().transmit(&[0x00, 0x70, 0x80, ch]);
        Answer::ok()
    }
}

/// How late the `slow_keygen_ms` quirk makes the answer to `apdu`.
fn late_ms(apdu: &[u8], opts: &ModemOptions) -> u64 {
    match (apdu.get(1), apdu.get(5)) {
        (Some(&INS_GENERATE_KEY_PAIR), _) => opts.slow_keygen_ms,
        (Some(&INS_STORE_DATA), Some(&TAG_CREATE_KEY_PAIR)) => opts.slow_keygen_ms,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cla_mapping() {
        assert_eq!(cla_on_channel(0x00, 1), 0x01);
        assert_eq!(cla_on_channel(0x80, 3), 0x83);
        assert_eq!(cla_on_channel(0x81, 2), 0x82);
        assert_eq!(cla_on_channel(0x00, 4), 0x40);
        assert_eq!(cla_on_channel(0x80, 19), 0xCF);
        assert_eq!(cla_on_channel(0x40, 1), 0x01);
        assert_eq!(cla_on_channel(0xC5, 0), 0x80);
        assert_eq!(cla_on_channel(0x10, 5), 0x51);
    }

    #[test]
    fn hex_session_ids_go_back_exactly_as_written() {
        let opts = ModemOptions {
            hex_session_ids: true,
            ..Default::default()
        };
        assert_eq!(session_id_text(0, &opts), "00000000038aa32f");
        assert_eq!(parse_session_id("00000000038AA330", &opts), Some(1));
        assert_eq!(
            parse_session_id("38aa330", &opts),
            None,
            "leading zeros dropped"
        );
        assert_eq!(
            parse_session_id("59417392", &opts),
            None,
            "as a decimal number"
        );
        assert_eq!(parse_session_id("3", &ModemOptions::default()), Some(3));
        assert_eq!(channel_of_cla(0x81), 1);
        assert_eq!(channel_of_cla(0x41), 5);
        assert_eq!(channel_of_cla(0x80), 0);
    }
}
