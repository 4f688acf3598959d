//! The PC/SC source of a build without the `pcsc` feature (a modem-only module that does not
//! link libpcsclite): it has no readers, and says why when asked for them.

use std::path::PathBuf;

use super::{CardConnection, ReaderSource, TransportError};

const NOT_BUILT: &str = "PC/SC readers: this module was built without the `pcsc` feature (modems only); set \
     [pcsc] enabled = false to silence this";

/// No readers: this build has no PC/SC.
#[derive(Default)]
pub struct PcscReaders;

impl PcscReaders {
    pub fn new(_lock_dir: Option<PathBuf>) -> Self {
        PcscReaders
    }
}

impl ReaderSource for PcscReaders {
    fn reader_names(&self) -> Result<Vec<String>, TransportError> {
        Err(TransportError::Other(NOT_BUILT.into()))
    }

    fn card_present(&self, _reader: &str) -> bool {
        false
    }

    fn connect(&self, _reader: &str) -> Result<Option<Box<dyn CardConnection>>, TransportError> {
        Err(TransportError::ReaderUnavailable)
    }
}
