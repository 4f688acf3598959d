//! What can go wrong below the token: the transport, the card's status words, its answers.

use std::fmt;

use super::status::StatusWord;
use crate::transport::TransportError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppletError {
    /// Moving the bytes failed, or the card or reader is gone.
    Transport(TransportError),
    /// `command` was answered with a status word that is not success.
    Status {
        command: &'static str,
        sw: StatusWord,
    },
    /// The card's answer does not have the expected form.
    Malformed(String),
    /// A parameter does not fit into one APDU.
    ParameterTooLong(String),
    /// An object needs more STORE DATA blocks than the command can number.
    ObjectTooLarge,
    /// A command longer than a short APDU was built (a defect of this module).
    CommandTooLong,
    /// The channel has no connection any more (the token was closed or removed).
    NotConnected,
    /// After a card reset the applet no longer selects.
    AppletGone,
    /// The card (or the modem) has no logical channel left to open.
    NoChannelFree,
}

pub type Result<T> = std::result::Result<T, AppletError>;

impl AppletError {
    /// The card was reset or our logical channel is gone: reopening the channel and running
    /// the operation again may succeed.
    pub fn needs_reopen(&self) -> bool {
        matches!(
            self,
            AppletError::Transport(TransportError::CardReset)
                | AppletError::Status {
                    sw: StatusWord::CHANNEL_NOT_OPEN,
                    ..
                }
        )
    }

    /// The card or the reader is gone (removed, reset, unplugged), or the channel has no
    /// connection any more.
    pub fn card_gone(&self) -> bool {
        match self {
            AppletError::Transport(t) => t.is_removal(),
            AppletError::NotConnected | AppletError::AppletGone => true,
            _ => false,
        }
    }

    /// A command or route this module should never have built.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            AppletError::CommandTooLong | AppletError::Transport(TransportError::UnsupportedRoute)
        )
    }

    /// The status word of a refused command.
    pub fn status(&self) -> Option<StatusWord> {
        match self {
            AppletError::Status { sw, .. } => Some(*sw),
            _ => None,
        }
    }
}

impl From<TransportError> for AppletError {
    fn from(e: TransportError) -> Self {
        AppletError::Transport(e)
    }
}

impl fmt::Display for AppletError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppletError::Transport(e) => write!(f, "{e}"),
            AppletError::Status { command, sw } => {
                write!(f, "{command}: card answered SW {sw} ({})", sw.meaning())
            }
            AppletError::Malformed(s) | AppletError::ParameterTooLong(s) => f.write_str(s),
            AppletError::ObjectTooLarge => f.write_str("object too large for STORE DATA"),
            AppletError::CommandTooLong => f.write_str("APDU data longer than 255 bytes"),
            AppletError::NotConnected => f.write_str("token was removed"),
            AppletError::AppletGone => {
                f.write_str("the applet no longer selects after the card reset")
            }
            AppletError::NoChannelFree => f.write_str(
                "the card has no logical channel left (other applications hold them all)",
            ),
        }
    }
}
