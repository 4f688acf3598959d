//! p11-compare — one PKCS#11 checklist, run against any module, and a diff of two runs.
//!
//! ```text
//! p11-compare run   --module LIB --label TOKEN [--pin PIN] [--out FILE] [--threads N] [--per-thread M]
//! p11-compare setup --module LIB --label TOKEN --pin PIN --profile profile.toml
//! p11-compare diff  --reference softhsm.txt --ours iotsafe.txt --intended intended-differences.toml
//!                   [--known known-module-issues.toml] [--card write-protected|provisioning]
//! ```
//!
//! `run` prints one normalised line per check (`id | call | CK_RV | output`), see `checks/`.
//! `setup` fills an initialised token with the objects of a simulator card profile (`setup.rs`).
//! `diff` compares two runs line by line; a difference passes only when
//! `intended-differences.toml` lists it with exactly these two lines and a reason. Exit status 1
//! on any other difference, and on any listed entry whose difference no longer occurs (stale).

// `call!` evaluates its arguments inside the unsafe FFI call on purpose (raw pointers only).
#![allow(clippy::macro_metavars_in_unsafe)]

mod checks;
mod module;
mod names;
mod report;
mod setup;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use report::{Report, line_id};

#[derive(Parser)]
#[command(
    name = "p11-compare",
    about = "One PKCS#11 checklist, run against any module, and a diff of two runs",
    // A flag given twice counts once, the last value (as the hand-written parser did).
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the checklist against a module: one normalised line per check.
    Run {
        /// The PKCS#11 module (shared library).
        #[arg(long, value_name = "LIB")]
        module: PathBuf,
        /// Label of the token to check.
        #[arg(long, value_name = "TOKEN")]
        label: String,
        /// User PIN.
        #[arg(long, default_value = "1234")]
        pin: String,
        /// Writes the lines to FILE instead of printing them.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Threads of the threads check.
        #[arg(long, value_name = "N", default_value_t = 4)]
        threads: usize,
        /// Signatures per thread in the threads check.
        #[arg(long = "per-thread", value_name = "M", default_value_t = 5)]
        per_thread: usize,
        /// Also writes to the token in a R/W session (creates, relabels and destroys objects,
        /// generates a key pair, destroys the card's `ca` certificate): only for a token of
        /// this run's own.
        #[arg(long = "token-writes")]
        token_writes: bool,
    },
    /// Fills an initialised token with the objects of a simulator card profile.
    Setup {
        #[arg(long, value_name = "LIB")]
        module: PathBuf,
        #[arg(long, value_name = "TOKEN")]
        label: String,
        #[arg(long)]
        pin: String,
        /// The card's profile.toml.
        #[arg(long, value_name = "profile.toml")]
        profile: PathBuf,
    },
    /// Compares two runs; exit status 1 on any difference that is not listed.
    Diff {
        /// The reference run (SoftHSM2).
        #[arg(long, value_name = "A.txt")]
        reference: String,
        /// Our run.
        #[arg(long, value_name = "B.txt")]
        ours: String,
        /// intended-differences.toml
        #[arg(long, value_name = "intended-differences.toml")]
        intended: String,
        /// known-module-issues.toml
        #[arg(long, value_name = "known-module-issues.toml")]
        known: Option<String>,
        /// The card the module ran on: write-protected or provisioning (selects the
        /// `[card.<name>]` entries of the lists).
        #[arg(long, default_value = "write-protected")]
        card: String,
    },
}

fn load_module(path: &Path) -> Result<module::Module, ExitCode> {
    module::Module::load(path).map_err(|e| {
        eprintln!("p11-compare: {e}");
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            module,
            label,
            pin,
            out,
            threads,
            per_thread,
            token_writes,
        } => {
            let m = match load_module(&module) {
                Ok(m) => m,
                Err(code) => return code,
            };
            let o = checks::Options {
                token_label: label,
                pin,
                threads,
                signatures_per_thread: per_thread,
                token_writes,
            };
            let mut r = Report::new(out.is_none());
            checks::run(&m, &o, &mut r);
            if let Some(out) = out {
                let mut text = r.lines.join("\n");
                text.push('\n');
                if let Err(e) = std::fs::write(&out, text) {
                    eprintln!("p11-compare: cannot write {}: {e}", out.display());
                    return ExitCode::FAILURE;
                }
                eprintln!(
                    "p11-compare: {} checks written to {}",
                    r.lines.len(),
                    out.display()
                );
            }
            ExitCode::SUCCESS
        }
        Command::Setup {
            module,
            label,
            pin,
            profile,
        } => {
            let m = match load_module(&module) {
                Ok(m) => m,
                Err(code) => return code,
            };
            match setup::setup(&m, &label, &pin, &profile) {
                Ok(n) => {
                    eprintln!("p11-compare: created {n} objects on token {label:?}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("p11-compare: setup failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Diff {
            reference,
            ours,
            intended,
            known,
            card,
        } => match diff(&reference, &ours, &intended, known.as_deref(), &card) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("p11-compare: {e}");
                ExitCode::from(2)
            }
        },
    }
}

const ABSENT: &str = "<absent>";

/// The cards the differential runs on (`--card`): the simulator's default card, whose token is
/// write-protected, and a card that offers the STORE DATA provisioning profile.
const CARDS: [&str; 2] = ["write-protected", "provisioning"];

/// The id prefix of the checks `run --token-writes` adds.
const TOKEN_WRITES: &str = "write.token.";
/// The checks of the card's ECDH peer-key container: it holds a key only after an ECDH with it
/// (on the shared stack card, when another test ran one first), so both runs may lack them.
const PEER_KEY: &str = "attr.pubkey.peer.";

/// id → the rest of the line, in file order.
fn read_run(path: &str) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let id = line_id(line).to_string();
        let rest = line[id.len()..]
            .trim_start()
            .trim_start_matches('|')
            .trim()
            .to_string();
        if out.iter().any(|(i, _)| *i == id) {
            return Err(format!("{path}: check id {id} appears twice"));
        }
        out.push((id, rest));
    }
    Ok(out)
}

struct Intended {
    softhsm: String,
    ours: String,
    why: String,
}

/// The entries of a reason list that apply to `card`: every `[check."<id>"]`, and the
/// `[card.<card>."<id>"]` entries (which replace a `[check]` entry of the same id for that card).
fn read_intended(path: &str, card: &str) -> Result<BTreeMap<String, Intended>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let doc: toml::Table = text.parse().map_err(|e| format!("{path}: {e}"))?;
    let reasons = doc
        .get("reasons")
        .and_then(|r| r.as_table())
        .cloned()
        .unwrap_or_default();
    let table = |v: Option<&toml::Value>| v.and_then(|c| c.as_table()).cloned().unwrap_or_default();
    let general = table(doc.get("check"));
    let cards = table(doc.get("card"));
    for name in cards.keys() {
        if !CARDS.contains(&name.as_str()) {
            return Err(format!("{path}: [card.{name}]: cards are {CARDS:?}"));
        }
    }
    let used: Vec<&str> = general
        .values()
        .chain(
            cards
                .values()
                .filter_map(|c| c.as_table())
                .flat_map(|c| c.values()),
        )
        .filter_map(|entry| entry.get("why").and_then(|w| w.as_str()))
        .collect();
    if let Some(unused) = reasons.keys().find(|r| !used.contains(&r.as_str())) {
        return Err(format!(
            "{path}: reason {unused:?} is used by no entry (delete it)"
        ));
    }
    let specific = table(cards.get(card));
    let mut out = BTreeMap::new();
    for (id, v) in general.iter().chain(specific.iter()) {
        let field = |k: &str| -> Result<String, String> {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("{path}: check {id:?} has no {k:?}"))
        };
        let why = field("why")?;
        if !reasons.contains_key(&why) {
            return Err(format!(
                "{path}: check {id:?}: reason {why:?} is not in [reasons]"
            ));
        }
        out.insert(
            id.clone(),
            Intended {
                softhsm: field("softhsm")?,
                ours: field("ours")?,
                why,
            },
        );
    }
    Ok(out)
}

fn toml_str(s: &str) -> String {
    format!("{:?}", s)
}

/// Prints one line per difference and a summary; true when every difference is intended.
fn diff(
    reference: &str,
    ours: &str,
    intended: &str,
    issues: Option<&str>,
    card: &str,
) -> Result<bool, String> {
    if !CARDS.contains(&card) {
        return Err(format!("--card {card}: cards are {CARDS:?}"));
    }
    let a = read_run(reference)?;
    let b = read_run(ours)?;
    let mut known = read_intended(intended, card)?;
    let mut issue_ids = Vec::new();
    if let Some(path) = issues {
        for (id, k) in read_intended(path, card)? {
            if known.contains_key(&id) {
                return Err(format!("{id} is listed both in {intended} and in {path}"));
            }
            issue_ids.push(id.clone());
            known.insert(id, k);
        }
    }
    let mut ids: Vec<String> = b.iter().map(|(i, _)| i.clone()).collect();
    for (i, _) in &a {
        if !ids.contains(i) {
            ids.push(i.clone());
        }
    }
    let lookup = |v: &[(String, String)], id: &str| {
        v.iter()
            .find(|(i, _)| i == id)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| ABSENT.to_string())
    };
    let (mut equal, mut expected, mut module_issues, mut unexpected) = (0, 0, 0, Vec::new());
    let mut stale = Vec::new();
    for id in &ids {
        let (ra, rb) = (lookup(&a, id), lookup(&b, id));
        if ra == rb {
            equal += 1;
            if known.contains_key(id) {
                stale.push(id.clone());
            }
            continue;
        }
        match known.get(id) {
            Some(k) if k.softhsm == ra && k.ours == rb && issue_ids.contains(id) => {
                module_issues += 1;
                println!(
                    "MODULE-ISSUE {id} [{}]\n  softhsm: {ra}\n  ours:    {rb}",
                    k.why
                );
            }
            Some(k) if k.softhsm == ra && k.ours == rb => {
                expected += 1;
                println!("intended   {id} [{}]", k.why);
            }
            _ => {
                println!("UNEXPECTED {id}\n  softhsm: {ra}\n  ours:    {rb}");
                unexpected.push((id.clone(), ra, rb));
            }
        }
    }
    // Token writes in R/W sessions run only on a token of the run's own (`--token-writes`); on
    // the shared stack card neither run has them, so their entries do not apply.
    let writes_ran = ids.iter().any(|id| id.starts_with(TOKEN_WRITES));
    let mut not_run = 0;
    for id in known.keys() {
        if !ids.contains(id) {
            if (!writes_ran && id.starts_with(TOKEN_WRITES)) || id.starts_with(PEER_KEY) {
                not_run += 1;
            } else {
                stale.push(id.clone());
            }
        }
    }
    if not_run > 0 {
        println!(
            "not run    {not_run} entries (token writes without --token-writes, or no ECDH peer \
             key on the card)"
        );
    }
    for id in &stale {
        let file = if issue_ids.contains(id) {
            issues.unwrap_or(intended)
        } else {
            intended
        };
        println!(
            "STALE      {id}: listed in {file} for the {card} card, but this difference no longer \
             occurs (remove the entry, or move it under [card.<other card>])"
        );
    }
    if !unexpected.is_empty() {
        println!(
            "\n# If a difference is intended, add it to {intended} (with a reason from [reasons]);\n\
             # if it is a module bug, write it into tests/MODULE-ISSUES.md and known-module-issues.toml instead.\n"
        );
        for (id, ra, rb) in &unexpected {
            println!(
                "[check.{}]\nwhy = \"?\"\nsofthsm = {}\nours = {}\n",
                toml_str(id),
                toml_str(ra),
                toml_str(rb)
            );
        }
    }
    println!(
        "differential ({card} card): {} checks: {equal} equal, {expected} intended differences, \
         {module_issues} known module issues, {} unexpected, {} stale",
        ids.len(),
        unexpected.len(),
        stale.len()
    );
    Ok(unexpected.is_empty() && stale.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the files of one diff into a fresh directory; returns their paths.
    fn files(name: &str, reference: &str, ours: &str, intended: &str) -> [String; 3] {
        let dir = std::env::temp_dir().join(format!("p11-compare-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let paths = ["a.txt", "b.txt", "intended.toml"].map(|f| dir.join(f));
        for (p, text) in paths.iter().zip([reference, ours, intended]) {
            std::fs::write(p, text).unwrap();
        }
        paths.map(|p| p.display().to_string())
    }

    const LISTED: &str = "[reasons]\nr = \"why\"\n\n[check.\"x\"]\nwhy = \"r\"\n\
                          softhsm = \"C_X | CKR_OK\"\nours = \"C_X | CKR_GENERAL_ERROR\"\n";

    #[test]
    fn a_listed_difference_passes_and_a_stale_entry_fails() {
        let [a, b, i] = files(
            "listed",
            "x | C_X | CKR_OK\n",
            "x | C_X | CKR_GENERAL_ERROR\n",
            LISTED,
        );
        assert_eq!(diff(&a, &b, &i, None, "write-protected"), Ok(true));
        // The module was fixed: the entry no longer describes a difference.
        let [a, b, i] = files("stale", "x | C_X | CKR_OK\n", "x | C_X | CKR_OK\n", LISTED);
        assert_eq!(diff(&a, &b, &i, None, "write-protected"), Ok(false));
        // A check that neither run has any more is stale too.
        let [a, b, i] = files("gone", "y | C_Y | CKR_OK\n", "y | C_Y | CKR_OK\n", LISTED);
        assert_eq!(diff(&a, &b, &i, None, "write-protected"), Ok(false));
    }

    #[test]
    fn card_entries_apply_to_their_card_only() {
        let intended = "[reasons]\nr = \"why\"\n\n[card.provisioning.\"x\"]\nwhy = \"r\"\n\
                        softhsm = \"C_X | CKR_OK\"\nours = \"C_X | CKR_GENERAL_ERROR\"\n";
        let [a, b, i] = files(
            "card",
            "x | C_X | CKR_OK\n",
            "x | C_X | CKR_GENERAL_ERROR\n",
            intended,
        );
        assert_eq!(diff(&a, &b, &i, None, "provisioning"), Ok(true));
        assert_eq!(diff(&a, &b, &i, None, "write-protected"), Ok(false));
        assert!(diff(&a, &b, &i, None, "no-such-card").is_err());
    }

    #[test]
    fn a_reason_no_entry_uses_fails() {
        let intended = LISTED.replace("[reasons]\n", "[reasons]\nold = \"gone\"\n");
        let [a, b, i] = files(
            "unused",
            "x | C_X | CKR_OK\n",
            "x | C_X | CKR_GENERAL_ERROR\n",
            &intended,
        );
        let err = diff(&a, &b, &i, None, "write-protected").unwrap_err();
        assert!(err.contains("reason \"old\" is used by no entry"), "{err}");
    }

    #[test]
    fn token_write_entries_do_not_apply_to_a_run_without_token_writes() {
        let intended = "[reasons]\nr = \"why\"\n\n[check.\"write.token.x\"]\nwhy = \"r\"\n\
                        softhsm = \"C_X | CKR_OK\"\nours = \"C_X | CKR_GENERAL_ERROR\"\n";
        let [a, b, i] = files(
            "writes",
            "y | C_Y | CKR_OK\n",
            "y | C_Y | CKR_OK\n",
            intended,
        );
        assert_eq!(diff(&a, &b, &i, None, "write-protected"), Ok(true));
    }
}
