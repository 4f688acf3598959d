//! Client side of the vsmartcard `vpcd` protocol (pcscd's IFD handler listens, we connect).
//!
//! Framing both ways: 2-byte big-endian length + payload. Driver→card payloads of length 1
//! are control codes: `00` power off, `01` power on, `02` reset, `04` get ATR (the only one
//! answered, with the ATR as a framed message). Longer payloads are command APDUs, each
//! answered with one framed response APDU.
//!
//! The driver cannot survive a command left without an answer (pcscd wedges for every
//! client), so serving a card here makes it refuse the faults that cause one
//! ([`refuse_unanswered_faults`]).

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::shared::SharedCard;

/// Control code: power off.
pub const CTRL_OFF: u8 = 0x00;
/// Control code: power on.
pub const CTRL_ON: u8 = 0x01;
/// Control code: reset.
pub const CTRL_RESET: u8 = 0x02;
/// Control code: get ATR.
pub const CTRL_ATR: u8 = 0x04;

/// How often blocking operations wake up to look at the shutdown flag.
const POLL: Duration = Duration::from_millis(200);

/// Why vpcd mode refuses faults that leave a command without an answer.
pub const UNANSWERED_REFUSAL: &str = "in vpcd mode that wedges pcscd's vpcd driver for every client (use `remove` or `sw=XXXX` instead)";

/// Makes `card` refuse the faults that leave a command without an answer (`mute`,
/// `truncate=0`), see [`Faults::refuse_unanswered`](crate::Faults::refuse_unanswered).
/// [`run`] and [`serve_connection`] call it; call it earlier when a control socket
/// serving the card starts first.
pub fn refuse_unanswered_faults(card: &SharedCard) {
    card.faults().refuse_unanswered(UNANSWERED_REFUSAL);
}

/// Writes one framed message.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u16::try_from(payload.len())
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "frame longer than 65535"))?;
    let mut buf = Vec::with_capacity(payload.len() + 2);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    w.flush()
}

/// Reads exactly `buf.len()` bytes, waking up every read timeout to check `stop`.
/// Returns `Ok(false)` on clean EOF before the first byte, or when `stop` says so.
fn read_exact_polling(
    stream: &mut TcpStream,
    buf: &mut [u8],
    stop: &dyn Fn() -> bool,
) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        if stop() {
            return Ok(false);
        }
        match stream.read(&mut buf[got..]) {
            Ok(0) => {
                if got == 0 {
                    return Ok(false);
                }
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "truncated frame"));
            }
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Acknowledges what arrived at once (Linux `TCP_QUICKACK`, which the kernel clears again by
/// itself, so it is set after every read).
fn quick_ack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// Serves one vpcd connection until EOF, an I/O error, `shutdown`, or the card being
/// removed ([`SharedCard::remove`]; the connection is then closed, which pcscd reports as
/// "no card").
pub fn serve_connection(
    mut stream: TcpStream,
    card: &SharedCard,
    shutdown: &AtomicBool,
) -> io::Result<()> {
    refuse_unanswered_faults(card);
    stream.set_read_timeout(Some(POLL))?;
    stream.set_nodelay(true)?;
    let epoch = card.presence_epoch();
    let stop =
        || shutdown.load(Ordering::SeqCst) || !card.is_present() || card.presence_epoch() != epoch;
    loop {
        let mut hdr = [0u8; 2];
        if !read_exact_polling(&mut stream, &mut hdr, &stop)? {
            return Ok(());
        }
        // The driver writes the length and the APDU separately with Nagle on: the APDU waits
        // until the length is acknowledged, which delayed ACK holds back ~40 ms per APDU.
        quick_ack(&stream);
        let len = u16::from_be_bytes(hdr) as usize;
        let mut payload = vec![0u8; len];
        if !read_exact_polling(&mut stream, &mut payload, &stop)? {
            return Ok(());
        }
        if stop() {
            return Ok(());
        }
        match payload.as_slice() {
            [] => {}
            [CTRL_OFF] | [CTRL_RESET] => card.power_off(),
            [CTRL_ON] => card.power_off(), // a fresh power-up: no channel state
            [CTRL_ATR] => write_frame(&mut stream, &card.atr())?,
            [_] => {} // unknown control code: ignore
            apdu => {
                let resp = card.transmit(apdu);
                write_frame(&mut stream, &resp)?;
            }
        }
    }
}

/// Connects to the vpcd driver at `host:port`, retrying every ~200 ms, serves the card,
/// and reconnects whenever the connection drops, until `shutdown` is set. While the card
/// is removed ([`SharedCard::remove`]) it stays disconnected; after
/// [`SharedCard::insert`] it connects again (a fresh power-up for pcscd).
/// `log` receives human-readable connection events.
pub fn run(
    card: &SharedCard,
    host: &str,
    port: u16,
    shutdown: &AtomicBool,
    log: &mut dyn FnMut(&str),
) {
    refuse_unanswered_faults(card);
    let addr = format!("{host}:{port}");
    let mut announced_wait = false;
    let mut announced_removed = false;
    while !shutdown.load(Ordering::SeqCst) {
        if !card.is_present() {
            if !announced_removed {
                log("card removed; waiting for insert");
                announced_removed = true;
            }
            std::thread::sleep(POLL);
            continue;
        }
        if announced_removed {
            log("card inserted; connecting");
            announced_removed = false;
        }
        let epoch = card.presence_epoch();
        match TcpStream::connect(&addr) {
            Ok(stream) => {
                announced_wait = false;
                log(&format!("connected to vpcd at {addr}"));
                let r = serve_connection(stream, card, shutdown);
                if card.presence_epoch() == epoch {
                    card.power_off();
                }
                match r {
                    Ok(()) if shutdown.load(Ordering::SeqCst) => break,
                    Ok(()) if card.presence_epoch() != epoch => {
                        log("card removed: closed the vpcd connection")
                    }
                    Ok(()) => log("vpcd closed the connection; reconnecting"),
                    Err(e) => log(&format!("vpcd connection error: {e}; reconnecting")),
                }
            }
            Err(e) => {
                if !announced_wait {
                    log(&format!("waiting for vpcd at {addr} ({e}); retrying"));
                    announced_wait = true;
                }
                std::thread::sleep(POLL);
            }
        }
    }
    log("vpcd client stopped");
}
