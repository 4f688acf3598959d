//! Key life-cycle with real tools over the real stack, on a second simulated card that offers
//! the provisioning profile (vpcd reader 1): the enrolment flow (key generation on the SIM →
//! CSR through pkcs11-provider → CA → certificate written to the SIM → mutual TLS → deletion),
//! and remote management (G4) during a signing loop.

mod helpers;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use helpers::stack::{
    Finished, Proc, ServerReport, Stack, TOOL_TIMEOUT, TlsServer, openssl_plain, pkcs11_rv, run,
    sim_binary, sim_control,
};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};

/// The provisioning card on vpcd reader 1, and a module configuration showing only it.
struct WritableCard {
    _sim: Proc,
    dir: PathBuf,
    config: PathBuf,
    control: PathBuf,
}

impl WritableCard {
    fn start(stack: &Stack, test: &str) -> WritableCard {
        let dir = stack.scratch(test);
        let profile = dir.join("card/profile.toml");
        std::fs::create_dir_all(profile.parent().unwrap()).unwrap();
        run(Command::new(sim_binary())
            .args(["init-profile", "--provisioning", "--seed", test])
            .arg(&profile))
        .expect_success();
        let control = dir.join("card.sock");
        let sim = Proc::spawn(
            Command::new(sim_binary())
                .args(["vpcd", "--port", "35964", "--profile"])
                .arg(&profile)
                .arg("--control")
                .arg(&control),
            None,
        );
        let config = dir.join("module.toml");
        std::fs::write(&config, "[pcsc]\nreaders = [\"IoT SAFE sim 00 01\"]\n").unwrap();
        let card = WritableCard {
            _sim: sim,
            dir,
            config,
            control,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !card
            .tool(stack)
            .arg("-T")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("IoT SAFE sim 00 01"))
            .unwrap_or(false)
        {
            assert!(
                Instant::now() < deadline,
                "the provisioning card did not appear"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        card
    }

    fn card_dir(&self) -> PathBuf {
        self.dir.join("card")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.card_dir().join(name)
    }

    fn tool(&self, stack: &Stack) -> Command {
        let mut c = stack.pkcs11_tool();
        c.env("IOTSAFE_PKCS11_CONFIG", &self.config);
        c
    }

    fn openssl(&self, stack: &Stack) -> Command {
        let mut c = stack.openssl_with_provider();
        c.env("IOTSAFE_PKCS11_CONFIG", &self.config);
        c
    }
}

fn expect_ok(f: Finished) -> Finished {
    assert!(f.success(), "{f}");
    f
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn enrolment_keygen_csr_certificate_tls_and_deletion_with_real_tools() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let card = WritableCard::start(&stack, "enrolment");
    let d = &card.dir;
    // 1. A new key pair, made on the SIM.
    let f = expect_ok(run(card.tool(&stack).args([
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "30",
        "--label",
        "device",
    ])));
    assert!(f.all_output().contains("Key pair generated"), "{f}");
    // 2. A CSR signed by that key, through pkcs11-provider; its self-signature verifies.
    let csr = d.join("device.csr");
    expect_ok(run(card
        .openssl(&stack)
        .args([
            "req",
            "-new",
            "-key",
            "pkcs11:object=device;type=private",
            "-subj",
            "/CN=enrolled-device",
            "-out",
        ])
        .arg(&csr)));
    let verified = expect_ok(run(openssl_plain()
        .args(["req", "-verify", "-noout", "-in"])
        .arg(&csr)));
    assert!(verified.all_output().contains("verify OK"), "{verified}");
    // 3. The test CA signs it.
    let pem = d.join("device.pem");
    let der = d.join("device.der");
    expect_ok(run(openssl_plain()
        .args(["x509", "-req", "-days", "30", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(card.file("ca.pem"))
        .arg("-CAkey")
        .arg(card.file("ca-key.pem"))
        .args(["-set_serial", "4242", "-out"])
        .arg(&pem)));
    expect_ok(run(openssl_plain()
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&der)));
    // 4. The certificate goes onto the SIM, paired with the key.
    expect_ok(run(card
        .tool(&stack)
        .arg("--write-object")
        .arg(&der)
        .args(["--type", "cert", "--id", "30", "--label", "device"])));
    let listing = expect_ok(run(card.tool(&stack).arg("-O"))).stdout;
    assert!(listing.contains("CN=enrolled-device"), "{listing}");
    // 5. Mutual TLS with the new key and certificate, both addressed on the SIM.
    let server = TlsServer::start_with_card_files(&card.card_dir(), &[]);
    let port = server.port;
    let client = Proc::spawn(
        card.openssl(&stack)
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-tls1_3",
                "-ign_eof",
                "-CAfile",
            ])
            .arg(card.file("ca.pem"))
            .args([
                "-cert",
                "pkcs11:object=device;type=cert",
                "-key",
                "pkcs11:object=device;type=private",
            ]),
        Some(b"GET / HTTP/1.0\r\n\r\n"),
    )
    .wait(TOOL_TIMEOUT);
    let server = server.finish();
    let report = ServerReport::read(&server);
    assert!(
        report.handshake_finished && report.client_leaf_verified,
        "{client}\n=== server:\n{server}"
    );
    assert_eq!(
        helpers::stack::client_certificate_on_status_page(&client.stdout),
        Some(std::fs::read(&der).unwrap()),
        "the server saw the certificate written to the SIM: {client}"
    );
    // 6. Deletion: certificate, then the key pair the device made.
    expect_ok(run(card.tool(&stack).args([
        "--delete-object",
        "--type",
        "cert",
        "--id",
        "30",
    ])));
    expect_ok(run(card.tool(&stack).args([
        "--delete-object",
        "--type",
        "privkey",
        "--id",
        "30",
    ])));
    let listing = expect_ok(run(card.tool(&stack).arg("-O"))).stdout;
    assert!(
        !listing.contains("enrolled-device")
            && !listing.lines().any(|l| l.trim() == "label:      device"),
        "{listing}"
    );
    // The factory certificate is not the device's to delete.
    let refused = run(card
        .tool(&stack)
        .args(["--delete-object", "--type", "cert", "--id", "01"]));
    assert!(!refused.success(), "{refused}");
    // pkcs11-tool 0.23 prints CKR_ACTION_PROHIBITED (0x1b) as "unknown PKCS11 error (0x1b)".
    let out = refused.all_output();
    assert!(
        out.contains("CKR_ACTION_PROHIBITED") || out.contains("(0x1b)"),
        "{refused}"
    );
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn remote_update_of_the_client_key_during_a_signing_loop() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let card = WritableCard::start(&stack, "remote_update");
    // SAFETY: nothing else runs in this test process yet; the module reads it at C_Initialize.
    unsafe { std::env::set_var("IOTSAFE_PKCS11_CONFIG", &card.config) };
    let p11 = Pkcs11::new(&stack.module).expect("load module");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p11.get_slots_with_token().expect("slots")[0];
    let session = p11.open_ro_session(slot).expect("C_OpenSession");
    let find = |class| {
        session
            .find_objects(&[Attribute::Class(class), Attribute::Id(vec![1])])
            .expect("find")[0]
    };
    let key = find(ObjectClass::PRIVATE_KEY);
    let public = find(ObjectClass::PUBLIC_KEY);
    let point = |session: &cryptoki::session::Session| match &session
        .get_attributes(public, &[AttributeType::EcPoint])
        .unwrap()[0]
    {
        Attribute::EcPoint(p) => p[2..].to_vec(),
        other => panic!("{other:?}"),
    };
    let old_point = point(&session);
    let mut outcomes = Vec::new();
    let mut new_point = None;
    for i in 0..12 {
        match i {
            3 => {
                sim_control(&card.control, "remote-begin private 01");
            }
            7 => {
                sim_control(&card.control, "remote-replace-key 01");
                sim_control(&card.control, "remote-end");
            }
            _ => {}
        }
        let outcome = session.sign(&Mechanism::EcdsaSha256, key, b"loop");
        if let Ok(sig) = &outcome {
            // Every signature verifies with the key the card held at that moment.
            let current = point(&session);
            let vk = VerifyingKey::from_sec1_bytes(&current).unwrap();
            vk.verify(b"loop", &Signature::from_slice(sig).unwrap())
                .unwrap_or_else(|_| panic!("signature {i} does not verify"));
            if i >= 7 {
                new_point = Some(current);
            }
        }
        outcomes.push(outcome.map(|_| ()).map_err(|e| pkcs11_rv(&e)));
    }
    assert!(outcomes[..3].iter().all(|o| o.is_ok()), "{outcomes:?}");
    // During the remote session: the documented vendor error (CKR_IOTSAFE_OBJECT_BEING_UPDATED).
    for o in &outcomes[3..7] {
        assert!(
            matches!(o, Err(Some(RvError::VendorDefined(v))) if *v == 0x8000_0000 | 0x4953_0001),
            "{outcomes:?}"
        );
    }
    // After it: signatures again, with the new key (the module re-read its objects on 63CF).
    assert!(outcomes[7..].iter().all(|o| o.is_ok()), "{outcomes:?}");
    let new_point = new_point.expect("signatures after the update");
    assert_ne!(new_point, old_point, "the replaced key is never used again");
}
