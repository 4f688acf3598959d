//! A modem's SIM reached with QMI on its control device, directly or through the proxy.
//! (Being written; until then opening one fails.)

use super::sources::ControlSettings;
use super::{CardConnection, ChannelRoute, TransportError, Turn};

/// One modem's SIM over QMI.
pub struct QmiConnection {
    _private: (),
}

impl QmiConnection {
    pub fn open(settings: &ControlSettings) -> Result<Self, TransportError> {
        Err(TransportError::Other(format!(
            "{}: QMI is not supported yet",
            settings.device
        )))
    }
}

impl CardConnection for QmiConnection {
    fn transaction(&mut self, _route: ChannelRoute) -> Result<Box<dyn Turn + '_>, TransportError> {
        Err(TransportError::ReaderUnavailable)
    }
    fn is_present(&mut self) -> bool {
        false
    }
    fn disconnect(self: Box<Self>) {}
}
