//! A modem's SIM reached with MBIM (MS UICC low-level access) on its control device, directly
//! or through ModemManager's `mbim-proxy`.
//!
//! | file | what |
//! |---|---|
//! | `message.rs` | framing: requests, fragments, replies matched by TransactionId |
//! | `uicc.rs` | the UICC CIDs' information buffers, the proxy's configuration |
//! | `connection.rs` | [`MbimConnection`]: opening, turns, channels, APDUs, error mapping |

mod connection;
mod message;
mod uicc;

pub use connection::MbimConnection;
