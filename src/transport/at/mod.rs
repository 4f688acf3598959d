//! A cellular modem's SIM reached with AT commands (3GPP TS 27.007) over a serial port.
//!
//! Preferred: the logical-channel commands `AT+CCHO` / `AT+CGLA` / `AT+CCHC` (the modem keeps the
//! channel; channel 0 stays the modem's own). Fallback, or forced by configuration: `AT+CSIM`
//! with our own MANAGE CHANNEL and the channel in the CLA byte.
//!
//! The line protocol tolerates what real modems do: command echo, unsolicited result codes
//! (`+CREG:`, `RING`, `^SYSSTART`, …) anywhere, answers split across reads, noise lines,
//! `+CME ERROR: n`, a busy SIM (`+CME ERROR: 14`, retried), and a modem that stops answering
//! (every command has a deadline), and a modem shared by several processes: each operation takes
//! a turn on the port's lock (`transport/turn_lock.rs`), and every answer is anchored to the echo
//! of its own command line (`port.rs`), so a late answer to a command of another process, a dead one included, or to a
//! timed-out command is never taken for ours.

mod connection;
mod port;

pub use connection::{ModemConnection, SimAccessCommands};

use std::io::ErrorKind;
use std::time::Duration;

use log::debug;

use super::TransportError;

/// How APDUs reach the SIM through a modem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtMode {
    /// `AT+CCHO`/`AT+CGLA` when the modem has them, else `AT+CSIM`.
    #[default]
    Auto,
    /// Only the logical-channel commands.
    Cgla,
    /// Only `AT+CSIM`, with MANAGE CHANNEL sent by the caller.
    Csim,
}

/// One modem's AT port and how to talk to it.
#[derive(Debug, Clone)]
pub struct ModemSettings {
    /// The AT port, e.g. `/dev/ttyACM0`.
    pub device: String,
    pub baud: u32,
    pub at_mode: AtMode,
    /// Longest AT command line the modem accepts (characters).
    pub max_command_len: usize,
    /// Deadline for one AT command.
    pub timeout: Duration,
    /// Where the port's lock file (and note) lives; default `/run/lock`.
    pub lock_dir: Option<std::path::PathBuf>,
    /// Command lines sent once after the port is opened (e.g. `AT+ECSIMSLEEP=0`), besides
    /// those the module sends for a maker it recognises.
    pub setup_commands: Vec<String>,
}

/// How long one read waits before the deadline is checked again.
/// Attempts for a command the SIM answered with "busy".
const BUSY_RETRIES: u32 = 5;
/// `+CME ERROR` codes (3GPP TS 27.007 §9.2).
/// Operation not allowed: to `AT+CCHO`, no logical channel left (what MANAGE CHANNEL says
/// with `6A81`); to any SIM command of a MediaTek module whose SIM sleeps.
const CME_OPERATION_NOT_ALLOWED: u32 = 3;
const CME_SIM_NOT_INSERTED: u32 = 10;
const CME_SIM_FAILURE: u32 = 13;
const CME_SIM_BUSY: u32 = 14;

#[derive(Debug, Clone, PartialEq, Eq)]
enum AtError {
    /// Plain `ERROR`: the modem does not know or refuses the command.
    Error,
    Cme(u32),
    Timeout,
    Io(ErrorKind),
    TooLong(usize),
    Malformed(String),
}

impl From<AtError> for TransportError {
    fn from(e: AtError) -> Self {
        match e {
            AtError::Cme(CME_SIM_NOT_INSERTED) | AtError::Cme(CME_SIM_FAILURE) => {
                TransportError::CardRemoved
            }
            AtError::Io(_) => TransportError::CardRemoved,
            AtError::Timeout => TransportError::Timeout,
            AtError::Error => TransportError::Other("modem answered ERROR".into()),
            AtError::Cme(n) => TransportError::Other(format!("modem answered +CME ERROR: {n}")),
            AtError::TooLong(n) => TransportError::Other(format!(
                "AT command of {n} characters exceeds the modem's configured max_command_len"
            )),
            AtError::Malformed(s) => TransportError::Other(format!("malformed modem answer: {s}")),
        }
    }
}

/// Fuzzing entry point: [`parse_apdu_answer`] with the error dropped.
pub fn parse_apdu_answer_for_fuzzing(info: &str) -> Option<Vec<u8>> {
    parse_apdu_answer(info).ok()
}

/// Parses the `<length>,"<hex>"` of a `+CSIM:` / `+CGLA:` answer (quotes optional).
fn parse_apdu_answer(info: &str) -> Result<Vec<u8>, AtError> {
    let (len, data) = info
        .split_once(',')
        .ok_or_else(|| AtError::Malformed(info.to_string()))?;
    let data = data.trim().trim_matches('"');
    let bytes = hex::decode(data).map_err(|_| AtError::Malformed(info.to_string()))?;
    match len.trim().parse::<usize>() {
        Ok(n) if n == data.len() => {}
        _ => debug!(
            "AT answer length field {len:?} does not match {} hex digits",
            data.len()
        ),
    }
    if bytes.len() < 2 {
        return Err(AtError::Malformed(info.to_string()));
    }
    Ok(bytes)
}

/// An AT line with its APDU hex (a quoted string, or the data after `+CSIM:`/`+CGLA:`) replaced
/// by its length, so that no secret in a command or answer reaches the log.
fn without_payload(line: &str) -> String {
    if let Some(start) = line.find('"') {
        let payload = line[start + 1..].trim_end_matches('"');
        return format!("{}\"<{} hex digits>\"", &line[..start], payload.len());
    }
    for prefix in ["+CSIM:", "+CGLA:"] {
        if let Some(rest) = line.strip_prefix(prefix) {
            return format!("{prefix} <{} characters>", rest.trim().len());
        }
    }
    line.to_string()
}

fn short(cmd: &str) -> &str {
    cmd.get(..cmd.len().min(24)).unwrap_or(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traced_at_lines_never_show_apdu_bytes() {
        let secret = "0123456789ABCDEF";
        for line in [
            format!("AT+CGLA=1,26,\"80460000{secret}\""),
            format!("AT+CSIM=26,\"80460000{secret}\""),
            format!("+CGLA: 20,\"{secret}9000\""),
            format!("+CSIM: 20,{secret}9000"),
        ] {
            let traced = without_payload(&line);
            assert!(!traced.contains(secret), "{traced}");
        }
        assert_eq!(
            without_payload("AT+CGLA=1,8,\"00A40400\""),
            "AT+CGLA=1,8,\"<8 hex digits>\""
        );
        assert_eq!(without_payload("OK"), "OK");
    }

    #[test]
    fn apdu_answers_with_and_without_quotes() {
        assert_eq!(parse_apdu_answer("6,\"019000\"").unwrap(), vec![1, 0x90, 0]);
        assert_eq!(parse_apdu_answer("4, 9000").unwrap(), vec![0x90, 0]);
        // A wrong length field is tolerated (logged), bad hex is not.
        assert_eq!(parse_apdu_answer("2,\"9000\"").unwrap(), vec![0x90, 0]);
        assert!(parse_apdu_answer("4,\"90ZZ\"").is_err());
        assert!(parse_apdu_answer("2,\"90\"").is_err());
        assert!(parse_apdu_answer("nonsense").is_err());
    }

    #[test]
    fn verbose_cme_texts_are_understood() {
        assert_eq!(port::cme_code(" SIM busy"), CME_SIM_BUSY);
        assert_eq!(port::cme_code("sim NOT inserted "), CME_SIM_NOT_INSERTED);
        assert_eq!(port::cme_code("SIM failure"), CME_SIM_FAILURE);
        assert_eq!(
            port::cme_code("operation not allowed"),
            CME_OPERATION_NOT_ALLOWED
        );
        assert_eq!(port::cme_code("14"), CME_SIM_BUSY);
        assert_eq!(port::cme_code("Parameters error"), u32::MAX);
        assert_eq!(
            TransportError::from(AtError::Cme(port::cme_code("SIM not inserted"))),
            TransportError::CardRemoved
        );
    }

    #[test]
    fn cme_codes_map_to_transport_errors() {
        assert_eq!(
            TransportError::from(AtError::Cme(10)),
            TransportError::CardRemoved
        );
        assert_eq!(
            TransportError::from(AtError::Timeout),
            TransportError::Timeout
        );
        assert!(matches!(
            TransportError::from(AtError::Cme(4)),
            TransportError::Other(_)
        ));
    }
}
