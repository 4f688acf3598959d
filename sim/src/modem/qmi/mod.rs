//! The simulated modem speaking QMI on its control device (a pseudo-terminal), and optionally
//! as the qmi-proxy on an abstract socket. (Being written.)

use std::io;
use std::path::Path;

use super::{ModemHandle, ModemOptions};
use crate::shared::CardSlot;

/// Serves QMI for `card` on a new pty linked at `link` (and, with `proxy_socket`, as the
/// proxy on that abstract socket name) until the handle is dropped.
pub fn spawn<C: CardSlot>(
    _card: C,
    _link: &Path,
    _options: ModemOptions,
    _proxy_socket: Option<&str>,
) -> io::Result<ModemHandle<C>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "QMI is not simulated yet",
    ))
}
