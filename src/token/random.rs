//! Random numbers from the card.

use crate::error::Result;
use cryptoki_sys::CK_SESSION_HANDLE;

use super::module::Module;

impl Module {
    pub fn generate_random(&self, handle: CK_SESSION_HANDLE, out: &mut [u8]) -> Result<()> {
        let s = self.session(handle)?;
        let token = s.lock().token.clone();
        if out.is_empty() {
            return Ok(());
        }
        self.on_card(handle, &token, |ch| ch.get_random(out))
    }
}
