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
    // The recorded conversation still reads as the default card (else re-record it with
    // `cargo run --example write_fuzz_seeds`).
    let seed = std::fs::read(root().join("fuzz/seeds/card_read/default-card")).unwrap();
    assert!(bodies::card_read_objects(&seed) >= 5);
    // The modem seeds read as whole exchanges (else they exercise only the garbage paths).
    let mbim = std::fs::read(root().join("fuzz/seeds/mbim_reply/exchange")).unwrap();
    assert_eq!(
        iotsafe_pkcs11::transport::mbim::read_replies_for_fuzzing(&mbim),
        5
    );
    let fragments = std::fs::read(root().join("fuzz/seeds/mbim_reply/fragments")).unwrap();
    assert_eq!(
        iotsafe_pkcs11::transport::mbim::read_replies_for_fuzzing(&fragments),
        1
    );
    let qmi = std::fs::read(root().join("fuzz/seeds/qmi_frame/exchange")).unwrap();
    assert_eq!(
        iotsafe_pkcs11::transport::qmi::read_frames_for_fuzzing(&qmi),
        5
    );
}
