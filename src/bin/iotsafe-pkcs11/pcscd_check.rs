//! Step 2: pcscd — reachable, willing to serve this user (polkit), and its readers.

use iotsafe_pkcs11::config::Config;
#[cfg(feature = "pcsc")]
use iotsafe_pkcs11::transport::ReaderFilter;

use crate::report::Finding;
#[cfg(feature = "pcsc")]
use crate::report::Verdict;

const CHECK: &str = "pcscd";

/// What was found, and the PC/SC readers whose cards the next steps check.
pub fn check(config: &Config) -> (Vec<Finding>, Vec<String>) {
    if !config.pcsc.enabled {
        return (
            vec![Finding::skip(
                CHECK,
                "PC/SC",
                "off in the configuration ([pcsc] enabled = false)",
            )],
            Vec::new(),
        );
    }
    check_enabled(config)
}

#[cfg(not(feature = "pcsc"))]
fn check_enabled(config: &Config) -> (Vec<Finding>, Vec<String>) {
    let finding = if config.modem.is_empty() {
        Finding::fail(
            CHECK,
            "PC/SC",
            "this build of the module has no PC/SC (a modem-only build) and no modem is configured",
            "configure the modem ([[modem]] in the configuration), or install a build with PC/SC",
        )
    } else {
        Finding::warn(
            CHECK,
            "PC/SC",
            "this build of the module has no PC/SC (a modem-only build); [pcsc] enabled is ignored",
            "set [pcsc] enabled = false",
        )
    };
    (vec![finding], Vec::new())
}

#[cfg(feature = "pcsc")]
fn check_enabled(config: &Config) -> (Vec<Finding>, Vec<String>) {
    let socket = socket_path();
    let subject = socket.clone();
    let context = match pcsc::Context::establish(pcsc::Scope::User) {
        Ok(context) => context,
        Err(e) => {
            let modems_too = !config.modem.is_empty();
            return (vec![refused_or_absent(&socket, e, modems_too)], Vec::new());
        }
    };
    let names = match context.list_readers_owned() {
        Ok(names) => names,
        Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
        Err(e) => {
            return (
                vec![Finding::fail(
                    CHECK,
                    subject,
                    format!("listing the readers failed: {e}"),
                    "restart pcscd (systemctl restart pcscd)",
                )],
                Vec::new(),
            );
        }
    };
    let names: Vec<String> = names
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    let filter = ReaderFilter {
        include: config.pcsc.readers.clone(),
        exclude: config.pcsc.exclude_readers.clone(),
    };
    let (selected, left_out): (Vec<String>, Vec<String>) =
        names.iter().cloned().partition(|n| filter.selects(n));
    let mut detail = format!("pcscd serves this user; {} reader(s)", names.len());
    if !selected.is_empty() {
        detail += &format!(": {}", selected.join(", "));
    }
    if !left_out.is_empty() {
        detail += &format!(
            " (left out by [pcsc] readers/exclude_readers: {})",
            left_out.join(", ")
        );
    }
    let finding = if selected.is_empty() && config.modem.is_empty() {
        Finding::fail(
            CHECK,
            subject,
            detail,
            "plug in the reader (`pcsc_scan` shows what pcscd sees), or correct [pcsc] readers / \
             exclude_readers; a modem's SIM is not a PC/SC reader: configure it as [[modem]]",
        )
    } else if selected.is_empty() {
        Finding::ok(CHECK, subject, format!("{detail}; none to check"))
    } else {
        Finding::ok(CHECK, subject, detail)
    };
    (vec![finding], selected)
}

#[cfg(feature = "pcsc")]
fn socket_path() -> String {
    std::env::var("PCSCLITE_CSOCK_NAME").unwrap_or_else(|_| "/run/pcscd/pcscd.comm".into())
}

/// Why `SCardEstablishContext` failed: no daemon, a socket this user may not open, or a daemon
/// that hung up on this user (polkit). A failure while modems are configured is a warning: the
/// modems work without pcscd.
#[cfg(feature = "pcsc")]
fn refused_or_absent(socket: &str, e: pcsc::Error, modems_too: bool) -> Finding {
    use std::io::ErrorKind;
    let optional = if modems_too {
        " (or, for a modem-only gateway, set [pcsc] enabled = false)"
    } else {
        ""
    };
    let (detail, fix) = match std::os::unix::net::UnixStream::connect(socket) {
        Err(err) if err.kind() == ErrorKind::NotFound => (
            format!("pcscd does not run (no socket {socket}): {e}"),
            format!(
                "install and start it: apt-get install pcscd; systemctl enable --now pcscd.socket{optional}"
            ),
        ),
        Err(err) if err.kind() == ErrorKind::PermissionDenied => (
            format!("this user may not open pcscd's socket ({err})"),
            "pcscd's socket directory must be reachable by every user (pcscd makes it 0755); \
             check the permissions of /run/pcscd"
                .to_string(),
        ),
        Err(err) => (
            format!("pcscd does not answer on {socket} ({err}): {e}"),
            format!("restart it: systemctl restart pcscd{optional}"),
        ),
        Ok(_) => (
            format!(
                "pcscd runs but refused this user ({e}): a pcscd built with polkit serves only \
                 users of an active local session, not daemons or containers"
            ),
            "add the user to the group iotsafe (usermod -aG iotsafe USER; the package's polkit \
             rule /usr/share/polkit-1/rules.d/60-iotsafe-pkcs11.rules lets that group use pcscd), \
             then restart the service"
                .to_string(),
        ),
    };
    let verdict = if modems_too {
        Verdict::Warn
    } else {
        Verdict::Fail
    };
    Finding::new(CHECK, socket, verdict).detail(detail).fix(fix)
}
