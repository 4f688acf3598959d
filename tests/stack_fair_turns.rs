//! Fair turns over pcscd (issue #11 item 4): four processes load the built module and sign at
//! once on the stack's card, made slow through its control socket (5 ms per APDU, 40 ms per
//! signature). pcsc-lite has no queue for transactions — a waiter polls every ~200 ms, so a
//! process that takes its next transaction at once starved the others — and the module now
//! queues its processes on a lock file before every transaction. Every signature is verified
//! against the card's certificate, no sequence interleaves on the card, and every process
//! signs; the shares, the longest single `C_Sign` and the aggregate against one process alone
//! are printed (figures, not assertions: `scripts/bench-fair-turns.sh` measures them over 30 s).

mod fair_turns;
mod helpers;

use std::time::Duration;

use fair_turns::{Round, SlowStackCard, TABLE_HEADER, run_child_if_asked, table_row};
use helpers::stack::Stack;

const TEST: &str = "four_processes_take_fair_turns_over_pcscd";
const PROCESSES: usize = 4;
const SIGNING_TIME: Duration = Duration::from_secs(10);
const ALONE_TIME: Duration = Duration::from_secs(5);

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn four_processes_take_fair_turns_over_pcscd() {
    if run_child_if_asked() {
        return;
    }
    let stack = Stack::get();
    let _lock = stack.lock();
    let scratch = stack.scratch("fair_turns");
    let _slow = SlowStackCard::new(&stack);
    let certificate = stack.card_file("client.pem");
    let round = |processes, signing_time| Round {
        child_args: &["--exact", TEST, "--ignored", "--nocapture"],
        module: &stack.module,
        certificate: &certificate,
        config: None,
        scratch: &scratch,
        processes,
        signing_time,
    };
    let alone = fair_turns::run(&round(1, ALONE_TIME));
    stack.reset_stats();
    let shared = fair_turns::run(&round(PROCESSES, SIGNING_TIME));
    let stats = stack.sim_command("stats");
    println!(
        "{TABLE_HEADER}\n{}",
        table_row(
            "pcscd",
            &stack.module.display().to_string(),
            &shared,
            &alone
        )
    );
    assert!(
        shared.signatures.iter().all(|&n| n > 0),
        "every process signs: {:?}",
        shared.signatures
    );
    assert!(
        stats.contains("\"interleaved\":0,"),
        "no sequence interleaved on the card: {stats}"
    );
}
