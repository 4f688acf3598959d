//! Listening on a Linux abstract Unix socket, as ModemManager's `mbim-proxy` and `qmi-proxy` do
//! (`@mbim-proxy`, `@qmi-proxy`): the simulator can stand in for either proxy.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

/// Binds the abstract name `name` (without the leading NUL). `AddrInUse` when a proxy (the real
/// one, or another simulator) already listens there.
pub(crate) fn listen(name: &str) -> io::Result<UnixListener> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    UnixListener::bind_addr(&addr)
}
