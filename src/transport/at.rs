//! A cellular modem's SIM reached with AT commands (3GPP TS 27.007) over a serial port.
//!
//! Preferred: the logical-channel commands `AT+CCHO` / `AT+CGLA` / `AT+CCHC` (the modem keeps the
//! channel; channel 0 stays the modem's own). Fallback, or forced by configuration: `AT+CSIM`
//! with our own MANAGE CHANNEL and the channel in the CLA byte.
//!
//! The line protocol tolerates what real modems do: command echo, unsolicited result codes
//! (`+CREG:`, `RING`, `^SYSSTART`, …) anywhere, answers split across reads, noise lines,
//! `+CME ERROR: n`, a busy SIM (`+CME ERROR: 14`, retried), and a modem that stops answering
//! (every command has a deadline; the next one resynchronises first).

use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use log::{debug, trace, warn};
use serialport::{SerialPort, TTYPort};

use super::{CardConnection, ChannelRoute, SessionOpen, Transmit, TransportError};

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
}

/// How long one read waits before the deadline is checked again.
const POLL: Duration = Duration::from_millis(20);
/// Attempts for a command the SIM answered with "busy".
const BUSY_RETRIES: u32 = 5;
/// `+CME ERROR` codes (3GPP TS 27.007 §9.2).
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

/// The line side of a modem port.
struct AtPort {
    port: TTYPort,
    name: String,
    pending: Vec<u8>,
    timeout: Duration,
    max_command_len: usize,
    /// A command timed out: resynchronise before the next one.
    needs_resync: bool,
    /// The port failed (closed, unplugged): stays failed.
    broken: Option<ErrorKind>,
}

impl AtPort {
    fn open(config: &ModemSettings) -> Result<AtPort, TransportError> {
        let port = serialport::new(config.device.as_str(), config.baud)
            .timeout(POLL)
            .open_native()
            .map_err(|e| {
                match e.kind() {
                    serialport::ErrorKind::NoDevice => {
                        debug!("modem {}: not present ({e})", config.device)
                    }
                    serialport::ErrorKind::Io(ErrorKind::NotFound) => {
                        debug!("modem {}: not present ({e})", config.device)
                    }
                    _ => warn!(
                        "modem {}: cannot open the port ({e}); is another program (ModemManager, a \
                         second process) holding it?",
                        config.device
                    ),
                }
                TransportError::NoCard
            })?;
        let mut at = AtPort {
            port,
            name: config.device.clone(),
            pending: Vec::new(),
            timeout: config.timeout,
            max_command_len: config.max_command_len,
            needs_resync: false,
            broken: None,
        };
        // Echo off; some modems need a moment after opening, so one retry.
        if at.command("ATE0", None).is_err() {
            at.command("ATE0", None).map_err(TransportError::from)?;
        }
        let _ = at.command("AT+CMEE=1", None);
        Ok(at)
    }

    fn read_some(&mut self) -> Result<(), AtError> {
        if let Some(kind) = self.broken {
            return Err(AtError::Io(kind));
        }
        let mut buf = [0u8; 512];
        match self.port.read(&mut buf) {
            Ok(0) => {
                self.broken = Some(ErrorKind::UnexpectedEof);
                Err(AtError::Io(ErrorKind::UnexpectedEof))
            }
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted
                ) =>
            {
                Ok(())
            }
            Err(e) => {
                warn!("modem {}: read failed: {e}", self.name);
                self.broken = Some(e.kind());
                Err(AtError::Io(e.kind()))
            }
        }
    }

    /// The next non-empty line, or `None` at the deadline.
    fn next_line(&mut self, deadline: Instant) -> Result<Option<String>, AtError> {
        loop {
            if let Some(pos) = self.pending.iter().position(|b| *b == b'\r' || *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1])
                    .trim()
                    .to_string();
                if !text.is_empty() {
                    return Ok(Some(text));
                }
                continue;
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.read_some()?;
        }
    }

    /// Throws away whatever arrived unasked (late answers, URCs).
    fn drain(&mut self) -> Result<(), AtError> {
        // Only what has already arrived: never wait here (a read would block for POLL).
        let deadline = Instant::now() + POLL;
        while Instant::now() < deadline && self.port.bytes_to_read().unwrap_or(0) > 0 {
            self.read_some()?;
        }
        if !self.pending.is_empty() {
            trace!(
                "modem {}: discarding {} unasked bytes",
                self.name,
                self.pending.len()
            );
            self.pending.clear();
        }
        Ok(())
    }

    /// After a timeout the modem may still answer the old command, at any moment. A bare `AT`
    /// cannot tell its `OK` from the late one, so the probe is `AT+CMEE?`: only its own answer
    /// carries a `+CMEE:` line; everything before that line is the old command's.
    fn resync(&mut self) -> Result<(), AtError> {
        for _ in 0..3 {
            self.drain()?;
            self.port
                .write_all(b"AT+CMEE?\r")
                .map_err(|e| AtError::Io(e.kind()))?;
            let deadline = Instant::now() + Duration::from_millis(500).min(self.timeout);
            let mut answered = false;
            while let Some(line) = self.next_line(deadline)? {
                if line.starts_with("+CMEE:") {
                    answered = true;
                } else if answered && line == "OK" {
                    self.needs_resync = false;
                    return Ok(());
                }
            }
        }
        Err(AtError::Timeout)
    }

    /// Sends one command line and collects the information lines that start with
    /// `info_prefix` (the prefix removed) until the final result.
    fn command(&mut self, cmd: &str, info_prefix: Option<&str>) -> Result<Vec<String>, AtError> {
        if cmd.len() > self.max_command_len {
            return Err(AtError::TooLong(cmd.len()));
        }
        if self.needs_resync {
            self.resync()?;
        } else {
            self.drain()?;
        }
        // APDUs are traced (redacted where they carry secrets) by the applet layer; the AT
        // layer shows only the command and the length of a quoted APDU.
        trace!("modem {} > {}", self.name, without_payload(cmd));
        self.port
            .write_all(format!("{cmd}\r").as_bytes())
            .map_err(|e| {
                self.broken = Some(e.kind());
                AtError::Io(e.kind())
            })?;
        let deadline = Instant::now() + self.timeout;
        let mut info = Vec::new();
        loop {
            let Some(line) = self.next_line(deadline)? else {
                warn!(
                    "modem {}: no answer to {:?} within {:?}",
                    self.name,
                    short(cmd),
                    self.timeout
                );
                self.needs_resync = true;
                return Err(AtError::Timeout);
            };
            trace!("modem {} < {}", self.name, without_payload(&line));
            if line == cmd {
                continue; // echo
            }
            if line == "OK" {
                return Ok(info);
            }
            if line == "ERROR" {
                return Err(AtError::Error);
            }
            if let Some(code) = line.strip_prefix("+CME ERROR:") {
                let code = code.trim();
                return Err(AtError::Cme(code.parse().unwrap_or(u32::MAX)));
            }
            match info_prefix {
                Some(prefix) if line.starts_with(prefix) => {
                    info.push(line[prefix.len()..].trim().to_string());
                }
                // 27.007 gives +CCHO's answer as a bare number; some modems prefix it.
                Some("+CCHO:") if line.bytes().all(|b| b.is_ascii_digit()) => info.push(line),
                _ => debug!("modem {}: ignoring unsolicited line {line:?}", self.name),
            }
        }
    }

    /// A command that the SIM may answer with "busy": retried a few times.
    fn command_retrying_busy(&mut self, cmd: &str, info_prefix: &str) -> Result<String, AtError> {
        let mut attempt = 0;
        loop {
            match self.command(cmd, Some(info_prefix)) {
                Err(AtError::Cme(CME_SIM_BUSY)) if attempt < BUSY_RETRIES => {
                    attempt += 1;
                    debug!("modem {}: SIM busy, retry {attempt}", self.name);
                    std::thread::sleep(Duration::from_millis(20 * attempt as u64));
                }
                Err(e) => return Err(e),
                Ok(mut info) => {
                    return info
                        .pop()
                        .ok_or_else(|| AtError::Malformed(format!("no {info_prefix} line")));
                }
            }
        }
    }
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

/// One modem with its SIM.
pub struct ModemConnection {
    port: AtPort,
    mode: AtMode,
}

struct ModemPipe<'a> {
    port: &'a mut AtPort,
    route: ChannelRoute,
}

impl Transmit for ModemPipe<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let hex_apdu = hex::encode_upper(command);
        let (cmd, prefix) = match self.route {
            ChannelRoute::Cla(_) => (
                format!("AT+CSIM={},\"{hex_apdu}\"", hex_apdu.len()),
                "+CSIM:",
            ),
            ChannelRoute::Session(id) => (
                format!("AT+CGLA={id},{},\"{hex_apdu}\"", hex_apdu.len()),
                "+CGLA:",
            ),
        };
        let info = self.port.command_retrying_busy(&cmd, prefix)?;
        Ok(parse_apdu_answer(&info)?)
    }

    fn max_command_data(&self) -> usize {
        // `AT+CGLA=<id>,<len>,"` + `"` is at most 24 characters (+CSIM's is shorter); every
        // APDU byte takes two hex digits; 5 header bytes and 1 Le byte besides the data.
        let room = self.port.max_command_len.saturating_sub(24) / 2;
        room.saturating_sub(6).min(255)
    }
}

impl ModemConnection {
    pub fn open(config: &ModemSettings) -> Result<ModemConnection, TransportError> {
        Ok(ModemConnection {
            port: AtPort::open(config)?,
            mode: config.at_mode,
        })
    }
}

impl CardConnection for ModemConnection {
    fn transaction(
        &mut self,
        route: ChannelRoute,
    ) -> Result<Box<dyn Transmit + '_>, TransportError> {
        // The serial line is ours alone (the port is opened exclusively): nothing to lock.
        Ok(Box::new(ModemPipe {
            port: &mut self.port,
            route,
        }))
    }

    fn open_session(&mut self, aid: &[u8]) -> Result<SessionOpen, TransportError> {
        if self.mode == AtMode::Csim {
            return Ok(SessionOpen::NotManaged);
        }
        match self
            .port
            .command_retrying_busy(&format!("AT+CCHO=\"{}\"", hex::encode_upper(aid)), "+CCHO:")
        {
            Ok(id) => id
                .trim()
                .parse::<u32>()
                .map(SessionOpen::Opened)
                .map_err(|_| TransportError::Other(format!("+CCHO answered {id:?}"))),
            // The modem does not know AT+CCHO: use AT+CSIM unless told to use CGLA only.
            Err(AtError::Error) if self.mode == AtMode::Auto => {
                debug!(
                    "modem {}: no AT+CCHO; falling back to AT+CSIM",
                    self.port.name
                );
                self.mode = AtMode::Csim;
                Ok(SessionOpen::NotManaged)
            }
            Err(AtError::Cme(n)) if n != CME_SIM_NOT_INSERTED && n != CME_SIM_FAILURE => {
                debug!(
                    "modem {}: AT+CCHO of {} refused (+CME ERROR: {n})",
                    self.port.name,
                    hex::encode_upper(aid)
                );
                Ok(SessionOpen::NoApplet)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn close_session(&mut self, session: u32) -> Result<(), TransportError> {
        self.port
            .command(&format!("AT+CCHC={session}"), None)
            .map(|_| ())
            .map_err(TransportError::from)
    }

    fn reconnect(&mut self) -> Result<(), TransportError> {
        // The modem keeps its own link to the SIM; channels are re-opened by the caller.
        match self.port.broken {
            Some(_) => Err(TransportError::CardRemoved),
            None => Ok(()),
        }
    }

    fn is_present(&mut self) -> bool {
        self.port.broken.is_none() && Path::new(&self.port.name).exists()
    }

    fn disconnect(self: Box<Self>) {}
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
