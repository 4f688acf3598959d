//! Several tokens at once over the real stack: the stack's card (vpcd reader 0), a second
//! simulated card on vpcd reader 1, and a simulated modem on a pseudo-terminal; and a card
//! pulled out of pcscd's reader in the middle of a signing loop.

mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use helpers::stack::{Proc, Stack, openssl_plain, pkcs11_rv, run, sim_binary, sim_control};

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A second card on vpcd reader 1 and a modem, plus a module configuration naming the modem.
struct MoreCards {
    _card2: Proc,
    _modem: Proc,
    config: PathBuf,
    dir: PathBuf,
}

fn more_cards(stack: &Stack, test: &str) -> MoreCards {
    let dir = stack.scratch(test);
    for name in ["card2", "card3"] {
        let profile = dir.join(name).join("profile.toml");
        std::fs::create_dir_all(profile.parent().unwrap()).unwrap();
        run(Command::new(sim_binary())
            .args(["init-profile", "--seed", name])
            .arg(&profile))
        .expect_success();
    }
    let card2 = Proc::spawn(
        Command::new(sim_binary())
            .args(["vpcd", "--port", "35964", "--profile"])
            .arg(dir.join("card2/profile.toml"))
            .arg("--control")
            .arg(dir.join("card2.sock")),
        None,
    );
    let link = dir.join("modem");
    let modem = Proc::spawn(
        Command::new(sim_binary())
            .args([
                "modem",
                "--echo",
                "--urc",
                "--split",
                "--busy-every",
                "5",
                "--link",
            ])
            .arg(&link)
            .arg("--profile")
            .arg(dir.join("card3/profile.toml"))
            .arg("--control")
            .arg(dir.join("modem.sock")),
        None,
    );
    wait_for("the modem link", Duration::from_secs(10), || link.exists());
    let config = dir.join("module.toml");
    std::fs::write(
        &config,
        format!(
            "[[modem]]\ndevice = \"{}\"\nlabel = \"Simulated modem\"\n",
            link.display()
        ),
    )
    .unwrap();
    MoreCards {
        _card2: card2,
        _modem: modem,
        config,
        dir,
    }
}

fn token_slots(stack: &Stack, config: &Path) -> Vec<String> {
    let f = run(stack
        .pkcs11_tool()
        .env("IOTSAFE_PKCS11_CONFIG", config)
        .arg("-T"));
    f.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Slot ").map(|s| s.to_string()))
        .collect()
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn pkcs11_tool_lists_three_tokens_and_signs_on_each() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let cards = more_cards(&stack, "three_tokens");
    wait_for("three tokens", Duration::from_secs(20), || {
        token_slots(&stack, &cards.config).len() == 3
    });
    let slots = token_slots(&stack, &cards.config);
    assert!(
        slots.iter().any(|s| s.contains("IoT SAFE sim 00 00")),
        "{slots:?}"
    );
    assert!(
        slots.iter().any(|s| s.contains("IoT SAFE sim 00 01")),
        "{slots:?}"
    );
    assert!(
        slots.iter().any(|s| s.contains("Simulated modem")),
        "{slots:?}"
    );
    let message = cards.dir.join("message.txt");
    std::fs::write(&message, b"one signature per token").unwrap();
    let mut public_keys = Vec::new();
    for (index, _) in slots.iter().enumerate() {
        let tool = || {
            let mut c = stack.pkcs11_tool();
            c.env("IOTSAFE_PKCS11_CONFIG", &cards.config)
                .args(["--slot-index", &index.to_string()]);
            c
        };
        let cert = cards.dir.join(format!("cert{index}.der"));
        let sig = cards.dir.join(format!("sig{index}"));
        run(tool()
            .args(["--read-object", "--type", "cert", "--id", "01", "-o"])
            .arg(&cert))
        .expect_success();
        run(tool()
            .args(["--sign", "--mechanism", "ECDSA-SHA256", "--id", "01"])
            .args(["--signature-format", "openssl", "-i"])
            .arg(&message)
            .arg("-o")
            .arg(&sig))
        .expect_success();
        let public = cards.dir.join(format!("pub{index}.pem"));
        run(openssl_plain()
            .args(["x509", "-inform", "DER", "-noout", "-pubkey", "-in"])
            .arg(&cert)
            .arg("-out")
            .arg(&public))
        .expect_success();
        let verified = run(openssl_plain()
            .args(["dgst", "-sha256", "-verify"])
            .arg(&public)
            .arg("-signature")
            .arg(&sig)
            .arg(&message));
        assert!(
            verified.success() && verified.stdout.contains("Verified OK"),
            "slot index {index}: {verified}"
        );
        public_keys.push(std::fs::read(&public).unwrap());
    }
    public_keys.sort();
    public_keys.dedup();
    assert_eq!(
        public_keys.len(),
        3,
        "three different cards, three different keys"
    );
    // The modem's card really was reached through the modem.
    let stats = sim_control(&cards.dir.join("modem.sock"), "stats");
    assert!(stats.contains("\"2B\""), "{stats}");
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn card_pulled_out_of_the_reader_mid_loop_then_back_in_the_same_process() {
    let stack = Stack::get();
    let _lock = stack.lock();
    // The card on vpcd reader 1 is pulled out and put back through its simulator.
    let cards = more_cards(&stack, "pulled_out");
    let card2 = cards.dir.join("card2.sock");
    let p11 = Pkcs11::new(&stack.module).expect("load module");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let reader1 = |p11: &Pkcs11| {
        p11.get_slots_with_token()
            .unwrap_or_default()
            .into_iter()
            .find(|s| {
                p11.get_slot_info(*s)
                    .map(|i| i.slot_description().contains("IoT SAFE sim 00 01"))
                    .unwrap_or(false)
            })
    };
    wait_for("the second card", Duration::from_secs(20), || {
        reader1(&p11).is_some()
    });
    let slot = reader1(&p11).expect("slot of reader 1");
    let session = p11.open_ro_session(slot).expect("C_OpenSession");
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![1]),
        ])
        .expect("find")[0];
    let mut outcomes = Vec::new();
    for i in 0..12 {
        if i == 4 {
            sim_control(&card2, "remove");
            // Give pcscd the time to notice (the driver polls presence).
            std::thread::sleep(Duration::from_millis(1500));
        }
        outcomes.push(
            session
                .sign(&Mechanism::EcdsaSha256, key, b"loop")
                .map(|_| ())
                .map_err(|e| pkcs11_rv(&e)),
        );
    }
    sim_control(&card2, "insert");
    assert!(outcomes[..4].iter().all(|o| o.is_ok()), "{outcomes:?}");
    assert_eq!(
        outcomes[4],
        Err(Some(RvError::DeviceRemoved)),
        "{outcomes:?}"
    );
    assert!(
        outcomes[5..]
            .iter()
            .all(|o| *o == Err(Some(RvError::SessionHandleInvalid))),
        "{outcomes:?}"
    );
    wait_for(
        "the card back in the reader",
        Duration::from_secs(20),
        || wait_until_token(&p11, slot),
    );
    let session = p11
        .open_ro_session(slot)
        .expect("C_OpenSession after reinsertion");
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![1]),
        ])
        .expect("find")[0];
    session
        .sign(&Mechanism::EcdsaSha256, key, b"back")
        .expect("signature after reinsertion in the same process");
}

fn wait_until_token(p11: &Pkcs11, slot: cryptoki::slot::Slot) -> bool {
    p11.get_slots_with_token()
        .map(|s| s.contains(&slot))
        .unwrap_or(false)
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn two_processes_on_one_reader_each_use_their_own_channel() {
    let stack = Stack::get();
    let _lock = stack.lock();
    stack.reset_stats();
    // Process 1 (this test): its token holds a logical channel while it signs in a loop.
    let p11 = Pkcs11::new(&stack.module).expect("load module");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p11.get_slots_with_token().expect("slots")[0];
    let session = p11.open_ro_session(slot).expect("C_OpenSession");
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![1]),
        ])
        .expect("find")[0];
    let ours = stack.sim_command("stats");
    assert!(ours.contains("\"open_channels\":[0,1]"), "{ours}");
    let dir = stack.scratch("two_processes");
    let message = dir.join("message.txt");
    std::fs::write(&message, b"from the second process").unwrap();
    let public = stack.card_public_key_pem(&dir);
    std::thread::scope(|scope| {
        let signer = scope.spawn(move || {
            for _ in 0..20 {
                session
                    .sign(&Mechanism::EcdsaSha256, key, b"process one")
                    .expect("signature in process one");
            }
        });
        // Process 2: pkcs11-tool opens its own channel (2) beside ours and signs.
        for i in 0..3 {
            let sig = dir.join(format!("sig{i}"));
            run(stack
                .pkcs11_tool()
                .args(["--sign", "--mechanism", "ECDSA-SHA256", "--id", "01"])
                .args(["--signature-format", "openssl", "-i"])
                .arg(&message)
                .arg("-o")
                .arg(&sig))
            .expect_success();
            let verified = run(openssl_plain()
                .args(["dgst", "-sha256", "-verify"])
                .arg(&public)
                .arg("-signature")
                .arg(&sig)
                .arg(&message));
            assert!(verified.stdout.contains("Verified OK"), "{verified}");
        }
        signer.join().expect("process one's loop");
    });
    let stats = stack.sim_command("stats");
    assert!(stats.contains("\"interleaved\":0"), "{stats}");
    // Every pkcs11-tool run opened and closed its own channel; ours is still open.
    assert!(stats.contains("\"open_channels\":[0,1]"), "{stats}");
}
