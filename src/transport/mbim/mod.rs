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

/// Fuzzing entry point: `bytes[1..]` as the device's stream, fed in pieces of `1 + bytes[0] % 64`
/// bytes, cut into replies (fragments joined, garbage dropped), and every command reply's
/// information buffer read as each UICC answer the module parses. Returns the replies cut.
pub fn read_replies_for_fuzzing(bytes: &[u8]) -> usize {
    let piece = 1 + usize::from(bytes.first().copied().unwrap_or(0) % 64);
    let mut reader = message::ReplyReader::default();
    let mut replies = 0;
    for chunk in bytes.get(1..).unwrap_or_default().chunks(piece) {
        reader.push(chunk);
        while let Ok(Some(reply)) = reader.next_reply() {
            replies += 1;
            if let message::Reply::CommandDone { info, .. } = reply {
                let _ = uicc::parse_atr(&info);
                let _ = uicc::parse_open_channel(&info);
                let _ = uicc::parse_apdu(&info);
                let _ = uicc::parse_hardware_info(&info);
            }
        }
    }
    replies
}
