//! Linux abstract Unix sockets, where ModemManager's `mbim-proxy` and `qmi-proxy` listen
//! (`@mbim-proxy`, `@qmi-proxy`): the simulator can stand in for either proxy, and tests can
//! make sure the real one runs.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Binds the abstract name `name` (without the leading NUL). `AddrInUse` when a proxy (the real
/// one, or another simulator) already listens there.
pub(crate) fn listen(name: &str) -> io::Result<UnixListener> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    UnixListener::bind_addr(&addr)
}

/// Whether something listens on the abstract socket `name`.
pub fn is_bound(name: &str) -> bool {
    SocketAddr::from_abstract_name(name.as_bytes())
        .and_then(|a| UnixStream::connect_addr(&a))
        .is_ok()
}

/// ModemManager's proxy `/usr/libexec/<name>` (`mbim-proxy`, `qmi-proxy`) listening on
/// `@<name>`: the one already there (ModemManager's, another test's), else one started with
/// `--no-exit` in a session of its own and left running, as ModemManager's would be (it serves
/// any number of devices and clients). An error when it is not installed or does not listen
/// within 10 s.
pub fn ensure_modemmanager_proxy(name: &str) -> Result<(), String> {
    if is_bound(name) {
        return Ok(());
    }
    let binary = Path::new("/usr/libexec").join(name);
    if !binary.exists() {
        return Err(format!("{} is not installed", binary.display()));
    }
    let started = Command::new("setsid")
        .arg("--fork")
        .arg(&binary)
        .arg("--no-exit")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("setsid {}: {e}", binary.display()))?;
    if !started.success() {
        return Err(format!("setsid {}: {started}", binary.display()));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_bound(name) {
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not listen on @{name} within 10 s",
                binary.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
