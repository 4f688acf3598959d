//! The simulator as a cellular modem on a pseudo-terminal (3GPP TS 27.007 AT commands).
//!
//! [`spawn`] creates a pty pair, points a symlink at the host side (the device a host opens
//! like a modem tty) and answers AT commands on the other side in a background thread:
//! `AT`, `ATE0`/`ATE1`, `ATI`, `AT+CMEE`, `AT+CSIM`, `AT+CCHO`, `AT+CGLA`, `AT+CCHC`. APDUs
//! go to the same [`SharedCard`] the other transports use, so its counters count them.
//! Misbehaviour of real modems can be injected ([`ModemOptions`]) and changed while the
//! modem runs ([`ModemControl`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

use crate::shared::SharedCard;

/// `+CME ERROR` codes used by the modem (3GPP TS 27.007 §9.2.1).
pub mod cme {
    /// Operation not allowed (CCHO: no free logical channel).
    pub const NOT_ALLOWED: u16 = 3;
    /// SIM not inserted (card removed).
    pub const SIM_NOT_INSERTED: u16 = 10;
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
            SIM_BUSY => "SIM busy",
            INVALID_INDEX => "invalid index",
            NOT_FOUND => "not found",
            INCORRECT_PARAMETERS => "incorrect parameters",
            _ => "unknown",
        }
    }
}

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
    fn csim(self) -> bool {
        matches!(self, AtDialect::Csim | AtDialect::Both)
    }
    fn cgla(self) -> bool {
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
/// modem runs ([`ModemControl::update`], [`ModemControl::set_quirk`]).
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
    /// Answer `AT+CCHO` with the bare session id (`<sessionid>`, as TS 27.007 writes it)
    /// instead of `+CCHO: <sessionid>`.
    pub bare_ccho: bool,
    /// Seed of the generator that places URCs/noise and sizes the chunks.
    pub seed: u64,
}

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
            bare_ccho: false,
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
    "bare_ccho",
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
            "bare_ccho" => self.bare_ccho = parse_bool(value)?,
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
            "bare_ccho": self.bare_ccho,
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
        })
    }
}

struct Shared {
    card: SharedCard,
    options: Mutex<ModemOptions>,
    stats: Mutex<ModemStats>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cloneable handle to a running modem's settings and counters (for control sockets
/// and tests). It does not keep the modem running.
#[derive(Clone)]
pub struct ModemControl {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ModemControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModemControl")
            .field("options", &self.options())
            .finish()
    }
}

impl ModemControl {
    /// The card behind the modem.
    pub fn card(&self) -> &SharedCard {
        &self.shared.card
    }

    /// A copy of the current options (the live echo state included).
    pub fn options(&self) -> ModemOptions {
        lock(&self.shared.options).clone()
    }

    /// Replaces all options; takes effect with the next command line.
    pub fn set_options(&self, options: ModemOptions) {
        *lock(&self.shared.options) = options;
    }

    /// Changes options in place.
    pub fn update<R>(&self, f: impl FnOnce(&mut ModemOptions) -> R) -> R {
        f(&mut lock(&self.shared.options))
    }

    /// Sets one quirk by name, see [`ModemOptions::set`].
    pub fn set_quirk(&self, name: &str, value: &str) -> Result<(), String> {
        self.update(|o| o.set(name, value))
    }

    /// Stops answering (command lines are read and dropped) until [`ModemControl::unhang`].
    pub fn hang(&self) {
        self.update(|o| o.hang = true);
    }

    /// Resumes answering (also cancels a pending `hang_after`).
    pub fn unhang(&self) {
        self.update(|o| {
            o.hang = false;
            o.hang_after = 0;
        });
    }

    /// Per-APDU / per-signature latency of the card (`None` keeps the current value).
    pub fn set_latency(&self, apdu: Option<Duration>, signature: Option<Duration>) {
        self.shared.card.set_latency(apdu, signature);
    }

    /// Modem counters since start or [`ModemControl::reset_stats`].
    pub fn stats(&self) -> ModemStats {
        lock(&self.shared.stats).clone()
    }

    /// Clears the modem counters (not the card's).
    pub fn reset_stats(&self) {
        *lock(&self.shared.stats) = ModemStats::default();
    }

    fn count(&self, f: impl FnOnce(&mut ModemStats)) {
        f(&mut lock(&self.shared.stats));
    }
}

/// A running modem. Dropping it (or [`ModemHandle::stop`]) ends the serving thread,
/// closes the pty (a host's reads then fail) and removes the symlink.
/// Dereferences to its [`ModemControl`].
#[derive(Debug)]
pub struct ModemHandle {
    control: ModemControl,
    thread: Option<JoinHandle<()>>,
    link: PathBuf,
    device: PathBuf,
}

impl ModemHandle {
    /// The symlink given to [`spawn`].
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// The host-side device the symlink points to (e.g. `/dev/pts/7`).
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// A cloneable control handle.
    pub fn control(&self) -> ModemControl {
        self.control.clone()
    }

    /// Stops the modem now (same as dropping the handle).
    pub fn stop(self) {
        drop(self);
    }

    fn shutdown(&mut self) {
        self.control.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::fs::read_link(&self.link).ok().as_deref() == Some(self.device.as_path()) {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

impl std::ops::Deref for ModemHandle {
    type Target = ModemControl;
    fn deref(&self) -> &ModemControl {
        &self.control
    }
}

impl Drop for ModemHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn last_os_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Opens a pty pair; returns (master, slave, slave path). The line discipline is put in
/// raw mode (no echo, no CR/LF translation, 8 bits).
fn open_pty() -> io::Result<(File, File, PathBuf)> {
    // SAFETY: plain libc calls on a descriptor we own; ptsname_r writes at most buf.len().
    let master = unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(last_os_error("posix_openpt"));
        }
        OwnedFd::from_raw_fd(fd)
    };
    let mfd = master.as_raw_fd();
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: see above.
    unsafe {
        if libc::grantpt(mfd) != 0 {
            return Err(last_os_error("grantpt"));
        }
        if libc::unlockpt(mfd) != 0 {
            return Err(last_os_error("unlockpt"));
        }
        if libc::ptsname_r(mfd, name.as_mut_ptr(), name.len()) != 0 {
            return Err(last_os_error("ptsname_r"));
        }
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    let path = PathBuf::from(path.to_string_lossy().into_owned());
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&path)?;
    // SAFETY: termios calls on an open tty descriptor with a zero-initialised struct.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(slave.as_raw_fd(), &mut t) != 0 {
            return Err(last_os_error("tcgetattr"));
        }
        libc::cfmakeraw(&mut t);
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        if libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return Err(last_os_error("tcsetattr"));
        }
        let flags = libc::fcntl(mfd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(mfd, libc::F_SETFL, flags | libc::O_NONBLOCK) != 0 {
            return Err(last_os_error("fcntl"));
        }
    }
    Ok((File::from(master), slave, path))
}

/// Creates the pty, makes `link` a symlink to its host side (replacing a stale symlink;
/// any other existing file is an error) and serves AT commands until the handle is
/// dropped.
pub fn spawn(card: SharedCard, link: &Path, options: ModemOptions) -> io::Result<ModemHandle> {
    if let Ok(meta) = std::fs::symlink_metadata(link) {
        if meta.file_type().is_symlink() {
            std::fs::remove_file(link)?;
        } else {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists and is not a symlink", link.display()),
            ));
        }
    }
    let (master, slave, device) = open_pty()?;
    std::os::unix::fs::symlink(&device, link)?;
    let seed = options.seed;
    let shared = Arc::new(Shared {
        card,
        options: Mutex::new(options),
        stats: Mutex::new(ModemStats::default()),
        stop: AtomicBool::new(false),
    });
    let control = ModemControl { shared };
    let server = Server {
        control: control.clone(),
        master,
        _slave: slave,
        rng: Rng::new(seed),
        seed,
        cmee: 1,
        sessions: BTreeMap::new(),
        next_session: 1,
        seen_epoch: control.shared.card.presence_epoch(),
        busy_counter: 0,
        urc_index: 0,
    };
    let thread = std::thread::Builder::new()
        .name("modem".into())
        .spawn(move || server.run());
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_file(link);
            return Err(e);
        }
    };
    Ok(ModemHandle {
        control,
        thread: Some(thread),
        link: link.to_path_buf(),
        device,
    })
}

/// xorshift64*: placement of URCs/noise and chunk sizes, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn chance(&mut self) -> bool {
        self.next() & 0x100 != 0
    }
}

const URCS: &[&str] = &[
    "+CREG: 1",
    "RING",
    "^SYSSTART",
    "+CGREG: 5",
    "+CEREG: 1",
    "+CSQ: 20,99",
];

const GARBAGE: &[&[u8]] = &[
    b"+XYZ: noise",
    b"\xFF\xFE",
    b"~#@!%",
    b"\x7F\x80\x81\xFE",
    b"+NOISE: 1,\"ab\"",
];

/// Longest command line kept; longer lines answer `ERROR`.
const MAX_LINE: usize = 65536;
/// How often blocking waits look at the stop flag.
const POLL_MS: i32 = 50;

/// The final result of a command.
enum Final {
    Ok,
    Error,
    Cme(u16),
}

struct Answer {
    info: Vec<String>,
    fin: Final,
}

impl Answer {
    fn ok() -> Answer {
        Answer {
            info: Vec::new(),
            fin: Final::Ok,
        }
    }
    fn error() -> Answer {
        Answer {
            info: Vec::new(),
            fin: Final::Error,
        }
    }
    fn cme(code: u16) -> Answer {
        Answer {
            info: Vec::new(),
            fin: Final::Cme(code),
        }
    }
    fn info(line: String) -> Answer {
        Answer {
            info: vec![line],
            fin: Final::Ok,
        }
    }
}

/// A parsed command parameter.
#[derive(Debug, PartialEq, Eq)]
enum Param {
    Int(u64),
    Str(String),
}

/// Splits `a,"b,c",d` at commas outside quotes. Strings must be quoted, numbers decimal.
fn parse_params(s: &str) -> Option<Vec<Param>> {
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
fn strict_hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    hex::decode(s).ok()
}

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

struct Server {
    control: ModemControl,
    master: File,
    /// Kept open so the master never sees a hang-up while no host has the port open.
    _slave: File,
    rng: Rng,
    seed: u64,
    /// `AT+CMEE` mode: 0 plain `ERROR`, 1 numeric (default), 2 verbose.
    cmee: u8,
    /// Session id → logical channel.
    sessions: BTreeMap<u64, u8>,
    next_session: u64,
    seen_epoch: u64,
    busy_counter: u64,
    urc_index: usize,
}

impl Server {
    fn stopping(&self) -> bool {
        self.control.shared.stop.load(Ordering::SeqCst)
    }

    fn card(&self) -> SharedCard {
        self.control.shared.card.clone()
    }

    /// Waits up to `POLL_MS` for `events` on the master; true if ready.
    fn poll(&self, events: libc::c_short) -> bool {
        let mut p = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, POLL_MS) };
        r > 0 && p.revents != 0
    }

    fn run(mut self) {
        let mut line: Vec<u8> = Vec::new();
        let mut overflow = false;
        let mut buf = [0u8; 4096];
        while !self.stopping() {
            if !self.poll(libc::POLLIN) {
                continue;
            }
            let n = match self.master.read(&mut buf) {
                Ok(0) => {
                    std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                    continue;
                }
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    continue;
                }
                Err(_) => {
                    // EIO while no slave is open cannot happen (we hold one); back off.
                    std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                    continue;
                }
            };
            for &b in &buf[..n] {
                if b == b'\r' || b == b'\n' {
                    if !line.is_empty() || overflow {
                        let l = std::mem::take(&mut line);
                        if self.command_line(&l, overflow).is_err() {
                            return;
                        }
                        overflow = false;
                    }
                } else if line.len() < MAX_LINE {
                    line.push(b);
                } else {
                    overflow = true;
                }
            }
        }
    }

    /// Handles one command line. Err = the modem is stopping.
    fn command_line(&mut self, line: &[u8], overflow: bool) -> io::Result<()> {
        let opts = self.control.options();
        if opts.seed != self.seed {
            self.seed = opts.seed;
            self.rng = Rng::new(opts.seed);
        }
        if opts.hang {
            self.control.count(|s| s.dropped += 1);
            return Ok(());
        }
        if opts.echo {
            let mut e = line.to_vec();
            e.push(b'\r');
            self.write(&e, opts.split)?;
        }
        let too_long = opts.max_command_len > 0 && line.len() > opts.max_command_len;
        let answer = if overflow || too_long {
            Answer::error()
        } else {
            self.execute(line, &opts)
        };
        // Count down before answering, so a host that saw the answer sees the hang state.
        self.control.update(|o| {
            if o.hang_after > 0 {
                o.hang_after -= 1;
                if o.hang_after == 0 {
                    o.hang = true;
                }
            }
        });
        self.sleep(Duration::from_millis(opts.delay_ms))?;
        let bytes = self.render(&answer, &opts);
        self.write(&bytes, opts.split)?;
        Ok(())
    }

    fn sleep(&self, d: Duration) -> io::Result<()> {
        let step = Duration::from_millis(POLL_MS as u64);
        let mut left = d;
        while !left.is_zero() {
            if self.stopping() {
                return Err(io::Error::new(ErrorKind::Interrupted, "stopping"));
            }
            let s = left.min(step);
            std::thread::sleep(s);
            left -= s;
        }
        Ok(())
    }

    /// Interleaved extras (URC / noise), each with probability 1/2 when enabled.
    fn extras(&mut self, out: &mut Vec<u8>, opts: &ModemOptions) {
        if opts.urc && self.rng.chance() {
            let u = URCS[self.urc_index % URCS.len()];
            self.urc_index += 1;
            frame(out, u.as_bytes());
            self.control.count(|s| s.urc += 1);
        }
        if opts.garbage && self.rng.chance() {
            let g = GARBAGE[self.rng.below(GARBAGE.len() as u64) as usize];
            frame(out, g);
            self.control.count(|s| s.garbage += 1);
        }
    }

    fn render(&mut self, a: &Answer, opts: &ModemOptions) -> Vec<u8> {
        let mut out = Vec::new();
        self.extras(&mut out, opts);
        for l in &a.info {
            frame(&mut out, l.as_bytes());
        }
        if !a.info.is_empty() {
            self.extras(&mut out, opts);
        }
        let fin = match a.fin {
            Final::Ok => {
                self.control.count(|s| s.ok += 1);
                "OK".to_string()
            }
            Final::Error => {
                self.control.count(|s| s.error += 1);
                "ERROR".to_string()
            }
            Final::Cme(code) => match self.cmee {
                0 => {
                    self.control.count(|s| s.error += 1);
                    "ERROR".to_string()
                }
                m => {
                    self.control
                        .count(|s| *s.cme_error.entry(code).or_insert(0) += 1);
                    if m == 2 {
                        format!("+CME ERROR: {}", cme::text(code))
                    } else {
                        format!("+CME ERROR: {code}")
                    }
                }
            },
        };
        frame(&mut out, fin.as_bytes());
        self.control.count(|s| s.commands += 1);
        out
    }

    /// Writes all of `data`, in random small chunks when `split`.
    fn write(&mut self, data: &[u8], split: bool) -> io::Result<()> {
        if !split {
            return self.write_all(data);
        }
        let mut rest = data;
        while !rest.is_empty() {
            let n = (1 + self.rng.below(6) as usize).min(rest.len());
            self.write_all(&rest[..n])?;
            rest = &rest[n..];
            if !rest.is_empty() {
                std::thread::sleep(Duration::from_millis(1 + self.rng.below(3)));
            }
        }
        Ok(())
    }

    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.stopping() {
                return Err(io::Error::new(ErrorKind::Interrupted, "stopping"));
            }
            match self.master.write(data) {
                Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "pty closed")),
                Ok(n) => data = &data[n..],
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    self.poll(libc::POLLOUT);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn execute(&mut self, line: &[u8], opts: &ModemOptions) -> Answer {
        let Ok(text) = std::str::from_utf8(line) else {
            return Answer::error();
        };
        let text = text.trim_matches(|c: char| c == ' ' || c == '\t');
        if text.len() < 2 || !text.is_char_boundary(2) || !text[..2].eq_ignore_ascii_case("AT") {
            return Answer::error();
        }
        let cmd = text[2..].to_ascii_uppercase();
        let (name, rest) = match cmd.find(['=', '?']) {
            Some(i) => (&cmd[..i], &cmd[i..]),
            None => (cmd.as_str(), ""),
        };
        match (name, rest) {
            ("", "") => Answer::ok(),
            ("E" | "E0", "") => {
                self.control.update(|o| o.echo = false);
                Answer::ok()
            }
            ("E1", "") => {
                self.control.update(|o| o.echo = true);
                Answer::ok()
            }
            ("I" | "I0", "") => Answer {
                info: vec![
                    "iotsafe-sim".to_string(),
                    "simulated modem for GSMA IoT SAFE tests".to_string(),
                    format!("Revision: {}", env!("CARGO_PKG_VERSION")),
                ],
                fin: Final::Ok,
            },
            ("+CMEE", "?") => Answer::info(format!("+CMEE: {}", self.cmee)),
            ("+CMEE", "=?") => Answer::info("+CMEE: (0-2)".to_string()),
            ("+CMEE", r) => match r.strip_prefix('=').map(str::trim) {
                Some(v @ ("0" | "1" | "2")) => {
                    self.cmee = v.as_bytes()[0] - b'0';
                    Answer::ok()
                }
                _ => Answer::error(),
            },
            ("+CSIM", r) if opts.at.csim() => {
                self.control.count(|s| s.csim += 1);
                if r == "=?" {
                    return Answer::ok();
                }
                match r.strip_prefix('=') {
                    Some(p) => self.csim(p, opts),
                    None => Answer::error(),
                }
            }
            ("+CCHO" | "+CGLA" | "+CCHC", r) if opts.at.cgla() => {
                self.control.count(|s| match name {
                    "+CCHO" => s.ccho += 1,
                    "+CGLA" => s.cgla += 1,
                    _ => s.cchc += 1,
                });
                if r == "=?" {
                    return Answer::ok();
                }
                let Some(p) = r.strip_prefix('=') else {
                    return Answer::error();
                };
                match name {
                    "+CCHO" => self.ccho(p),
                    "+CGLA" => self.cgla(p, opts),
                    _ => self.cchc(p),
                }
            }
            _ => Answer::error(),
        }
    }

    /// Forgets the session table when the card was removed since we last looked.
    fn sync_presence(&mut self) -> bool {
        let card = self.card();
        let epoch = card.presence_epoch();
        if epoch != self.seen_epoch {
            self.sessions.clear();
            self.seen_epoch = epoch;
        }
        card.is_present()
    }

    fn busy(&mut self, opts: &ModemOptions) -> bool {
        self.busy_counter += 1;
        if opts.busy_every > 0 && self.busy_counter.is_multiple_of(opts.busy_every as u64) {
            self.control.count(|s| s.busy += 1);
            return true;
        }
        false
    }

    fn csim(&mut self, params: &str, opts: &ModemOptions) -> Answer {
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
        if self.busy(opts) {
            return Answer::cme(cme::SIM_BUSY);
        }
        let r = hex::encode_upper(&self.card().transmit(&apdu));
        Answer::info(format!("+CSIM: {},\"{r}\"", r.len()))
    }

    fn ccho(&mut self, params: &str) -> Answer {
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
        let bare = self.control.options().bare_ccho;
        Answer::info(if bare {
            sid.to_string()
        } else {
            format!("+CCHO: {sid}")
        })
    }

    fn cgla(&mut self, params: &str, opts: &ModemOptions) -> Answer {
        let parsed = match parse_params(params).as_deref() {
            Some([Param::Int(sid), Param::Int(len), Param::Str(hex)])
                if *len == hex.len() as u64 =>
            {
                strict_hex(hex).map(|a| (*sid, a))
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
        let r = hex::encode_upper(&self.card().transmit(&apdu));
        Answer::info(format!("+CGLA: {},\"{r}\"", r.len()))
    }

    fn cchc(&mut self, params: &str) -> Answer {
        let sid = match parse_params(params).as_deref() {
            Some([Param::Int(sid)]) => *sid,
            _ => return Answer::cme(cme::INCORRECT_PARAMETERS),
        };
        if !self.sync_presence() {
            return Answer::cme(cme::SIM_NOT_INSERTED);
        }
        let Some(ch) = self.sessions.remove(&sid) else {
            return Answer::cme(cme::INVALID_INDEX);
        };
        self.card().transmit(&[0x00, 0x70, 0x80, ch]);
        Answer::ok()
    }
}

/// Appends `\r\n<line>\r\n`.
fn frame(out: &mut Vec<u8>, line: &[u8]) {
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
