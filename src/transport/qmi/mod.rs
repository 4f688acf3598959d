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

/// Fuzzing entry point: `bytes` as the device's stream, cut into QMUX frames as the module
/// reads them (a frame that is not QMUX ends the stream), and every frame's TLVs read as the
/// module reads a response: the result, and the APDU answer. Returns the frames cut.
pub fn read_frames_for_fuzzing(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let mut frames = 0;
    while let message::Cut::Frame(len, response) = message::cut(rest) {
        frames += 1;
        if let Some(response) = response {
            let _ = response.is_response();
            let _ = response.result();
            if let Some(tlv) = response.tlv(0x10) {
                let _ = uim::apdu_response(tlv);
            }
        }
        rest = &rest[len..];
    }
    frames
}
