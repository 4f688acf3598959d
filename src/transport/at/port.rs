//! The line side of a modem port: commands, their answers, echo, URCs, deadlines.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use log::{debug, trace, warn};
use serialport::{SerialPort, TTYPort};

use super::{
    AtError, BUSY_RETRIES, CME_OPERATION_NOT_ALLOWED, CME_SIM_BUSY, CME_SIM_FAILURE,
    CME_SIM_NOT_INSERTED, ModemSettings, short, without_payload,
};
use crate::transport::TransportError;

/// How long one read waits before the deadline is checked again.
const POLL: Duration = Duration::from_millis(20);

/// Attempts to open a port that another program holds exclusively for a moment.
const OPEN_ATTEMPTS: u32 = 20;

/// Why a port did not open. serialport reports a busy port (EBUSY) and a missing one alike
/// (`NoDevice`), so a plain open of the path tells them apart.
enum OpenFailure {
    HeldExclusively,
    Absent,
    Other(std::io::Error),
}

fn why_it_did_not_open(device: &str, e: &serialport::Error) -> OpenFailure {
    if let serialport::ErrorKind::Io(ErrorKind::NotFound) = e.kind() {
        return OpenFailure::Absent;
    }
    let plain = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(device);
    match plain.map_err(|e| (e.raw_os_error(), e)) {
        Err((Some(libc::EBUSY), _)) => OpenFailure::HeldExclusively,
        Err((Some(libc::ENOENT | libc::ENXIO | libc::ENODEV), _)) => OpenFailure::Absent,
        Err((_, cause)) => OpenFailure::Other(cause),
        // Opens now: whatever serialport met (its settings) is the cause.
        Ok(_) => OpenFailure::Other(std::io::Error::other(e.to_string())),
    }
}

/// The line side of a modem port.
pub(super) struct AtPort {
    port: TTYPort,
    pub(super) name: String,
    pending: Vec<u8>,
    timeout: Duration,
    pub(super) max_command_len: usize,
    /// The modem echoes command lines: every answer is read from the echo of its own command on,
    /// and whatever came before it (a late answer to another command, a URC) is dropped.
    echo: bool,
    /// A command timed out (or its answer made no sense): resynchronise before the next one.
    needs_resync: bool,
    /// Markers sent so far by [`AtPort::resync`]; with the process id, what makes each unique.
    markers_sent: u64,
    /// The port failed (closed, unplugged): stays failed.
    pub(super) broken: Option<ErrorKind>,
}

impl AtPort {
    /// Opens the port, shared: other processes may open it too, and take turns on its lock.
    pub(super) fn open(config: &ModemSettings) -> Result<AtPort, TransportError> {
        let mut attempt = 0;
        let port = loop {
            let e = match serialport::new(config.device.as_str(), config.baud)
                .timeout(POLL)
                .exclusive(false)
                .open_native()
            {
                Ok(port) => break port,
                Err(e) => e,
            };
            match why_it_did_not_open(&config.device, &e) {
                OpenFailure::HeldExclusively if attempt < OPEN_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                OpenFailure::HeldExclusively => {
                    warn!(
                        "modem {}: another program holds the port exclusively (TIOCEXCL: \
                         ModemManager, a terminal program?); slot without token until it lets go",
                        config.device
                    );
                    return Err(TransportError::NoCard);
                }
                OpenFailure::Absent => {
                    debug!("modem {}: not present ({e})", config.device);
                    return Err(TransportError::NoCard);
                }
                OpenFailure::Other(cause) => {
                    if let Some(denied) = TransportError::permission(&config.device, &cause) {
                        warn!("modem {}: {denied}; slot without token", config.device);
                        return Err(denied);
                    }
                    warn!(
                        "modem {}: cannot open the port ({cause}); slot without token",
                        config.device
                    );
                    return Err(TransportError::NoCard);
                }
            }
        };
        Ok(AtPort {
            port,
            name: config.device.clone(),
            pending: Vec::new(),
            timeout: config.timeout,
            max_command_len: config.max_command_len,
            echo: false,
            needs_resync: false,
            markers_sent: 0,
            broken: None,
        })
    }

    /// Echo on and numeric `+CME ERROR`s, on the caller's turn. Some modems need a moment after
    /// opening, so one retry. Whether the modem really echoes is seen on a plain `AT`.
    pub(super) fn set_up(&mut self) -> Result<(), TransportError> {
        if self.command("ATE1", None).is_err() {
            self.command("ATE1", None).map_err(TransportError::from)?;
        }
        self.echo = self.echoes()?;
        if !self.echo {
            debug!(
                "modem {}: no command echo; answers are matched by order only",
                self.name
            );
        }
        let _ = self.command("AT+CMEE=1", None);
        Ok(())
    }

    /// The one information line of an identification command (`AT+CGMI`, `AT+CGMM`: a bare
    /// line, or prefixed like `+CGMI: `), or `None` when the modem does not answer it.
    pub(super) fn identification(&mut self, cmd: &str) -> Option<String> {
        let lines = self.command(cmd, Some("")).ok()?;
        let prefix = format!("{}:", cmd.trim_start_matches("AT"));
        let line = lines.into_iter().find(|l| !l.is_empty())?;
        let value = line.strip_prefix(&prefix).unwrap_or(&line).trim();
        (!value.is_empty()).then(|| value.to_string())
    }

    /// Sends `AT` and tells whether its echo came back before the `OK`.
    fn echoes(&mut self) -> Result<bool, TransportError> {
        self.drain().map_err(TransportError::from)?;
        self.write_line("AT").map_err(TransportError::from)?;
        let deadline = Instant::now() + self.timeout;
        let mut echoed = false;
        while let Some(line) = self.next_line(deadline).map_err(TransportError::from)? {
            match line.as_str() {
                "AT" => echoed = true,
                "OK" => return Ok(echoed),
                _ => {}
            }
        }
        Err(TransportError::Timeout)
    }

    fn write_line(&mut self, cmd: &str) -> Result<(), AtError> {
        self.port
            .write_all(format!("{cmd}\r").as_bytes())
            .map_err(|e| {
                self.broken = Some(e.kind());
                AtError::Io(e.kind())
            })
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

    /// After a timeout the modem may still answer the old command, at any moment, and an
    /// answer to a command line equal to the next one (the same COMPUTE SIGNATURE INIT, the same
    /// AT+CCHO) would even come after an echo that looks like ours. So the next command waits for
    /// a marker that no stale answer can look like; the modem answers in order, so whatever came
    /// before the marker's answer is old and dropped.
    ///
    /// With echo, the marker is a command line of its own that no other line can equal: an
    /// unknown command (`AT+IOTSAFESYNC=<pid>,<n>`, which every V.250 modem answers `ERROR`),
    /// read until its echo and then its final result. Without echo, `AT+CMEE?`: only its answer
    /// carries a `+CMEE:` line (residual risk: the `+CMEE:` of an earlier marker that itself went
    /// unanswered within its deadline).
    fn resync(&mut self) -> Result<(), AtError> {
        for _ in 0..3 {
            self.drain()?;
            self.markers_sent += 1;
            let marker = if self.echo {
                format!(
                    "AT+IOTSAFESYNC={},{}",
                    std::process::id(),
                    self.markers_sent
                )
            } else {
                "AT+CMEE?".to_string()
            };
            self.write_line(&marker)?;
            let deadline = Instant::now() + Duration::from_millis(500).min(self.timeout);
            let mut answered = false;
            while let Some(line) = self.next_line(deadline)? {
                let ours = if self.echo {
                    line == marker
                } else {
                    line.starts_with("+CMEE:")
                };
                if ours {
                    answered = true;
                } else if answered && is_final_result(&line) {
                    self.needs_resync = false;
                    return Ok(());
                } else {
                    debug!(
                        "modem {}: resynchronising: dropping {:?}",
                        self.name,
                        without_payload(&line)
                    );
                }
            }
        }
        Err(AtError::Timeout)
    }

    /// Sends one command line and collects the information lines that start with
    /// `info_prefix` (the prefix removed) until the final result.
    pub(super) fn command(
        &mut self,
        cmd: &str,
        info_prefix: Option<&str>,
    ) -> Result<Vec<String>, AtError> {
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
        self.write_line(cmd)?;
        let deadline = Instant::now() + self.timeout;
        let mut info = Vec::new();
        // With echo, nothing before our own command line is ours.
        let mut echoed = !self.echo;
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
                echoed = true;
                continue;
            }
            if !echoed {
                debug!(
                    "modem {}: dropping {:?}, which came before the echo of our command",
                    self.name,
                    without_payload(&line)
                );
                continue;
            }
            if line == "OK" {
                return Ok(info);
            }
            if line == "ERROR" {
                return Err(AtError::Error);
            }
            if let Some(code) = line.strip_prefix("+CME ERROR:") {
                let code = cme_code(code);
                if code == CME_UNKNOWN_TEXT {
                    debug!("modem {}: unknown error {line:?}", self.name);
                }
                return Err(AtError::Cme(code));
            }
            match info_prefix {
                Some(prefix) if line.starts_with(prefix) => {
                    info.push(line[prefix.len()..].trim().to_string());
                }
                // 27.007 gives +CCHO's answer as a bare number; some modems prefix it, and
                // Sierra's ids are hex digits.
                Some("+CCHO:") if line.bytes().all(|b| b.is_ascii_hexdigit()) => info.push(line),
                _ => debug!("modem {}: ignoring unsolicited line {line:?}", self.name),
            }
        }
    }

    /// A command that the SIM may answer with "busy": retried a few times.
    pub(super) fn command_retrying_busy(
        &mut self,
        cmd: &str,
        info_prefix: &str,
    ) -> Result<String, AtError> {
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
                    return info.pop().ok_or_else(|| {
                        // An answer that is not this command's (a stale OK): resynchronise.
                        self.needs_resync = true;
                        AtError::Malformed(format!("no {info_prefix} line"))
                    });
                }
            }
        }
    }
}

/// What a `+CME ERROR:` that is neither a number nor a known text becomes.
const CME_UNKNOWN_TEXT: u32 = u32::MAX;

/// The verbose texts of TS 27.007 §9.2.1 for the codes the module acts on, and their numbers.
/// Some modems (Sierra EM9191) answer texts whatever `AT+CMEE=1` asked for.
const CME_TEXTS: &[(&str, u32)] = &[
    ("operation not allowed", CME_OPERATION_NOT_ALLOWED),
    ("operation not supported", 4),
    ("SIM not inserted", CME_SIM_NOT_INSERTED),
    ("SIM failure", CME_SIM_FAILURE),
    ("SIM busy", CME_SIM_BUSY),
    ("SIM wrong", 15),
    ("invalid index", 21),
    ("not found", 22),
    ("incorrect parameters", 50),
    ("unknown", 100),
];

/// The code of a `+CME ERROR:` payload: a number, or one of [`CME_TEXTS`] (case and
/// surrounding blanks ignored).
pub(super) fn cme_code(payload: &str) -> u32 {
    let payload = payload.trim();
    if let Ok(n) = payload.parse() {
        return n;
    }
    CME_TEXTS
        .iter()
        .find(|(text, _)| text.eq_ignore_ascii_case(payload))
        .map_or(CME_UNKNOWN_TEXT, |(_, code)| *code)
}

/// `OK`, `ERROR` or `+CME ERROR: …`: the line that ends a command's answer.
fn is_final_result(line: &str) -> bool {
    line == "OK" || line == "ERROR" || line.starts_with("+CME ERROR:")
}
