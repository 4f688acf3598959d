//! A modem's SIM reached with QMI (the UIM service) on its control device, directly or through
//! ModemManager's `qmi-proxy` (see `docs/modems.md`, QMI).
//!
//! | file | what |
//! |---|---|
//! | `message.rs` | QMUX frames and TLVs |
//! | `uim.rs` | the CTL and UIM messages used, QMI error codes, CLA of a logical channel |
//! | `link.rs` | one request and its response on the stream: transaction ids, deadlines |
//! | `connection.rs` | the card connection: UIM client id, turns, channels, APDUs |

mod connection;
mod link;
mod message;
mod uim;

pub use connection::QmiConnection;
