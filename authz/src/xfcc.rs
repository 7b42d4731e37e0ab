//! `x-forwarded-client-cert` (XFCC), read by its grammar as Envoy writes it: elements
//! separated by `,`, each a list of `key=value` pairs separated by `;`, a value either bare
//! or double-quoted (inside quotes a backslash escapes the next character, so `\"` is a
//! quote). Keys are Envoy's (`By`, `Hash`, `Cert`, `Chain`, `Subject`, `URI`, `DNS`),
//! compared without case.
//!
//! Splitting on `,` and `;` without honouring quotes would let a certificate whose subject
//! reads `CN=x;URI=spiffe://td/admin` (Envoy quotes the subject but does not escape its
//! `;`) pass as that identity. Anything that does not follow the grammar gives no identity
//! at all: a header Envoy did not write is not guessed at.

/// A key Envoy writes in an XFCC element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XfccKey {
    By,
    Hash,
    Cert,
    Chain,
    Subject,
    Uri,
    Dns,
}

impl XfccKey {
    fn parse(key: &str) -> Option<Self> {
        const KEYS: [(&str, XfccKey); 7] = [
            ("by", XfccKey::By),
            ("hash", XfccKey::Hash),
            ("cert", XfccKey::Cert),
            ("chain", XfccKey::Chain),
            ("subject", XfccKey::Subject),
            ("uri", XfccKey::Uri),
            ("dns", XfccKey::Dns),
        ];
        KEYS.iter()
            .find(|(name, _)| key.eq_ignore_ascii_case(name))
            .map(|&(_, k)| k)
    }

    /// Envoy writes one `By`, `URI` and `DNS` pair per SAN; the others at most once.
    fn repeats(self) -> bool {
        matches!(self, Self::By | Self::Uri | Self::Dns)
    }
}

/// One proxy's statement about the client certificate it saw.
pub type Element = Vec<(XfccKey, String)>;

/// Why a header does not follow the grammar (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn fail<T>(&self, what: &str) -> Result<T, Malformed> {
        Err(Malformed(format!("{what} at byte {}", self.at)))
    }

    /// `key=`: the key, known and without quotes or separators.
    fn key(&mut self) -> Result<XfccKey, Malformed> {
        let start = self.at;
        loop {
            match self.peek() {
                Some(b'=') => break,
                Some(b',' | b';' | b'"' | b'\\') | None => return self.fail("expected key="),
                Some(_) => self.at += 1,
            }
        }
        let key = self.text[start..self.at].trim_matches([' ', '\t']);
        self.at += 1;
        match XfccKey::parse(key) {
            Some(k) => Ok(k),
            None => self.fail("unknown key"),
        }
    }

    /// A quoted value (unescaped) or a bare one, up to the next separator.
    fn value(&mut self) -> Result<String, Malformed> {
        if self.peek() != Some(b'"') {
            let start = self.at;
            while let Some(b) = self.peek() {
                match b {
                    b',' | b';' => break,
                    b'"' | b'\\' => return self.fail("quote or backslash in a bare value"),
                    _ => self.at += 1,
                }
            }
            return Ok(self.text[start..self.at]
                .trim_end_matches([' ', '\t'])
                .to_owned());
        }
        self.at += 1;
        let mut out = String::new();
        let mut chars = self.text[self.at..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.at += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, escaped)) => out.push(escaped),
                    None => break,
                },
                c => out.push(c),
            }
        }
        self.at = self.text.len();
        self.fail("unterminated quoted value")
    }
}

/// Every element of an XFCC header, in order; an empty header has none.
pub fn parse(header: &str) -> Result<Vec<Element>, Malformed> {
    let mut elements = Vec::new();
    if header.trim_matches([' ', '\t']).is_empty() {
        return Ok(elements);
    }
    let mut c = Cursor {
        text: header,
        at: 0,
    };
    let mut element: Element = Vec::new();
    loop {
        c.skip_blanks();
        let key = c.key()?;
        c.skip_blanks();
        let value = c.value()?;
        if !key.repeats() && element.iter().any(|(k, _)| *k == key) {
            return c.fail("key repeated in one element");
        }
        element.push((key, value));
        c.skip_blanks();
        match c.peek() {
            Some(b';') => c.at += 1,
            Some(b',') => {
                c.at += 1;
                elements.push(std::mem::take(&mut element));
            }
            None => {
                elements.push(element);
                return Ok(elements);
            }
            Some(_) => return c.fail("expected ; or , after a value"),
        }
    }
}

/// The caller's URI: the only `URI` of the header's LAST element, or none.
///
/// The last element, because each Envoy that adds one appends it: with
/// `forward_client_cert_details: APPEND_FORWARD` (or `SANITIZE_SET`, which leaves only its
/// own) an Envoy drops whatever the client sent unless the connection was mutual TLS, and
/// otherwise appends an element for the certificate it verified after the elements it
/// received. Those earlier elements are as their sender wrote them (a client talking to an
/// `APPEND_FORWARD` edge can put anything there); the last one is the nearest Envoy's. esm
/// reads XFCC only when `authz.xfcc` is on, for an edge proxy that terminated mTLS and an
/// Envoy in front of esm that forwards the header (`ALWAYS_FORWARD_ONLY`, as
/// tests/compliance/envoy_harness.py runs it).
///
/// An element with no `URI`, several (an SVID has exactly one URI SAN), or an empty one
/// names nobody; a malformed header names nobody.
pub fn caller_uri(header: &str) -> Option<String> {
    let elements = parse(header).ok()?;
    let last = elements.last()?;
    let mut uris = last.iter().filter(|(k, _)| *k == XfccKey::Uri);
    match (uris.next(), uris.next()) {
        (Some((_, uri)), None) if !uri.is_empty() => Some(uri.clone()),
        _ => None,
    }
}

#[cfg(test)]
#[path = "xfcc_tests.rs"]
mod tests;
