//! The fuzz targets' bodies (`fuzz/src/lib.rs`) on stable Rust, in every `cargo test`: the
//! seed corpus (`fuzz/seeds/<target>/`), every crash the fuzzer ever found
//! (`fuzz/regressions/<target>/`, a file per crash: add one when `scripts/fuzz.sh` reports a
//! crash, then fix the module), and a bounded number of deterministic mutations of the seeds.
//! `cargo fuzz` itself runs in `scripts/fuzz.sh`.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod bodies;

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).expect("readable corpus file");
            (p, data)
        })
        .collect();
    out.sort();
    out
}

/// xorshift64*, so every run mutates the same way.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation: flip, insert, delete, duplicate a slice, or set a byte to an edge value.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, rng.next() as u8),
            2 if !v.is_empty() => {
                v.remove(at.min(v.len() - 1));
            }
            3 if !v.is_empty() => {
                let start = at.min(v.len() - 1);
                let end = (start + 1 + rng.below(16)).min(v.len());
                let piece = v[start..end].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, piece);
            }
            _ if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = [0x00, 0x7F, 0x80, 0x81, 0x82, 0xFF, 0x61, 0x6C, 0x90][rng.below(9)];
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v
}

/// Mutations per target and seed in this test (the real fuzzing is `scripts/fuzz.sh`).
const MUTATIONS: usize = 300;

#[test]
fn seeds_crashes_and_mutations_of_every_fuzz_target() {
    let mut replayed = 0;
    for target in bodies::TARGETS {
        let seeds = files(&root().join("fuzz/seeds").join(target));
        assert!(!seeds.is_empty(), "fuzz/seeds/{target}/ has seeds");
        let crashes = files(&root().join("fuzz/regressions").join(target));
        for (path, data) in seeds.iter().chain(&crashes) {
            eprintln!("{target}: {}", path.display());
            bodies::run(target, data);
            replayed += 1;
        }
        let mut rng = Rng(0x5EED ^ target.len() as u64);
        for (_, seed) in &seeds {
            for _ in 0..MUTATIONS {
                bodies::run(target, &mutate(&mut rng, seed));
            }
        }
    }
    eprintln!("{replayed} corpus files replayed");
    // The recorded conversation still reads as the default card (else re-run write_seeds).
    let seed = std::fs::read(root().join("fuzz/seeds/card_read/default-card")).unwrap();
    assert!(bodies::card_read_objects(&seed) >= 5);
}

/// Writes the seed corpus of the targets that need a card conversation, from the simulator
/// (run after changing the module's first-session commands:
/// `cargo test --test fuzz_regressions -- --ignored write_seeds`).
#[test]
#[ignore = "writes fuzz/seeds/; run by hand"]
fn write_seeds() {
    use iotsafe_pkcs11::transport::{Transmit, TransportError};

    /// Forwards to the simulator and records every answer as `len ‖ bytes`.
    struct Recorder {
        card: iotsafe_sim::SharedCard,
        script: Vec<u8>,
    }
    impl Transmit for Recorder {
        fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
            let answer = self.card.transmit(command);
            match u8::try_from(answer.len()) {
                Ok(len) if len < 0xFF => self.script.push(len),
                _ => {
                    self.script.push(0xFF);
                    self.script
                        .extend_from_slice(&(answer.len() as u16).to_be_bytes());
                }
            }
            self.script.extend_from_slice(&answer);
            Ok(answer)
        }
    }

    let card = iotsafe_sim::SharedCard::from_profile(
        iotsafe_sim::default_profile(),
        iotsafe_sim::CardOptions::default(),
    );
    let mut rec = Recorder {
        card,
        script: Vec::new(),
    };
    // The first contact, as Token::connect does it.
    let channel = iotsafe_pkcs11::applet::open_channel(&mut rec)
        .unwrap()
        .unwrap();
    let mut ch = iotsafe_pkcs11::applet::AppletChannel::new(
        &mut rec,
        channel,
        iotsafe_pkcs11::applet::ClassStyle::InterIndustry,
    );
    assert!(ch.select(&iotsafe_pkcs11::applet::GSMA_AID).unwrap());
    ch.application_info().unwrap();
    let list = ch.object_list().unwrap();
    for info in &list {
        match info.class() {
            iotsafe_pkcs11::applet::ObjectClass::PublicKey if info.is_active() => {
                let _ = ch.read_public_key(info);
            }
            iotsafe_pkcs11::applet::ObjectClass::File if info.is_active() => {
                let _ = ch.read_file(info);
            }
            _ => {}
        }
    }
    let dir = root().join("fuzz/seeds/card_read");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("default-card"), &rec.script).unwrap();
    let script = std::mem::take(&mut rec.script);
    let mut ch = iotsafe_pkcs11::applet::AppletChannel::new(
        &mut rec,
        channel,
        iotsafe_pkcs11::applet::ClassStyle::InterIndustry,
    );
    let key = list
        .iter()
        .find(|o| o.class() == iotsafe_pkcs11::applet::ObjectClass::PrivateKey)
        .unwrap();
    ch.sign_hash(key, 1, &[0x5A; 32]).unwrap();
    let dir = root().join("fuzz/seeds/apdu_codec");
    std::fs::create_dir_all(&dir).unwrap();
    let mut codec = script;
    codec.extend_from_slice(&rec.script);
    std::fs::write(dir.join("default-card-and-signature"), codec).unwrap();
}
