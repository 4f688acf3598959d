//! NSS as a consumer (Firefox, Thunderbird, `certutil`-based tools): `modutil -add` registers the
//! module in a fresh NSS database, then `certutil -L -h all` lists the card's certificates and
//! `certutil -K -h all` its keys, over a simulated modem on a pseudo-terminal (no pcscd). The
//! certificate NSS exports is the card profile's.

mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;

use helpers::stack::{Finished, SimModem, first_pem_certificate_der, release_module, run};

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iotsafe-nss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("nssdb")).expect("scratch directory");
    dir
}

fn nss(tool: &str, db: &Path, config: &Path) -> Command {
    let mut c = Command::new(tool);
    c.arg(if tool == "modutil" { "-dbdir" } else { "-d" })
        .arg(format!("sql:{}", db.display()))
        .env("IOTSAFE_PKCS11_CONFIG", config)
        .env("NSS_DISABLE_UNLOAD", "1");
    c
}

/// The certificate nicknames `certutil -L -h all` lists for tokens: `<token label>:<label>`.
fn nicknames(f: &Finished) -> Vec<String> {
    f.stdout
        .lines()
        .filter_map(|l| {
            let (name, trust) = l.trim_end().rsplit_once(char::is_whitespace)?;
            trust.contains(',').then(|| name.trim().to_string())
        })
        .filter(|n| n.contains(':'))
        .collect()
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn nss_modutil_adds_the_module_and_certutil_lists_the_cards_certificates_and_keys() {
    let dir = scratch();
    let db = dir.join("nssdb");
    let modem = SimModem::start(&dir, &[]);
    let config = modem.module_config("cache = false", "");

    run(nss("certutil", &db, &config).args(["-N", "--empty-password"])).expect_success();
    run(nss("modutil", &db, &config)
        .args(["-force", "-add", "iotsafe", "-libfile"])
        .arg(release_module()))
    .expect_success();
    let listed = run(nss("modutil", &db, &config).args(["-force", "-list", "iotsafe"]));
    assert!(
        listed.success() && listed.stdout.contains("Token Name: IoT SAFE"),
        "modutil -list shows the module and its token:\n{listed}"
    );

    let certs = run(nss("certutil", &db, &config).args(["-L", "-h", "all"])).expect_success();
    let names = nicknames(&certs);
    let token = names
        .iter()
        .find_map(|n| n.strip_suffix(":client"))
        .unwrap_or_else(|| panic!("no certificate <token>:client in certutil -L:\n{certs}"))
        .to_string();
    assert!(token.starts_with("IoT SAFE"), "token label {token:?}");
    assert!(
        names.contains(&format!("{token}:ca")),
        "the card's CA certificate:\n{certs}"
    );

    // The certificate NSS reads from the token is the card's.
    let exported = run(nss("certutil", &db, &config)
        .args(["-L", "-a", "-n"])
        .arg(format!("{token}:client")))
    .expect_success();
    let pem = std::fs::read_to_string(modem.dir.join("client.pem")).expect("client.pem");
    assert_eq!(
        first_pem_certificate_der(&exported.stdout),
        first_pem_certificate_der(&pem),
        "certutil's {token}:client is the card profile's client.pem"
    );

    // "< 0> ec       01        client": an EC key of the token with the card's CKA_ID and label.
    let keys = run(nss("certutil", &db, &config).args(["-K", "-h", "all"])).expect_success();
    let card_keys: Vec<Vec<&str>> = keys
        .stdout
        .lines()
        .filter(|l| l.starts_with('<'))
        .map(|l| l.split_whitespace().skip(2).collect())
        .collect();
    for (id, label) in [("01", "client"), ("04", "ecdh")] {
        assert!(
            card_keys.contains(&vec!["ec", id, label]),
            "certutil -K lists the card's key {id} {label}:\n{keys}"
        );
    }
    assert!(
        keys.all_output()
            .contains(&format!("Checking token \"{token}\"")),
        "{keys}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
