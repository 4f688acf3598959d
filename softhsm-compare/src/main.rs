//! p11-compare — one PKCS#11 checklist, run against any module, and a diff of two runs.
//!
//! ```text
//! p11-compare run   --module LIB --label TOKEN [--pin PIN] [--out FILE] [--threads N] [--per-thread M]
//! p11-compare setup --module LIB --label TOKEN --pin PIN --profile profile.toml
//! p11-compare diff  --reference softhsm.txt --ours iotsafe.txt --intended intended-differences.toml
//!                   [--known known-module-issues.toml]
//! ```
//!
//! `run` prints one normalised line per check (`id | call | CK_RV | output`), see `checks/`.
//! `setup` fills an initialised token with the objects of a simulator card profile (`setup.rs`).
//! `diff` compares two runs line by line; a difference passes only when
//! `intended-differences.toml` lists it with exactly these two lines and a reason. Exit status 1
//! on any other difference.

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
        } => match diff(&reference, &ours, &intended, known.as_deref()) {
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

fn read_intended(path: &str) -> Result<BTreeMap<String, Intended>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let doc: toml::Table = text.parse().map_err(|e| format!("{path}: {e}"))?;
    let reasons = doc
        .get("reasons")
        .and_then(|r| r.as_table())
        .cloned()
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    let checks = doc
        .get("check")
        .and_then(|c| c.as_table())
        .cloned()
        .unwrap_or_default();
    for (id, v) in checks {
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
fn diff(reference: &str, ours: &str, intended: &str, issues: Option<&str>) -> Result<bool, String> {
    let a = read_run(reference)?;
    let b = read_run(ours)?;
    let mut known = read_intended(intended)?;
    let mut issue_ids = Vec::new();
    if let Some(path) = issues {
        for (id, k) in read_intended(path)? {
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
    for id in known.keys() {
        if !ids.contains(id) {
            stale.push(id.clone());
        }
    }
    for id in &stale {
        println!("stale      {id}: listed as intended but no longer differs (remove it)");
    }
    if !unexpected.is_empty() {
        println!(
            "\n# If a difference is intended, add it to {intended} (with a reason from [reasons]);\n\
             # if it is a module bug, write it into softhsm-compare/MODULE-ISSUES.md instead.\n"
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
        "differential: {} checks: {equal} equal, {expected} intended differences, \
         {module_issues} known module issues, {} unexpected, {} stale",
        ids.len(),
        unexpected.len(),
        stale.len()
    );
    Ok(unexpected.is_empty())
}
