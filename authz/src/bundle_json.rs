//! The canonical form OPA hashes a signed bundle's JSON files over: object keys sorted, no
//! whitespace, strings re-encoded as Go's `encoding/json` writes them with HTML escaping off,
//! and numbers exactly as written.
//!
//! OPA reads the file with `UseNumber` (a number stays the text it was) and hashes that, so
//! `1`, `1.0` and `1e0` hash differently, and so must they here: a canonical form that went
//! through `f64` would let a bundle whose data says `123456789012345678901234567890` carry
//! the signature of one that says `…7000`, or `1e2` that of `100.0`. serde_json without
//! `arbitrary_precision` (which esm does not enable: it changes every number in the
//! workspace) cannot keep the text, so this reads the tokens itself.
//!
//! Stricter than OPA in one way: an object with the same key twice is refused (Go keeps the
//! last; a signature should not depend on which of two readers' rules applies).

/// Deeper than this is refused (serde_json, which reads the data afterwards, stops at 128).
const MAX_DEPTH: usize = 128;

enum Node<'a> {
    /// A number, `true`, `false` or `null`: copied as written.
    Verbatim(&'a str),
    Str(String),
    Array(Vec<Node<'a>>),
    Object(Vec<(String, Node<'a>)>),
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn fail<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.at))
    }

    fn blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, RFC 8259's grammar.
    fn number(&mut self) -> Result<&'a str, String> {
        let start = self.at;
        self.eat(b'-');
        if self.eat(b'0') {
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return self.fail("leading zero");
            }
        } else if self.digits() == 0 {
            return self.fail("expected a value");
        }
        if self.eat(b'.') && self.digits() == 0 {
            return self.fail("no digits after the decimal point");
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            if self.digits() == 0 {
                return self.fail("no digits in the exponent");
            }
        }
        Ok(&self.text[start..self.at])
    }

    /// A string token, decoded (escapes, surrogate pairs) by serde_json.
    fn string(&mut self) -> Result<String, String> {
        let start = self.at;
        self.at += 1;
        loop {
            match self.peek() {
                None => return self.fail("unterminated string"),
                Some(b'"') => break,
                Some(b'\\') => self.at += 2,
                Some(_) => self.at += 1,
            }
        }
        self.at += 1;
        let token = self.text.get(start..self.at).ok_or("unterminated string")?;
        serde_json::from_str::<String>(token).map_err(|e| format!("string at byte {start}: {e}"))
    }

    fn literal(&mut self, word: &'static str) -> Result<&'a str, String> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(word)
        } else {
            self.fail("expected a value")
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node<'a>, String> {
        if depth > MAX_DEPTH {
            return self.fail("nested too deeply");
        }
        self.blanks();
        let node = match self.peek() {
            Some(b'"') => Node::Str(self.string()?),
            Some(b't') => Node::Verbatim(self.literal("true")?),
            Some(b'f') => Node::Verbatim(self.literal("false")?),
            Some(b'n') => Node::Verbatim(self.literal("null")?),
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.blanks();
                if !self.eat(b']') {
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.blanks();
                        if self.eat(b']') {
                            break;
                        }
                        if !self.eat(b',') {
                            return self.fail("expected , or ]");
                        }
                    }
                }
                Node::Array(items)
            }
            Some(b'{') => {
                self.at += 1;
                let mut members = Vec::new();
                self.blanks();
                if !self.eat(b'}') {
                    loop {
                        self.blanks();
                        if self.peek() != Some(b'"') {
                            return self.fail("expected a key");
                        }
                        let key = self.string()?;
                        self.blanks();
                        if !self.eat(b':') {
                            return self.fail("expected :");
                        }
                        members.push((key, self.value(depth + 1)?));
                        self.blanks();
                        if self.eat(b'}') {
                            break;
                        }
                        if !self.eat(b',') {
                            return self.fail("expected , or }");
                        }
                    }
                }
                members.sort_by(|a, b| a.0.cmp(&b.0));
                if let Some(w) = members.windows(2).find(|w| w[0].0 == w[1].0) {
                    return Err(format!("key {:?} appears twice in one object", w[0].0));
                }
                Node::Object(members)
            }
            _ => Node::Verbatim(self.number()?),
        };
        Ok(node)
    }
}

/// A string as Go's encoder writes it with `SetEscapeHTML(false)`: `"` `\` and control
/// characters escaped (`\b \f \n \r \t`, else `\u00xx`), U+2028 and U+2029 escaped, all
/// else literal UTF-8.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write(node: &Node<'_>, out: &mut String) {
    match node {
        Node::Verbatim(t) => out.push_str(t),
        Node::Str(s) => write_string(s, out),
        Node::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(x, out);
            }
            out.push(']');
        }
        Node::Object(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write(v, out);
            }
            out.push('}');
        }
    }
}

/// The canonical form of one JSON document, or why it is not one.
pub fn canonical(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut r = Reader { text, at: 0 };
    let node = r.value(0)?;
    r.blanks();
    if r.at != text.len() {
        return r.fail("text after the document");
    }
    let mut out = String::with_capacity(text.len());
    write(&node, &mut out);
    Ok(out)
}

#[cfg(test)]
#[path = "bundle_json_tests.rs"]
mod tests;
