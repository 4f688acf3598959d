//! `iotsafe-pkcs11`: field tools for the module. `iotsafe-pkcs11 doctor` finds out why a
//! gateway shows "no token": it checks, in order, the configuration, pcscd, each configured
//! modem, the applet, its objects and a test signature, and prints a verdict per step with the
//! fix for each failure (`--json` for fleet tooling).

#![deny(unsafe_code)]

mod card_check;
mod config_check;
mod doctor;
mod modem_check;
mod pcscd_check;
mod report;
mod system;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "iotsafe-pkcs11",
    version,
    about = "Field tools for the iotsafe-pkcs11 module"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configuration, pcscd, the modems, the applet, its objects and a test
    /// signature, and say how to fix what fails. Exit status 0: no failure; 1: a failure.
    Doctor(DoctorArgs),
}

#[derive(clap::Args)]
struct DoctorArgs {
    /// Print the findings as JSON (one object) instead of text.
    #[arg(long)]
    json: bool,
    /// The configuration file to check (default: what the module reads:
    /// $IOTSAFE_PKCS11_CONFIG, ~/.config/iotsafe-pkcs11/config.toml,
    /// /etc/iotsafe-pkcs11/config.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Do not make the test signatures (the card is only read).
    #[arg(long)]
    no_signature: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Doctor(args) => {
            // The module's own log lines (warnings and worse) go to stderr beside the report.
            let _ = env_logger::Builder::new()
                .parse_filters(
                    &std::env::var(iotsafe_pkcs11::config::ENV_LOG)
                        .unwrap_or_else(|_| "error".into()),
                )
                .target(env_logger::Target::Stderr)
                .try_init();
            let report = doctor::run(&doctor::Options {
                config: args.config,
                signature: !args.no_signature,
            });
            let text = if args.json {
                report.to_json() + "\n"
            } else {
                report.to_text()
            };
            // A reader that went away (`| head`) is not worth a panic.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            if report.has_failure() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
