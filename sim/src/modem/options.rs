//! What the modem offers and how it misbehaves ([`ModemOptions`], settable by name), and
//! its counters ([`ModemStats`]).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Which SIM-access commands the modem offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtDialect {
    /// `AT+CSIM` only (`+CCHO`/`+CGLA`/`+CCHC` answer `ERROR`).
    Csim,
    /// Logical-channel commands only (`+CSIM` answers `ERROR`).
    Cgla,
    /// All of them.
    #[default]
    Both,
}

impl AtDialect {
    pub(super) fn csim(self) -> bool {
        matches!(self, AtDialect::Csim | AtDialect::Both)
    }
    pub(super) fn cgla(self) -> bool {
        matches!(self, AtDialect::Cgla | AtDialect::Both)
    }
    /// `csim`, `cgla` or `both`.
    pub fn name(self) -> &'static str {
        match self {
            AtDialect::Csim => "csim",
            AtDialect::Cgla => "cgla",
            AtDialect::Both => "both",
        }
    }
}

impl std::str::FromStr for AtDialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "csim" => Ok(AtDialect::Csim),
            "cgla" => Ok(AtDialect::Cgla),
            "both" => Ok(AtDialect::Both),
            _ => Err(format!(
                "unknown AT dialect {s:?} (expected csim, cgla or both)"
            )),
        }
    }
}

/// Modem behaviour, including the injectable quirks. All fields can be changed while the
/// modem runs ([`ModemControl::update`](super::ModemControl::update),
/// [`ModemControl::set_quirk`](super::ModemControl::set_quirk)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemOptions {
    /// Offered SIM-access commands.
    pub at: AtDialect,
    /// Echo state: the command line is echoed back (with a CR) before the answer. This is
    /// the live state: `ATE0`/`ATE1` change it.
    pub echo: bool,
    /// Interleave unsolicited result codes (`+CREG: 1`, `RING`, `^SYSSTART`, `+CGREG: 5`,
    /// …) before answers and between the information line and the final result.
    pub urc: bool,
    /// Write every answer in small chunks (1–6 bytes, splitting inside lines and CR LF)
    /// with 1–3 ms pauses.
    pub split: bool,
    /// Delay before answering (after the echo), in milliseconds.
    pub delay_ms: u64,
    /// Every Nth CSIM/CGLA answers `+CME ERROR: 14` (SIM busy) without reaching the card;
    /// 0 = off.
    pub busy_every: u32,
    /// A command line longer than this many characters answers `ERROR`; 0 = no limit.
    pub max_command_len: usize,
    /// Hung: every command line is read and dropped, nothing is answered or echoed.
    pub hang: bool,
    /// Answer this many more command lines, then hang; 0 = off (counts down while running).
    pub hang_after: u32,
    /// Interleave noise lines (`+XYZ: noise`, `\xFF\xFE`, …) like the URCs; never a final
    /// result or an information line of the command in progress.
    pub garbage: bool,
    /// A modem that cannot echo: `ATE1` answers `OK` and changes nothing (echo stays off).
    pub no_echo: bool,
    /// Answer `AT+CCHO` with the bare session id (`<sessionid>`, as TS 27.007 writes it)
    /// instead of `+CCHO: <sessionid>`.
    pub bare_ccho: bool,
    /// Sierra MC7455/EM7590: `AT+CCHO` answers an opaque session id of 16 hex digits with
    /// leading zeros (`00000000038aa32f`); `AT+CGLA`/`AT+CCHC` accept only exactly that string.
    pub hex_session_ids: bool,
    /// Sierra EM9191: `AT+CCHC` is missing (answers `ERROR`); the session stays open.
    pub no_cchc: bool,
    /// Sierra EM9191: `+CME ERROR` as verbose text (`SIM busy`) whatever `AT+CMEE` asked
    /// for (except `AT+CMEE=0`, which still gives plain `ERROR`).
    pub verbose_cme: bool,
    /// Quectel EG25: `AT+CSIM` on a logical channel (CLA channel bits not 0) answers `ERROR`;
    /// the basic channel (MANAGE CHANNEL included) and `AT+CGLA` work.
    pub csim_basic_only: bool,
    /// MediaTek modules: the SIM sleeps, and every SIM-access command answers
    /// `+CME ERROR: 3` until `AT+ECSIMSLEEP=0`. Without this quirk `AT+ECSIMSLEEP` is unknown
    /// (`ERROR`), as on other makers' modems.
    pub sim_sleeps: bool,
    /// What `AT+CGMI` answers (e.g. `MediaTek Inc.` with `sim_sleeps`).
    pub manufacturer: String,
    /// On-card key generation slower than the ~300 ms many modems wait: the answer to an
    /// `AT+CSIM`/`AT+CGLA` carrying GENERATE KEY PAIR (or STORE DATA creating a key pair)
    /// comes this many ms late, after a pause of 300 ms and a URC (`+CREG: 1`); 0 = off.
    pub slow_keygen_ms: u64,
    /// Seed of the generator that places URCs/noise and sizes the chunks.
    pub seed: u64,
}

/// What `AT+CGMI` answers unless [`ModemOptions::manufacturer`] is changed.
pub const DEFAULT_MANUFACTURER: &str = "iotsafe-sim";

impl Default for ModemOptions {
    fn default() -> Self {
        ModemOptions {
            at: AtDialect::Both,
            echo: false,
            urc: false,
            split: false,
            delay_ms: 0,
            busy_every: 0,
            max_command_len: 0,
            hang: false,
            hang_after: 0,
            garbage: false,
            no_echo: false,
            bare_ccho: false,
            hex_session_ids: false,
            no_cchc: false,
            verbose_cme: false,
            csim_basic_only: false,
            sim_sleeps: false,
            manufacturer: DEFAULT_MANUFACTURER.to_string(),
            slow_keygen_ms: 0,
            seed: 0x5EED_1075_AFE5_1A0D,
        }
    }
}

/// Names accepted by [`ModemOptions::set`] (`-` and `_` are interchangeable).
pub const QUIRKS: &[&str] = &[
    "at",
    "echo",
    "urc",
    "split",
    "delay_ms",
    "busy_every",
    "max_command_len",
    "hang",
    "hang_after",
    "garbage",
    "no_echo",
    "bare_ccho",
    "hex_session_ids",
    "no_cchc",
    "verbose_cme",
    "csim_basic_only",
    "sim_sleeps",
    "manufacturer",
    "slow_keygen_ms",
    "seed",
];

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected on or off, got {v:?}")),
    }
}

fn parse_num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("expected a non-negative number, got {v:?}"))
}

impl ModemOptions {
    /// Sets one field by name (see [`QUIRKS`]): booleans take `on`/`off`, numbers a
    /// decimal, `at` takes `csim`/`cgla`/`both`.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let value = value.trim();
        match name.replace('-', "_").to_ascii_lowercase().as_str() {
            "at" => self.at = value.parse()?,
            "echo" => self.echo = parse_bool(value)?,
            "urc" => self.urc = parse_bool(value)?,
            "split" => self.split = parse_bool(value)?,
            "delay_ms" | "delay" => self.delay_ms = parse_num(value)?,
            "busy_every" => self.busy_every = parse_num(value)?,
            "max_command_len" => self.max_command_len = parse_num(value)?,
            "hang" => self.hang = parse_bool(value)?,
            "hang_after" => self.hang_after = parse_num(value)?,
            "garbage" => self.garbage = parse_bool(value)?,
            "no_echo" => self.no_echo = parse_bool(value)?,
            "bare_ccho" => self.bare_ccho = parse_bool(value)?,
            "hex_session_ids" => self.hex_session_ids = parse_bool(value)?,
            "no_cchc" => self.no_cchc = parse_bool(value)?,
            "verbose_cme" => self.verbose_cme = parse_bool(value)?,
            "csim_basic_only" => self.csim_basic_only = parse_bool(value)?,
            "sim_sleeps" => self.sim_sleeps = parse_bool(value)?,
            "manufacturer" if !value.is_empty() && value.len() <= 64 => {
                self.manufacturer = value.to_string()
            }
            "manufacturer" => return Err("expected 1 to 64 characters".to_string()),
            "slow_keygen_ms" => self.slow_keygen_ms = parse_num(value)?,
            "seed" => self.seed = parse_num(value)?,
            other => {
                return Err(format!(
                    "unknown quirk {other:?} (known: {})",
                    QUIRKS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The options as a JSON object (keys as in [`QUIRKS`]).
    pub fn to_json(&self) -> Value {
        json!({
            "at": self.at.name(),
            "echo": self.echo,
            "urc": self.urc,
            "split": self.split,
            "delay_ms": self.delay_ms,
            "busy_every": self.busy_every,
            "max_command_len": self.max_command_len,
            "hang": self.hang,
            "hang_after": self.hang_after,
            "garbage": self.garbage,
            "no_echo": self.no_echo,
            "bare_ccho": self.bare_ccho,
            "hex_session_ids": self.hex_session_ids,
            "no_cchc": self.no_cchc,
            "verbose_cme": self.verbose_cme,
            "csim_basic_only": self.csim_basic_only,
            "sim_sleeps": self.sim_sleeps,
            "manufacturer": self.manufacturer,
            "slow_keygen_ms": self.slow_keygen_ms,
            "seed": self.seed,
        })
    }
}

/// Modem counters (the APDUs themselves are counted by the card).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModemStats {
    /// Command lines answered (not counting those dropped while hung).
    pub commands: u64,
    /// `AT+CSIM=…` commands (including refused ones).
    pub csim: u64,
    /// `AT+CCHO=…` commands.
    pub ccho: u64,
    /// `AT+CGLA=…` commands.
    pub cgla: u64,
    /// `AT+CCHC=…` commands.
    pub cchc: u64,
    /// Final results `OK`.
    pub ok: u64,
    /// Final results `ERROR` (including `+CME ERROR` reported as `ERROR` under `AT+CMEE=0`).
    pub error: u64,
    /// Final results `+CME ERROR`, by code.
    pub cme_error: BTreeMap<u16, u64>,
    /// Commands answered `+CME ERROR: 14` by the `busy_every` quirk.
    pub busy: u64,
    /// Command lines dropped while hung.
    pub dropped: u64,
    /// Unsolicited result codes written.
    pub urc: u64,
    /// Noise lines written.
    pub garbage: u64,
    /// `AT+CCHO` sessions open now (each holds a logical channel on the card).
    pub open_sessions: u64,
    /// The most `AT+CCHO` sessions open at once since start or the last stats reset (a
    /// reset starts from the sessions open then).
    pub max_open_sessions: u64,
    /// QMI: Open Logical Channel (and Logical Channel opening) requests.
    pub qmi_open_channel: u64,
    /// QMI: Logical Channel requests closing a channel.
    pub qmi_close_channel: u64,
    /// QMI: Send APDU requests.
    pub qmi_send_apdu: u64,
    /// QMI: Send APDUs whose CLA did not carry their channel (the modem put it in).
    pub qmi_cla_rewritten: u64,
    /// QMI: failure answers by protocol error code.
    pub qmi_error: BTreeMap<u16, u64>,
    /// QMI: client ids allocated now (every service), and the most at once.
    pub client_ids: u64,
    pub max_client_ids: u64,
    /// MBIM/QMI: requests by message name (`OPEN`, `UICC_APDU`, …); empty for AT.
    pub requests: BTreeMap<String, u64>,
}

impl ModemStats {
    /// As a JSON object (CME codes as string keys).
    pub fn to_json(&self) -> Value {
        let cme: serde_json::Map<String, Value> = self
            .cme_error
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({
            "commands": self.commands,
            "csim": self.csim,
            "ccho": self.ccho,
            "cgla": self.cgla,
            "cchc": self.cchc,
            "ok": self.ok,
            "error": self.error,
            "cme_error": cme,
            "busy": self.busy,
            "dropped": self.dropped,
            "urc": self.urc,
            "garbage": self.garbage,
            "open_sessions": self.open_sessions,
            "max_open_sessions": self.max_open_sessions,
            "qmi_open_channel": self.qmi_open_channel,
            "qmi_close_channel": self.qmi_close_channel,
            "qmi_send_apdu": self.qmi_send_apdu,
            "qmi_cla_rewritten": self.qmi_cla_rewritten,
            "qmi_error": self
                .qmi_error
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<serde_json::Map<String, Value>>(),
            "client_ids": self.client_ids,
            "max_client_ids": self.max_client_ids,
            "requests": self.requests,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_set() {
        let mut o = ModemOptions::default();
        o.set("busy-every", "3").unwrap();
        o.set("echo", "on").unwrap();
        o.set("at", "csim").unwrap();
        assert_eq!((o.busy_every, o.echo, o.at), (3, true, AtDialect::Csim));
        assert!(o.set("echo", "maybe").is_err());
        assert!(o.set("nope", "1").is_err());
        assert!(o.set("delay_ms", "-1").is_err());
    }
}
