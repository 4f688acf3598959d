//! The doctor's findings: one verdict per check and subject, with the fix for a failure, as
//! text for a person or JSON for fleet tooling.

use std::fmt::Write as _;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    /// Works, but something is off or may bite later.
    Warn,
    /// This is why there is no token (or no signature).
    Fail,
    /// Not checked: a failure before it, or nothing to check.
    Skip,
}

impl Verdict {
    fn tag(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

/// One check of one subject (the configuration file, a modem, a reader, a key).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// A stable name: `configuration`, `pcscd`, `modem-port`, `applet`, `signature`, ...
    pub check: &'static str,
    pub subject: String,
    pub verdict: Verdict,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(check: &'static str, subject: impl Into<String>, verdict: Verdict) -> Finding {
        Finding {
            check,
            subject: subject.into(),
            verdict,
            detail: String::new(),
            fix: None,
        }
    }

    pub fn ok(check: &'static str, subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Finding::new(check, subject, Verdict::Ok).detail(detail)
    }

    pub fn warn(
        check: &'static str,
        subject: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding::new(check, subject, Verdict::Warn)
            .detail(detail)
            .fix(fix)
    }

    pub fn fail(
        check: &'static str,
        subject: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding::new(check, subject, Verdict::Fail)
            .detail(detail)
            .fix(fix)
    }

    pub fn skip(check: &'static str, subject: impl Into<String>, why: impl Into<String>) -> Self {
        Finding::new(check, subject, Verdict::Skip).detail(why)
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        let fix = fix.into();
        self.fix = (!fix.is_empty()).then_some(fix);
        self
    }
}

/// Who ran the checks (what a permission finding depends on).
#[derive(Debug, Clone, Serialize)]
pub struct Runner {
    pub user: String,
    pub uid: u32,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub runner: Runner,
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn new(runner: Runner, findings: Vec<Finding>) -> Report {
        let verdict = if findings.iter().any(|f| f.verdict == Verdict::Fail) {
            Verdict::Fail
        } else if findings.iter().any(|f| f.verdict == Verdict::Warn) {
            Verdict::Warn
        } else {
            Verdict::Ok
        };
        Report {
            version: env!("CARGO_PKG_VERSION"),
            runner,
            verdict,
            findings,
        }
    }

    pub fn has_failure(&self) -> bool {
        self.verdict == Verdict::Fail
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "iotsafe-pkcs11 doctor {} as {} (uid {}; groups: {})",
            self.version,
            self.runner.user,
            self.runner.uid,
            self.runner.groups.join(", ")
        );
        for f in &self.findings {
            let _ = writeln!(
                out,
                "{:<5} {:<17} {}: {}",
                f.verdict.tag(),
                f.check,
                f.subject,
                f.detail
            );
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "{:23}fix: {fix}", "");
            }
        }
        let count = |v: Verdict| self.findings.iter().filter(|f| f.verdict == v).count();
        let _ = writeln!(
            out,
            "verdict: {} ({} failed, {} warnings, {} ok, {} skipped)",
            match self.verdict {
                Verdict::Fail => "FAIL",
                Verdict::Warn => "ok with warnings",
                _ => "ok",
            },
            count(Verdict::Fail),
            count(Verdict::Warn),
            count(Verdict::Ok),
            count(Verdict::Skip)
        );
        out
    }
}
