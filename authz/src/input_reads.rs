//! Which parts of the input document a policy set can read, and whether its result can
//! depend on anything but the input and data. Both are found from regorus' own tokens (the
//! ones its parser compiles), so a read the analysis misses would have to be a read the
//! policy cannot express.
//!
//! A read is `input` (or an `import input.…` alias) followed by constant `.name` and
//! `["key"]` steps; the path stops at the first step that is not constant, which keeps the
//! whole subtree. `input` used whole (`x := input`, `walk(input, …)`) reads everything. A
//! `with input… as` target is a replacement, not a read.
//!
//! This is what makes a decision memo sound: two requests that agree on every read path get
//! the same decision from a deterministic policy.

use regorus::unstable::{Lexer, Token, TokenKind};
use regorus::Source;

use crate::policy_set::SourceFile;

/// Builtins whose result depends on the clock, randomness or the network (or, for
/// `io.jwt.decode_verify` and `crypto.x509.parse_and_verify_certificates`, on the clock),
/// matched as `namespace.name` tokens.
const NONDETERMINISTIC: &[(&str, &str)] = &[
    ("time", "now_ns"),
    ("rand", "intn"),
    ("uuid", "rfc4122"),
    ("http", "send"),
    ("net", "lookup_ip_addr"),
    ("opa", "runtime"),
    ("io", "jwt"),
    ("crypto", "x509"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputReads {
    /// Paths from the input's root; empty when a policy reads the whole input. Sorted, and
    /// no path is a prefix of another.
    pub paths: Vec<Vec<String>>,
    /// False when a result can differ for the same input and data.
    pub deterministic: bool,
}

impl InputReads {
    /// True when one of the paths is the whole input.
    pub fn reads_everything(&self) -> bool {
        self.paths.iter().any(Vec::is_empty)
    }

    /// A deterministic set reading `paths`, each written `a.b.c` (`""`: the whole input).
    #[cfg(test)]
    pub(crate) fn of_paths(paths: &[&str]) -> Self {
        Self {
            paths: paths
                .iter()
                .map(|p| {
                    p.split('.')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .collect(),
            deterministic: true,
        }
    }

    /// What to assume when the files cannot be tokenized: everything, nondeterministic.
    fn unknown() -> Self {
        Self {
            paths: vec![Vec::new()],
            deterministic: false,
        }
    }
}

fn tokens(f: &SourceFile) -> Option<Vec<Token>> {
    let source = Source::from_contents(f.path.clone(), f.text.clone()).ok()?;
    let mut lexer = Lexer::new(&source);
    let mut out = Vec::new();
    loop {
        let t = lexer.next_token().ok()?;
        if matches!(t.0, TokenKind::Eof) {
            return Some(out);
        }
        out.push(t);
    }
}

fn is(t: Option<&Token>, kind: &TokenKind, text: &str) -> bool {
    t.is_some_and(|t| {
        std::mem::discriminant(&t.0) == std::mem::discriminant(kind) && t.1.text() == text
    })
}

fn ident(t: Option<&Token>) -> Option<&str> {
    t.filter(|t| matches!(t.0, TokenKind::Ident))
        .map(|t| t.1.text())
}

/// The constant steps after `toks[at]`: `.name` and `["key"]` (a key with an escape is
/// not constant here). Returns the steps and the index after them.
fn steps(toks: &[Token], mut at: usize) -> (Vec<String>, usize) {
    let mut path = Vec::new();
    loop {
        if is(toks.get(at), &TokenKind::Symbol, ".") {
            if let Some(name) = ident(toks.get(at + 1)) {
                path.push(name.to_owned());
                at += 2;
                continue;
            }
        }
        if is(toks.get(at), &TokenKind::Symbol, "[")
            && is(toks.get(at + 2), &TokenKind::Symbol, "]")
        {
            if let Some(t) = toks.get(at + 1) {
                let key = t.1.text();
                if matches!(t.0, TokenKind::String) && !key.contains('\\') {
                    path.push(key.to_owned());
                    at += 3;
                    continue;
                }
            }
        }
        return (path, at);
    }
}

/// An `import` statement: what it imports from (`input`, `data`, `rego`, …), the constant
/// steps after that, the name it binds (`as c`, else the last step), and where it ends.
struct Import<'t> {
    root: Option<&'t str>,
    path: Vec<String>,
    name: Option<String>,
    next: usize,
}

/// The import statement whose `import` keyword is `toks[at]`.
fn import_at(toks: &[Token], at: usize) -> Import<'_> {
    let (path, next) = steps(toks, at + 2);
    let (name, next) = if ident(toks.get(next)) == Some("as") {
        (ident(toks.get(next + 1)).map(str::to_owned), next + 2)
    } else {
        (path.last().cloned(), next)
    };
    Import {
        root: ident(toks.get(at + 1)),
        path,
        name,
        next,
    }
}

/// `import input.a.b` (alias `b`) and `import input.a.b as c`: name → path.
fn aliases(toks: &[Token]) -> Vec<(String, Vec<String>)> {
    toks.iter()
        .enumerate()
        .filter(|(_, t)| matches!(t.0, TokenKind::Ident) && t.1.text() == "import")
        .map(|(i, _)| import_at(toks, i))
        .filter(|imp| imp.root == Some("input"))
        .filter_map(|imp| Some((imp.name?, imp.path)))
        .collect()
}

/// Analyses every `.rego` file of a set.
pub fn analyze(files: &[SourceFile]) -> InputReads {
    let mut paths: Vec<Vec<String>> = Vec::new();
    let mut deterministic = true;
    for f in files.iter().filter(|f| f.path.ends_with(".rego")) {
        let Some(toks) = tokens(f) else {
            return InputReads::unknown();
        };
        let aliases = aliases(&toks);
        let mut i = 0;
        while i < toks.len() {
            let at = i;
            i += 1;
            let Some(name) = ident(toks.get(at)) else {
                continue;
            };
            if name == "import" {
                // The import names a path; its reads are where the alias is used.
                i = import_at(&toks, at).next;
                continue;
            }
            if NONDETERMINISTIC.iter().any(|(ns, n)| {
                name == *ns
                    && is(toks.get(at + 1), &TokenKind::Symbol, ".")
                    && ident(toks.get(at + 2)) == Some(n)
            }) {
                deterministic = false;
            }
            let base = if name == "input" {
                Vec::new()
            } else if let Some((_, p)) = aliases.iter().find(|(a, _)| a == name) {
                p.clone()
            } else {
                continue;
            };
            if ident(at.checked_sub(1).and_then(|p| toks.get(p))) == Some("with") {
                continue;
            }
            let (rest, _) = steps(&toks, at + 1);
            let mut path = base;
            path.extend(rest);
            paths.push(path);
        }
    }
    InputReads {
        paths: minimal(paths),
        deterministic,
    }
}

/// Sorted, deduplicated, and without paths under another path.
fn minimal(mut paths: Vec<Vec<String>>) -> Vec<Vec<String>> {
    paths.sort();
    paths.dedup();
    let mut out: Vec<Vec<String>> = Vec::new();
    for p in paths {
        // Sorted order puts a prefix right before the paths under it.
        if out.last().is_some_and(|q| p.starts_with(q)) {
            continue;
        }
        out.push(p);
    }
    out
}

#[cfg(test)]
#[path = "input_reads_tests.rs"]
mod tests;
