//! Fair turns (issue #11 item 4), figures and no verdict: 4 processes sign at once for 30 s on
//! one card with 5 ms per APDU and 40 ms per signature, over pcscd (the stack's card, slowed
//! through its control socket) and over the simulated modem on a pty (`--t0`, AT+CGLA); per
//! process the signatures, the fewest over the mean, the longest single `C_Sign`, and the
//! aggregate over what one process alone signs on the same card in the same run. Printed as a
//! markdown table, for this build and for every module in `IOTSAFE_FAIR_TURNS_BEFORE` (e.g. a
//! build without turns on PC/SC readers).
//!
//! Run: `bash scripts/bench-fair-turns.sh` (builds, starts the stack if needed). Environment:
//! `IOTSAFE_FAIR_TURNS_SECONDS` (default 30), `IOTSAFE_FAIR_TURNS_BEFORE` (modules to compare
//! with, `:`-separated), `IOTSAFE_FAIR_TURNS_BUSY_LOOPS` (threads kept spinning meanwhile, for
//! a busy machine; default 0).

#[path = "../tests/fair_turns/mod.rs"]
mod fair_turns;
#[path = "../tests/helpers/mod.rs"]
mod helpers;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fair_turns::{Outcome, Round, SlowStackCard, TABLE_HEADER, run_child_if_asked, table_row};
use helpers::stack::{SimModem, Stack};

const PROCESSES: usize = 4;

fn main() {
    if run_child_if_asked() {
        return;
    }
    let number = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| panic!("{name}: a whole number"))
            })
            .unwrap_or(default)
    };
    let seconds = number("IOTSAFE_FAIR_TURNS_SECONDS", 30);
    let busy_loops = number("IOTSAFE_FAIR_TURNS_BUSY_LOOPS", 0);
    let signing_time = Duration::from_secs(seconds);
    let stack = Stack::get();
    let mut modules = vec![("this build".to_string(), stack.module.clone())];
    if let Some(before) = std::env::var_os("IOTSAFE_FAIR_TURNS_BEFORE") {
        for module in std::env::split_paths(&before) {
            assert!(module.is_file(), "{} not found", module.display());
            let name = module.file_name().map_or_else(
                || module.display().to_string(),
                |name| name.to_string_lossy().into_owned(),
            );
            modules.push((name, module));
        }
    }
    let _busy = BusyLoops::start(busy_loops);

    let mut rows = Vec::new();
    {
        let _lock = stack.lock();
        let scratch = stack.scratch("bench_fair_turns");
        let _slow = SlowStackCard::new(&stack);
        let certificate = stack.card_file("client.pem");
        for (name, module) in &modules {
            let (shared, alone) = shared_and_alone(&Round {
                child_args: &[],
                module,
                certificate: &certificate,
                config: None,
                scratch: &scratch,
                processes: PROCESSES,
                signing_time,
            });
            rows.push(table_row("pcscd", name, &shared, &alone));
            eprintln!("{}", rows.last().expect("a row"));
        }
    }

    let modem = SlowModem::start();
    for (name, module) in &modules {
        let (shared, alone) = shared_and_alone(&Round {
            child_args: &[],
            module,
            certificate: &modem.modem.dir.join("client.pem"),
            config: Some(&modem.config),
            scratch: &modem.modem.dir,
            processes: PROCESSES,
            signing_time,
        });
        rows.push(table_row(
            "modem (pty, T=0, AT+CGLA)",
            name,
            &shared,
            &alone,
        ));
        eprintln!("{}", rows.last().expect("a row"));
    }

    let busy = match busy_loops {
        0 => String::new(),
        n => format!(", {n} threads spinning meanwhile on {} CPUs", cpus()),
    };
    println!(
        "{PROCESSES} processes signing at once for {seconds} s, card 5 ms per APDU + 40 ms per \
         signature{busy}:\n"
    );
    println!("{TABLE_HEADER}");
    for row in rows {
        println!("{row}");
    }
}

/// One process alone (the ceiling), then `round` (both as long as `round.signing_time`).
fn shared_and_alone(round: &Round<'_>) -> (Outcome, Outcome) {
    let alone = fair_turns::run(&Round {
        processes: 1,
        ..*round
    });
    let shared = fair_turns::run(round);
    (shared, alone)
}

/// `iotsafe-sim modem --t0` on a pty, 5 ms per APDU and 40 ms per signature, and a module
/// configuration that uses only it.
struct SlowModem {
    config: PathBuf,
    modem: SimModem,
}

impl SlowModem {
    fn start() -> SlowModem {
        let dir = std::env::temp_dir().join(format!("iotsafe-fair-turns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let modem = SimModem::start(
            &dir,
            &[
                "--t0",
                "--at",
                "both",
                "--latency-apdu",
                "5ms",
                "--latency-sig",
                "40ms",
            ],
        );
        let config = modem.module_config("", "");
        SlowModem { config, modem }
    }
}

impl Drop for SlowModem {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.modem.dir);
    }
}

/// Threads that keep CPUs busy until dropped: a machine where a process woken up is not run at
/// once.
struct BusyLoops {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyLoops {
    fn start(count: u64) -> BusyLoops {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        BusyLoops { stop, threads }
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
