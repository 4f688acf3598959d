//! The serving thread: reads command lines from the pty, runs them, and writes the answers
//! with the configured misbehaviour (echo, URCs, noise, split writes, delays, hangs).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::at::{Answer, Final, cme, frame};
use super::{ModemControl, ModemOptions};
use crate::shared::CardSlot;

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

pub(super) struct Server<C: CardSlot> {
    pub(super) control: ModemControl<C>,
    master: File,
    /// Kept open so the master never sees a hang-up while no host has the port open.
    _slave: File,
    rng: Rng,
    seed: u64,
    /// `AT+CMEE` mode: 0 plain `ERROR`, 1 numeric (default), 2 verbose.
    cmee: u8,
    /// Session id → logical channel.
    pub(super) sessions: BTreeMap<u64, u8>,
    pub(super) next_session: u64,
    pub(super) seen_epoch: u64,
    pub(super) busy_counter: u64,
    urc_index: usize,
    /// `AT+ECSIMSLEEP=0` was sent (the `sim_sleeps` quirk): the SIM answers.
    sim_awake: bool,
}

impl<C: CardSlot> Server<C> {
    /// A server for `control`'s card on the pty `master` (`slave` is kept open).
    pub(super) fn new(control: ModemControl<C>, master: File, slave: File) -> Server<C> {
        let seed = control.options().seed;
        let seen_epoch = control.shared.card.power_epoch();
        Server {
            control,
            master,
            _slave: slave,
            rng: Rng::new(seed),
            seed,
            cmee: 1,
            sessions: BTreeMap::new(),
            next_session: 1,
            seen_epoch,
            busy_counter: 0,
            urc_index: 0,
            sim_awake: false,
        }
    }

    fn stopping(&self) -> bool {
        self.control.shared.stop.load(Ordering::SeqCst)
    }

    pub(super) fn card(&self) -> C {
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

    pub(super) fn run(mut self) {
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
        if answer.late_ms > 0 {
            // Where a modem with a ~300 ms cap would give up: a pause, a URC, more waiting.
            let first = answer.late_ms.min(300);
            self.sleep(Duration::from_millis(first))?;
            let mut urc = Vec::new();
            frame(&mut urc, b"+CREG: 1");
            self.control.count(|s| s.urc += 1);
            self.write(&urc, opts.split)?;
            self.sleep(Duration::from_millis(answer.late_ms - first))?;
        }
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
                    if m == 2 || opts.verbose_cme {
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
                self.control.update(|o| o.echo = !o.no_echo);
                Answer::ok()
            }
            // 27.007 §5.1, §5.2: manufacturer and model, one bare information line each.
            ("+CGMI" | "+GMI", "") => Answer::info(opts.manufacturer.clone()),
            ("+CGMM" | "+GMM", "") => Answer::info("IoT SAFE modem simulator".to_string()),
            ("I" | "I0", "") => Answer {
                info: vec![
                    opts.manufacturer.clone(),
                    "simulated modem for GSMA IoT SAFE tests".to_string(),
                    format!("Revision: {}", env!("CARGO_PKG_VERSION")),
                ],
                fin: Final::Ok,
                late_ms: 0,
            },
            // MediaTek's SIM sleep switch; other makers' modems do not know it.
            ("+ECSIMSLEEP", r) if opts.sim_sleeps => match r {
                "=0" => {
                    self.sim_awake = true;
                    Answer::ok()
                }
                "=1" => {
                    self.sim_awake = false;
                    Answer::ok()
                }
                "?" => Answer::info(format!("+ECSIMSLEEP: {}", u8::from(!self.sim_awake))),
                _ => Answer::error(),
            },
            ("+CSIM" | "+CCHO" | "+CGLA" | "+CCHC", r)
                if opts.sim_sleeps && !self.sim_awake && r != "=?" =>
            {
                Answer::cme(cme::NOT_ALLOWED)
            }
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
                    "+CCHO" => self.ccho(p, opts),
                    "+CGLA" => self.cgla(p, opts),
                    _ if opts.no_cchc => Answer::error(),
                    _ => self.cchc(p, opts),
                }
            }
            _ => Answer::error(),
        }
    }
}
