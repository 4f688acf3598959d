//! Step 3, per configured modem: the port (exists, permissions, who else has it open), then
//! for AT whether the modem answers and which SIM-access commands it has, and for MBIM/QMI
//! whether ModemManager's proxy is there.

use std::time::Duration;

use iotsafe_pkcs11::applet::modem_endpoint;
use iotsafe_pkcs11::config::{AtMode, Config, ModemConfig, ModemProtocol};
use iotsafe_pkcs11::transport::at::ModemConnection;
use iotsafe_pkcs11::transport::{ModemLink, TransportError, check_modem_turn_files};

use crate::report::{Finding, Verdict};
use crate::system::{self, Node};

/// The longest the doctor waits for one AT answer (a hung modem should not make it hang).
const AT_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

const UDEV_RULE_FIX: &str = "keep ModemManager off this port: a udev rule setting \
    ENV{ID_MM_PORT_IGNORE}=\"1\" for it (examples by vendor/model: \
    /usr/share/doc/iotsafe-pkcs11/examples/78-iotsafe-pkcs11-modem.rules), then `udevadm control \
    --reload && udevadm trigger` and restart ModemManager; or use the modem's MBIM/QMI device \
    through ModemManager's proxy (protocol = \"mbim\" or \"qmi\")";

/// The findings for `modem`, and whether its SIM is worth the card steps.
pub fn check(config: &Config, modem: &ModemConfig) -> (Vec<Finding>, bool) {
    let subject = modem.device.clone();
    let mut findings = Vec::new();
    let through_proxy = proxy_in_use(modem);
    let node = match port(modem, through_proxy.as_deref()) {
        Ok((node, finding)) => {
            findings.push(finding);
            node
        }
        Err(finding) => {
            findings.push(finding);
            return (findings, false);
        }
    };
    findings.push(turn_files(config, &subject));
    match modem.protocol {
        ModemProtocol::At => {
            findings.push(holders(&node, &subject));
            let answering = at_answers(config, modem, &subject, &mut findings);
            (findings, answering)
        }
        ModemProtocol::Mbim | ModemProtocol::Qmi => (findings, true),
    }
}

/// The proxy socket the module would go through for this modem, if it runs.
fn proxy_in_use(modem: &ModemConfig) -> Option<String> {
    let default = match modem.protocol {
        ModemProtocol::At => return None,
        ModemProtocol::Mbim => "mbim-proxy",
        ModemProtocol::Qmi => "qmi-proxy",
    };
    if modem.proxy == Some(false) {
        return None;
    }
    let name = modem.proxy_socket.clone().unwrap_or_else(|| default.into());
    system::abstract_socket_bound(&name).then_some(name)
}

/// The device node: there, a character device, and open to this user (unless a proxy opens
/// it for us).
fn port(modem: &ModemConfig, proxy: Option<&str>) -> Result<(Node, Finding), Finding> {
    const CHECK: &str = "modem-port";
    let subject = modem.device.as_str();
    let node = system::node(subject).map_err(|e| {
        Finding::fail(
            CHECK,
            subject,
            format!("no such device ({e})"),
            "is the modem plugged in and enumerated (`mmcli -L`, `ls /dev/serial/by-id/`)? USB \
             numbering (ttyUSB2, cdc-wdm0) can change between boots: name the port by its \
             /dev/serial/by-id/ link",
        )
    })?;
    if !node.is_char_device {
        return Err(Finding::fail(
            CHECK,
            subject,
            format!("{} is not a character device", node.describe()),
            "name the modem's AT port (tty) or control device (cdc-wdm, wwan*mbim*, wwan*qmi*)",
        ));
    }
    if let Some(name) = proxy {
        let finding = Finding::ok(
            CHECK,
            subject,
            format!(
                "{}; ModemManager's proxy runs on @{name} and opens the device for the module",
                node.describe()
            ),
        );
        return Ok((node, finding));
    }
    if let Err(e) = system::may_read_write(&node.path) {
        let runner = system::runner();
        let fix = if node.group == "root" {
            format!(
                "give the port a group with a udev rule (GROUP=\"iotsafe\", MODE=\"0660\"; \
                 examples: /usr/share/doc/iotsafe-pkcs11/examples/78-iotsafe-pkcs11-modem.rules) \
                 and add {} to it",
                runner.user
            )
        } else {
            format!(
                "add {user} to the group {group} (usermod -aG {group} {user}, then restart the \
                 service or log in again), or give the port the group iotsafe with a udev rule \
                 (GROUP=\"iotsafe\"; examples: \
                 /usr/share/doc/iotsafe-pkcs11/examples/78-iotsafe-pkcs11-modem.rules)",
                user = runner.user,
                group = node.group
            )
        };
        return Err(Finding::fail(
            CHECK,
            subject,
            format!(
                "permission denied ({e}): {} and {} is in the groups {}",
                node.describe(),
                runner.user,
                runner.groups.join(", ")
            ),
            fix,
        ));
    }
    let detail = format!("{}; this user may read and write it", node.describe());
    Ok((node, Finding::ok(CHECK, subject, detail)))
}

/// The lock files every process of the module takes turns on for this modem.
fn turn_files(config: &Config, subject: &str) -> Finding {
    const CHECK: &str = "modem-turns";
    match check_modem_turn_files(subject, config.lock_dir.as_deref()) {
        Ok(dir) => Finding::ok(
            CHECK,
            subject,
            format!(
                "this user takes turns with the other processes in {}",
                dir.display()
            ),
        ),
        Err((file, e)) => {
            let owner = system::node(&file.display().to_string())
                .map(|n| {
                    format!(
                        " ({} {}:{} mode {:04o})",
                        n.path.display(),
                        n.owner,
                        n.group,
                        n.mode
                    )
                })
                .unwrap_or_default();
            Finding::warn(
                CHECK,
                subject,
                format!(
                    "{} refuses this user ({e}){owner}: the module falls back to the temporary \
                     directory and takes no turns with other users' processes on this modem",
                    file.display()
                ),
                format!(
                    "the files belong to the port's group with mode 0660 when the module makes \
                     them; remove the stale ones (rm {}.*) so that they are made again, or \
                     give them the port's group",
                    file.with_extension("").display()
                ),
            )
        }
    }
}

/// Who else has the AT port open: ModemManager (trouble), processes using this module (they
/// take turns), anything else (may send its own commands).
fn holders(node: &Node, subject: &str) -> Finding {
    const CHECK: &str = "modem-holders";
    let (holders, hidden) = system::holders(&node.path);
    let unseen = if hidden > 0 && rustix::process::getuid().as_raw() != 0 {
        " (other users' processes cannot be seen: run as root to see them)"
    } else {
        ""
    };
    let name = |h: &system::Holder| format!("{} (pid {})", h.name, h.pid);
    if let Some(mm) = holders.iter().find(|h| h.name == "ModemManager") {
        return Finding::fail(
            CHECK,
            subject,
            format!(
                "{} has the port open: it sends its own AT commands and may hold the port \
                 exclusively",
                name(mm)
            ),
            UDEV_RULE_FIX,
        );
    }
    let others: Vec<String> = holders
        .iter()
        .filter(|h| !h.uses_module && !h.is_pty_master)
        .map(name)
        .collect();
    let module_users = holders.iter().filter(|h| h.uses_module).count();
    let pty_modem = holders
        .iter()
        .find(|h| h.is_pty_master)
        .map(|h| {
            format!(
                "; the pseudo-terminal's other end is {} (a simulated modem)",
                name(h)
            )
        })
        .unwrap_or_default();
    if !others.is_empty() {
        return Finding::warn(
            CHECK,
            subject,
            format!(
                "also open in {}: their AT commands can interleave with the module's{unseen}",
                others.join(", ")
            ),
            "stop the program, or give it another of the modem's ports",
        );
    }
    let mm_note = system::is_running("ModemManager")
        && system::udev_property(node, "ID_MM_PORT_IGNORE").as_deref() != Some("1");
    if mm_note {
        return Finding::warn(
            CHECK,
            subject,
            format!(
                "ModemManager runs and udev does not mark this port ID_MM_PORT_IGNORE: it may \
                 take the port{unseen}"
            ),
            UDEV_RULE_FIX,
        );
    }
    let detail = match module_users {
        0 => format!("no other program has the port open{pty_modem}{unseen}"),
        n => format!(
            "open in {n} other process(es) using this module (they take turns){pty_modem}{unseen}"
        ),
    };
    Finding::ok(CHECK, subject, detail)
}

/// `AT` answers, and the SIM-access commands are there; true when the card steps can go on.
fn at_answers(
    config: &Config,
    modem: &ModemConfig,
    subject: &str,
    findings: &mut Vec<Finding>,
) -> bool {
    let ModemLink::At(mut settings) = modem_endpoint(modem, config.lock_dir.clone()).link else {
        return false;
    };
    settings.timeout = settings.timeout.min(AT_PROBE_TIMEOUT);
    let mut conn = match ModemConnection::open(&settings) {
        Ok(conn) => conn,
        Err(e) => {
            findings.push(at_failure(subject, &e));
            findings.push(Finding::skip(
                "modem-sim-access",
                subject,
                "the modem does not answer",
            ));
            return false;
        }
    };
    let maker = iotsafe_pkcs11::transport::CardConnection::manufacturer(&conn);
    let model = conn.model();
    findings.push(Finding::ok(
        "modem-at",
        subject,
        format!(
            "answers AT; maker {}, model {}",
            maker.as_deref().unwrap_or("(not said)"),
            model.as_deref().unwrap_or("(not said)")
        ),
    ));
    let commands = match conn.sim_access_commands() {
        Ok(commands) => commands,
        Err(e) => {
            findings.push(at_failure(subject, &e));
            return false;
        }
    };
    let finding = sim_access(subject, modem.at_mode, commands);
    let usable = finding.verdict != Verdict::Fail;
    findings.push(finding);
    usable
}

fn at_failure(subject: &str, e: &TransportError) -> Finding {
    match e {
        TransportError::Timeout => Finding::fail(
            "modem-at",
            subject,
            format!("no answer to AT within {AT_PROBE_TIMEOUT:?}"),
            "a modem has several ttys and only one takes AT commands: `mmcli -m 0` lists them \
             (the ones marked (at)); a modem that stopped answering needs a power cycle",
        ),
        TransportError::PermissionDenied(why) => {
            Finding::fail("modem-at", subject, why.clone(), "see modem-port above")
        }
        TransportError::NoCard => Finding::fail(
            "modem-at",
            subject,
            "the port does not open for AT commands (held exclusively by another program, or \
             gone)",
            UDEV_RULE_FIX,
        ),
        other => Finding::fail(
            "modem-at",
            subject,
            other.to_string(),
            "run again with IOTSAFE_PKCS11_LOG=debug to see the AT exchange",
        ),
    }
}

fn sim_access(
    subject: &str,
    mode: AtMode,
    c: iotsafe_pkcs11::transport::at::SimAccessCommands,
) -> Finding {
    const CHECK: &str = "modem-sim-access";
    let mut has = Vec::new();
    for (name, there) in [
        ("AT+CCHO", c.ccho),
        ("AT+CGLA", c.cgla),
        ("AT+CCHC", c.cchc),
        ("AT+CSIM", c.csim),
    ] {
        if there {
            has.push(name);
        }
    }
    let listed = if has.is_empty() {
        "none".to_string()
    } else {
        has.join(", ")
    };
    let logical = c.ccho && c.cgla;
    match mode {
        AtMode::Cgla if !logical => Finding::fail(
            CHECK,
            subject,
            format!("at_mode = \"cgla\" but the modem lacks AT+CCHO/AT+CGLA (it has: {listed})"),
            "set at_mode = \"auto\" (AT+CSIM when the modem has no AT+CGLA)",
        ),
        AtMode::Csim if !c.csim => Finding::fail(
            CHECK,
            subject,
            format!("at_mode = \"csim\" but the modem lacks AT+CSIM (it has: {listed})"),
            "set at_mode = \"auto\"",
        ),
        _ if !logical && !c.csim => Finding::fail(
            CHECK,
            subject,
            "the modem offers no SIM-access command (AT+CGLA or AT+CSIM)",
            "this modem does not reach the SIM's applets over AT: use its MBIM or QMI control \
             device (protocol = \"mbim\" or \"qmi\")",
        ),
        _ if !logical || mode == AtMode::Csim => Finding::warn(
            CHECK,
            subject,
            format!(
                "AT+CSIM only (the modem has: {listed}): the module opens logical channels with \
                 MANAGE CHANNEL itself; some modems (Quectel EG25) take AT+CSIM on the basic \
                 channel only"
            ),
            "if the applet step fails, set [applet] logical_channel = false",
        ),
        _ if !c.cchc => Finding::warn(
            CHECK,
            subject,
            format!(
                "no AT+CCHC (the modem has: {listed}): a channel the module opens stays open \
                 (it is shared by every process of the module)"
            ),
            "nothing to do unless other programs run out of channels",
        ),
        _ => Finding::ok(
            CHECK,
            subject,
            format!("{listed}: logical channels kept by the modem"),
        ),
    }
}
