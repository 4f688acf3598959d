//! p11-compare — one PKCS#11 checklist, run against any module, and a diff of two runs.
//!
//! ```text
//! p11-compare run   --module LIB --label TOKEN [--pin PIN] [--out FILE] [--threads N] [--per-thread M]
//! p11-compare setup --module LIB --label TOKEN --pin PIN --profile profile.toml
//! p11-compare diff  --reference softhsm.txt --ours iotsafe.txt --intended intended-differences.toml
//!                   [--known known-module-issues.toml]
//! ```
//!
//! `run` prints one normalised line per check (`id | call | CK_RV | output`), see `checks.rs`.
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
use std::path::PathBuf;
use std::process::ExitCode;

use report::{Report, line_id};

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  p11-compare run --module LIB --label TOKEN [--pin PIN] [--out FILE] [--threads N] [--per-thread M]\n  \
         p11-compare setup --module LIB --label TOKEN --pin PIN --profile profile.toml\n  \
         p11-compare diff --reference A.txt --ours B.txt --intended intended-differences.toml [--known known-module-issues.toml]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let mut opts: BTreeMap<String, String> = BTreeMap::new();
    let mut it = args[1..].iter();
    while let Some(k) = it.next() {
        let Some(k) = k.strip_prefix("--") else {
            return usage();
        };
        let Some(v) = it.next() else {
            return usage();
        };
        opts.insert(k.to_string(), v.clone());
    }
    let get = |k: &str| opts.get(k).cloned();
    match cmd.as_str() {
        "run" => {
            let (Some(module), Some(label)) = (get("module"), get("label")) else {
                return usage();
            };
            let m = match module::Module::load(&PathBuf::from(&module)) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("p11-compare: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let o = checks::Options {
                token_label: label,
                pin: get("pin").unwrap_or_else(|| "1234".into()),
                threads: get("threads").and_then(|v| v.parse().ok()).unwrap_or(4),
                signatures_per_thread: get("per-thread").and_then(|v| v.parse().ok()).unwrap_or(5),
            };
            let mut r = Report::new(get("out").is_none());
            checks::run(&m, &o, &mut r);
            if let Some(out) = get("out") {
                let mut text = r.lines.join("\n");
                text.push('\n');
                if let Err(e) = std::fs::write(&out, text) {
                    eprintln!("p11-compare: cannot write {out}: {e}");
                    return ExitCode::FAILURE;
                }
                eprintln!("p11-compare: {} checks written to {out}", r.lines.len());
            }
            ExitCode::SUCCESS
        }
        "setup" => {
            let (Some(module), Some(label), Some(pin), Some(profile)) =
                (get("module"), get("label"), get("pin"), get("profile"))
            else {
                return usage();
            };
            let m = match module::Module::load(&PathBuf::from(&module)) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("p11-compare: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match setup::setup(&m, &label, &pin, &PathBuf::from(profile)) {
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
        "diff" => {
            let (Some(a), Some(b), Some(i)) = (get("reference"), get("ours"), get("intended"))
            else {
                return usage();
            };
            match diff(&a, &b, &i, get("known").as_deref()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("p11-compare: {e}");
                    ExitCode::from(2)
                }
            }
        }
        _ => usage(),
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
