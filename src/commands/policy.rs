//! `esm policy check|test|eval`.

use std::path::Path;

use anyhow::Context;
use esm_authz::policy_set::PolicySet;
use esm_authz::source::{PolicySource, SetSpec};

use crate::cli::PolicyCommand;
use crate::exit::usage;

/// An input document larger than this is not one a CheckRequest would produce.
const MAX_INPUT: u64 = 16 << 20;

pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { dir, rule } => {
            let spec = SetSpec::new("default", PolicySource::from_path(dir, None), &rule);
            let set = esm_authz::reload::validate(&spec)?;
            println!(
                "ok: {} files, rule {}, hash {}",
                set.files.len(),
                set.rule,
                set.hash
            );
            println!("{}", memo_summary(&set));
            match set.interpreted_because() {
                None => println!("evaluated on: regorus' bytecode VM"),
                Some(why) => println!("evaluated on: regorus' interpreter ({why})"),
            }
            Ok(())
        }
        PolicyCommand::Test { dir, verbose } => test(&dir, verbose),
        PolicyCommand::Eval { dir, input, rule } => eval(&dir, &input, &rule),
    }
}

/// What the decision memo will key on, so an author sees what their policy reads.
fn memo_summary(set: &PolicySet) -> String {
    let paths: Vec<String> = set
        .reads
        .paths
        .iter()
        .map(|p| format!("input.{}", p.join(".")))
        .collect();
    if set.memoized() {
        format!("memoized on: {}", paths.join(", "))
    } else if !set.reads.deterministic {
        "not memoized: uses the clock, randomness or the network".into()
    } else {
        "not memoized: reads the whole input".into()
    }
}

fn test(dir: &Path, verbose: bool) -> anyhow::Result<()> {
    let files = PolicySource::from_path(dir.to_path_buf(), None).read()?;
    // Tests may target any package, so compile for a rule that always exists.
    let rule = esm_authz::policy_set::test_entrypoint(&files)
        .unwrap_or_else(|| "data.envoy.authz.allow".into());
    let (set, files) = esm_authz::reload::compile_as_served(files, &rule, &Default::default())?;
    let results = set.run_tests(&files);
    let failed = results.iter().filter(|r| !r.passed).count();
    for r in &results {
        if !r.passed {
            println!(
                "FAIL {}{}",
                r.name,
                r.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        } else if verbose {
            println!("PASS {}", r.name);
        }
    }
    println!("PASS: {}/{}", results.len() - failed, results.len());
    if results.is_empty() {
        anyhow::bail!("no test_* rules in {}", dir.display());
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} tests failed", results.len());
    }
    Ok(())
}

fn eval(dir: &Path, input: &Path, rule: &str) -> anyhow::Result<()> {
    let files = PolicySource::from_path(dir.to_path_buf(), None).read()?;
    let (set, _) = esm_authz::reload::compile_as_served(files, rule, &Default::default())?;
    let text = super::read_text("--input ", input, MAX_INPUT)?;
    let value = regorus::Value::from_json_str(&text)
        .map_err(|e| usage(format!("--input {}: not JSON: {e}", input.display())))?;
    let result = set.eval(value)?;
    let decision = esm_authz::decision::from_result(&result);
    println!("{}", result.to_json_str().context("printing the result")?);
    match decision {
        Ok(d) => {
            println!("decision: {}", if d.allowed { "allow" } else { "deny" });
            Ok(())
        }
        Err(e) => {
            println!("decision: deny (fail closed: {e})");
            Ok(())
        }
    }
}
