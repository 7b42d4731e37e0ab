//! OPA Rego that regorus does not take as written, found by a small scanner over the source
//! text so that `esm policy check` and reload can name the file, the line and the construct,
//! and say how to write it instead of showing a bare parser error.
//!
//! - The output-argument call form, `io.jwt.verify_hs256(t, k, valid)`: OPA binds the last
//!   argument to the result; regorus says "var valid is unsafe". For esm's own builtins
//!   (`io.jwt.*`, whose arities esm knows) a one-line call that is a whole statement is
//!   rewritten to `valid = io.jwt.verify_hs256(t, k)` (unification, as OPA's form means), so
//!   such policies run unchanged. Other cases get a diagnostic.
//! - Long lines (inline certificates and tokens): regorus refuses a line longer than its
//!   column limit (1,024 by default). esm raises the limit to [`MAX_LINE`]; a longer line gets
//!   a diagnostic suggesting to split the string with `concat`.
//!
//! The scanner is pure and bounded: strings and comments are skipped, a call's arguments are
//! read for at most [`MAX_CALL`] bytes, and a file yields at most [`MAX_FINDINGS`] findings.

use std::num::NonZeroU32;

use crate::error::Error;
use crate::policy_set::SourceFile;

/// The longest source line esm accepts (regorus' own limit is 1,024).
pub const MAX_LINE: usize = 64 << 10;
/// A call whose argument list runs longer than this is not examined.
pub const MAX_CALL: usize = 64 << 10;
/// Findings kept per file.
pub const MAX_FINDINGS: usize = 32;

/// Builtins whose output-argument form is recognised, with their arities (without the output
/// argument): esm's own, and the regorus ones OPA policies most often write that way.
const BUILTINS: [(&str, usize); 20] = [
    ("io.jwt.decode", 1),
    ("io.jwt.decode_verify", 2),
    ("io.jwt.encode_sign", 3),
    ("io.jwt.encode_sign_raw", 3),
    ("io.jwt.verify_rs256", 2),
    ("io.jwt.verify_rs384", 2),
    ("io.jwt.verify_rs512", 2),
    ("io.jwt.verify_ps256", 2),
    ("io.jwt.verify_ps384", 2),
    ("io.jwt.verify_ps512", 2),
    ("io.jwt.verify_es256", 2),
    ("io.jwt.verify_es384", 2),
    ("io.jwt.verify_es512", 2),
    ("io.jwt.verify_eddsa", 2),
    ("io.jwt.verify_hs256", 2),
    ("io.jwt.verify_hs384", 2),
    ("io.jwt.verify_hs512", 2),
    ("count", 1),
    ("concat", 2),
    ("split", 2),
];

/// The regorus limits esm compiles with: its defaults, with lines up to [`MAX_LINE`].
pub fn length_limits() -> regorus::utils::limits::PolicyLengthConfig {
    let mut limits = regorus::utils::limits::PolicyLengthConfig::default();
    limits.max_col = NonZeroU32::new(MAX_LINE as u32).unwrap_or(limits.max_col);
    limits
}

/// One construct regorus will not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line.
    pub line: usize,
    pub construct: String,
    pub suggestion: String,
    /// Byte range and replacement when esm can rewrite it itself.
    pub rewrite: Option<(std::ops::Range<usize>, String)>,
}

/// Skips a string or comment starting at `i`; returns the index after it, or `i` when
/// `bytes[i]` starts neither.
fn skip_literal(bytes: &[u8], i: usize) -> usize {
    match bytes[i] {
        b'#' => bytes[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |n| i + n),
        b'`' => bytes[i + 1..]
            .iter()
            .position(|&b| b == b'`')
            .map_or(bytes.len(), |n| i + n + 2),
        b'"' => {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' && bytes[j] != b'\n' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(bytes.len())
        }
        _ => i,
    }
}

/// The top-level argument ranges of the call whose `(` is at `open`, and the index of its `)`.
fn arguments(bytes: &[u8], open: usize) -> Option<(Vec<std::ops::Range<usize>>, usize)> {
    let (mut depth, mut start, mut args) = (0usize, open + 1, Vec::new());
    let mut i = open + 1;
    let end = bytes.len().min(open.saturating_add(MAX_CALL));
    while i < end {
        let after = skip_literal(bytes, i);
        if after != i {
            i = after;
            continue;
        }
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' if depth == 0 => {
                if bytes[start..i].iter().any(|b| !b.is_ascii_whitespace()) {
                    args.push(start..i);
                }
                return Some((args, i));
            }
            b')' | b']' | b'}' => depth = depth.checked_sub(1)?,
            b',' if depth == 0 => {
                args.push(start..i);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A variable or an array of variables: what `=` can bind.
fn is_pattern(text: &str) -> bool {
    let t = text.trim();
    let inner = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(t);
    !inner.trim().is_empty()
        && inner
            .split(',')
            .all(|v| !v.trim().is_empty() && v.trim().bytes().all(is_ident))
}

/// Whether `range` is a statement of its own: only indentation before it on its first line,
/// and nothing but a comment after it on its last.
fn whole_line(text: &str, range: &std::ops::Range<usize>) -> bool {
    let line_start = text[..range.start].rfind('\n').map_or(0, |n| n + 1);
    let line_end = text[range.end..]
        .find('\n')
        .map_or(text.len(), |n| range.end + n);
    let rest = text[range.end..line_end].trim_start();
    text[line_start..range.start].trim().is_empty() && (rest.is_empty() || rest.starts_with('#'))
}

fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Calls with an output argument.
fn output_arguments(text: &str, out: &mut Vec<Finding>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() && out.len() < MAX_FINDINGS {
        let after = skip_literal(bytes, i);
        if after != i {
            i = after;
            continue;
        }
        let starts_name = i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == b'.');
        let found = starts_name
            .then(|| {
                BUILTINS.iter().find(|(name, _)| {
                    bytes[i..].starts_with(name.as_bytes())
                        && bytes.get(i + name.len()) == Some(&b'(')
                })
            })
            .flatten();
        let Some(&(name, arity)) = found else {
            i += 1;
            continue;
        };
        let open = i + name.len();
        let Some((args, close)) = arguments(bytes, open) else {
            i = open + 1;
            continue;
        };
        if args.len() == arity + 1 {
            let inputs: Vec<&str> = args[..arity]
                .iter()
                .map(|r| text[r.clone()].trim())
                .collect();
            let output = text[args[arity].clone()]
                .split_whitespace()
                .collect::<Vec<_>>();
            let output = output.join(" ");
            let replacement = format!("{output} = {name}({})", inputs.join(", "));
            let call = i..close + 1;
            // The rewrite keeps the inputs as written and every line break of the call, so
            // line numbers in later errors still match the file.
            let last_input = args[arity - 1].end;
            let dropped_lines = text[last_input..close].matches('\n').count();
            let in_place = format!(
                "{output} = {name}({}){}",
                &text[open + 1..last_input],
                "\n".repeat(dropped_lines)
            );
            let rewrite = (arity > 0 && is_pattern(&output) && whole_line(text, &call))
                .then_some((call, in_place));
            out.push(Finding {
                line: line_of(text, i),
                construct: format!("{name} called with an output argument ({output})"),
                suggestion: format!("write `{replacement}` (or `{output} := …`)"),
                rewrite,
            });
        }
        i = close + 1;
    }
}

/// Everything in `text` regorus will not take (lines longer than `max_line` included).
pub fn scan(text: &str, max_line: usize) -> Vec<Finding> {
    let mut out = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        if line.len() > max_line && out.len() < MAX_FINDINGS {
            out.push(Finding {
                line: n + 1,
                construct: format!("a line of {} characters (at most {max_line})", line.len()),
                suggestion: "split the long string: `concat(\"\", [\"part 1\", \"part 2\"])`"
                    .into(),
                rewrite: None,
            });
        }
    }
    output_arguments(text, &mut out);
    out.sort_by_key(|f| f.line);
    out
}

/// `text` with every rewritable output-argument call rewritten (line numbers unchanged).
pub fn rewrite(text: &str) -> Option<String> {
    let mut findings = Vec::new();
    output_arguments(text, &mut findings);
    let mut edits: Vec<_> = findings.into_iter().filter_map(|f| f.rewrite).collect();
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = text.to_owned();
    for (range, replacement) in edits {
        out.replace_range(range, &replacement);
    }
    Some(out)
}

/// The `.rego` files with esm's rewrites applied (see [`rewrite`]).
pub fn rewrite_files(files: Vec<SourceFile>) -> Vec<SourceFile> {
    files
        .into_iter()
        .map(
            |f| match f.path.ends_with(".rego").then(|| rewrite(&f.text)) {
                Some(Some(text)) => SourceFile { text, ..f },
                _ => f,
            },
        )
        .collect()
}

/// Refuses a set that still has output-argument calls after [`rewrite_files`]: regorus only
/// reports their unsafe variable when the rule is evaluated, so without this a policy check
/// would pass and every request reaching the rule would fail.
pub fn refuse_output_arguments(files: &[SourceFile]) -> Result<(), Error> {
    for file in files.iter().filter(|f| f.path.ends_with(".rego")) {
        let mut found = Vec::new();
        output_arguments(&file.text, &mut found);
        if let Some(f) = found.first() {
            return Err(Error::policy(
                format!("{}:{}", file.path, f.line),
                format!(
                    "{}, which esm's Rego engine does not accept inside an expression: {}",
                    f.construct, f.suggestion
                ),
            ));
        }
    }
    Ok(())
}

/// A compile error, explained when the scanner finds its cause: an "unsafe" variable and an
/// output-argument call, or a too-long line. The finding names the file, the line, the
/// construct and the rewrite; the engine's message follows. Other errors pass unchanged.
pub fn explain(files: &[SourceFile], err: Error) -> Error {
    let Error::Policy { reason, .. } = &err else {
        return err;
    };
    let wanted = |f: &Finding| {
        (reason.contains("unsafe") && f.construct.contains("output argument"))
            || (reason.contains("column width") && f.construct.starts_with("a line of"))
    };
    let found = files
        .iter()
        .filter(|f| f.path.ends_with(".rego"))
        .find_map(|file| {
            scan(&file.text, MAX_LINE)
                .into_iter()
                .find(|f| wanted(f))
                .map(|f| (file, f))
        });
    // The engine's message quotes the offending line, which may be 64 KiB long: keep its
    // verdict (the last line) only.
    let verdict: String = reason
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    match found {
        Some((file, f)) => Error::policy(
            format!("{}:{}", file.path, f.line),
            format!(
                "{}, which esm's Rego engine does not accept: {} (engine: {verdict})",
                f.construct, f.suggestion
            ),
        ),
        None => err,
    }
}

#[cfg(test)]
#[path = "rego_compat_tests.rs"]
mod tests;
