//! Helpers for the integration tests and the benches, by where the module under test runs:
//!
//! - [`inprocess`]: the module's `C_*` functions called directly in the test process, with
//!   simulated cards as its readers ([`sim_reader`] plugs them in). For every test file without
//!   `stack_` in its name, and for the benches (which include this file with `#[path]`).
//! - [`stack`]: the built `.so` loaded by real tools (pkcs11-tool, OpenSSL, …) over the
//!   pcscd+vpcd stack that `scripts/stack.sh` starts. For the `stack_*.rs` tests.
//!
//! - [`templates`]: attribute templates built from owned values, and the object calls that take
//!   them (in-process).
//! - [`cryptoki_calls`]: calls through the `cryptoki` crate that several stack tests make.
//!
//! What both kinds use is here.
#![allow(dead_code)]

pub mod cryptoki_calls;
pub mod inprocess;
pub mod sim_reader;
pub mod stack;
pub mod templates;

use std::path::{Path, PathBuf};
use std::process::Command;

/// `openssl …` with no configuration at all (plain OpenSSL, no PKCS#11).
pub fn openssl_plain() -> Command {
    let mut c = Command::new("openssl");
    c.env("OPENSSL_CONF", "/dev/null");
    c
}

/// A directory that is created empty and removed again when this is dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `<system temp dir>/<name>`.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
