//! The simulator as a cellular modem on a pseudo-terminal (3GPP TS 27.007 AT commands).
//!
//! [`spawn`] creates a pty pair, points a symlink at the host side (the device a host opens
//! like a modem tty) and answers AT commands on the other side in a background thread:
//! `AT`, `ATE0`/`ATE1`, `ATI`, `AT+CMEE`, `AT+CSIM`, `AT+CCHO`, `AT+CGLA`, `AT+CCHC`. APDUs
//! go to the card through [`CardSlot`] (normally the same [`SharedCard`] the other
//! transports use), so its counters count them.
//! Misbehaviour of real modems can be injected ([`ModemOptions`]) and changed while the
//! modem runs ([`ModemControl`]).
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`spawn`], [`ModemHandle`], [`ModemControl`] |
//! | `options.rs` | [`ModemOptions`] (dialect, quirks), [`ModemStats`] |
//! | `at.rs` | AT syntax: parameters, answers, `+CME ERROR` codes, framing |
//! | `server.rs` | the serving thread: line reading, command table, rendering, misbehaviour |
//! | `sim_access.rs` | `+CSIM`, `+CCHO`, `+CGLA`, `+CCHC` |
//! | `pty.rs` | the pseudo-terminal |
//! | `abstract_socket.rs` | the proxies' abstract socket |
//! | `mbim/`, `qmi/` | the same modem speaking MBIM or QMI on its control device |

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::shared::{CardSlot, SharedCard};

pub mod abstract_socket;
mod at;
pub mod mbim;
mod options;
mod pty;
pub mod qmi;
mod server;
mod sim_access;

pub use at::cme;
pub use options::{AtDialect, ModemOptions, ModemStats, QUIRKS};
pub use sim_access::cla_on_channel;

use server::Server;

struct Shared<C> {
    card: C,
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
pub struct ModemControl<C: CardSlot = SharedCard> {
    shared: Arc<Shared<C>>,
}

impl<C: CardSlot> std::fmt::Debug for ModemControl<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModemControl")
            .field("options", &self.options())
            .finish()
    }
}

impl<C: CardSlot> ModemControl<C> {
    /// The card behind the modem.
    pub fn card(&self) -> &C {
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

    /// Modem counters since start or [`ModemControl::reset_stats`].
    pub fn stats(&self) -> ModemStats {
        lock(&self.shared.stats).clone()
    }

    /// Clears the modem counters (not the card's); the session maximum restarts from the
    /// sessions open now.
    pub fn reset_stats(&self) {
        let mut stats = lock(&self.shared.stats);
        let open = stats.open_sessions;
        let client_ids = stats.client_ids;
        *stats = ModemStats {
            open_sessions: open,
            max_open_sessions: open,
            client_ids,
            max_client_ids: client_ids,
            ..ModemStats::default()
        };
    }

    fn count(&self, f: impl FnOnce(&mut ModemStats)) {
        f(&mut lock(&self.shared.stats));
    }

    /// Whether the card was power-cycled (reset, removed) since the epoch in `seen`, which is
    /// brought up to date: the modem's channels to it are gone then.
    fn card_power_cycled(&self, seen: &mut u64) -> bool {
        let epoch = self.card().power_epoch();
        std::mem::replace(seen, epoch) != epoch
    }

    /// Brings the open-session counters up to date with the `open` sessions (logical channels)
    /// the modem holds.
    fn record_open_sessions(&self, open: usize) {
        let open = open as u64;
        self.count(|s| {
            s.open_sessions = open;
            s.max_open_sessions = s.max_open_sessions.max(open);
        });
    }

    /// Counts one SIM command in `counter`; whether it is answered "SIM busy" (every
    /// `busy_every`th; 0: never).
    fn sim_busy(&self, busy_every: u32, counter: &mut u64) -> bool {
        *counter += 1;
        let busy = busy_every > 0 && counter.is_multiple_of(u64::from(busy_every));
        if busy {
            self.count(|s| s.busy += 1);
        }
        busy
    }
}

impl ModemControl<SharedCard> {
    /// Per-APDU / per-signature latency of the card (`None` keeps the current value).
    pub fn set_latency(&self, apdu: Option<Duration>, signature: Option<Duration>) {
        self.shared.card.set_latency(apdu, signature);
    }
}

/// A running modem. Dropping it (or [`ModemHandle::stop`]) ends the serving thread,
/// closes the pty (a host's reads then fail) and removes the symlink.
/// Dereferences to its [`ModemControl`].
#[derive(Debug)]
pub struct ModemHandle<C: CardSlot = SharedCard> {
    control: ModemControl<C>,
    thread: Option<JoinHandle<()>>,
    link: PathBuf,
    device: PathBuf,
}

impl<C: CardSlot> ModemHandle<C> {
    /// The symlink given to [`spawn`].
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// The host-side device the symlink points to (e.g. `/dev/pts/7`).
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// A cloneable control handle.
    pub fn control(&self) -> ModemControl<C> {
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

impl<C: CardSlot> std::ops::Deref for ModemHandle<C> {
    type Target = ModemControl<C>;
    fn deref(&self) -> &ModemControl<C> {
        &self.control
    }
}

impl<C: CardSlot> Drop for ModemHandle<C> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Creates the pty, makes `link` a symlink to its host side (replacing a stale symlink;
/// any other existing file is an error) and serves AT commands until the handle is
/// dropped.
pub fn spawn<C: CardSlot>(
    card: C,
    link: &Path,
    options: ModemOptions,
) -> io::Result<ModemHandle<C>> {
    let (master, slave, device) = linked_pty(link)?;
    let control = new_control(card, options);
    let server = Server::new(control.clone(), master, slave);
    let thread = std::thread::Builder::new()
        .name("modem".into())
        .spawn(move || server.run());
    into_handle(control, link, device, thread)
}

/// A new pty (master, slave kept open by the modem, host-side path) with `link` pointing at its
/// host side: a stale symlink there is replaced, any other existing file is an error.
pub(super) fn linked_pty(link: &Path) -> io::Result<(std::fs::File, std::fs::File, PathBuf)> {
    if let Ok(meta) = std::fs::symlink_metadata(link) {
        if !meta.file_type().is_symlink() {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists and is not a symlink", link.display()),
            ));
        }
        std::fs::remove_file(link)?;
    }
    let (master, slave, device) = pty::open_pty()?;
    std::os::unix::fs::symlink(&device, link)?;
    Ok((master, slave, device))
}

/// The settings and counters of a new modem for `card`.
pub(super) fn new_control<C: CardSlot>(card: C, options: ModemOptions) -> ModemControl<C> {
    ModemControl {
        shared: Arc::new(Shared {
            card,
            options: Mutex::new(options),
            stats: Mutex::new(ModemStats::default()),
            stop: AtomicBool::new(false),
        }),
    }
}

/// The handle of a modem whose serving `thread` was started; when it could not be, the link
/// made by [`linked_pty`] goes again.
pub(super) fn into_handle<C: CardSlot>(
    control: ModemControl<C>,
    link: &Path,
    device: PathBuf,
    thread: io::Result<JoinHandle<()>>,
) -> io::Result<ModemHandle<C>> {
    match thread {
        Ok(thread) => Ok(ModemHandle {
            control,
            thread: Some(thread),
            link: link.to_path_buf(),
            device,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(link);
            Err(e)
        }
    }
}
