//! Parsed verification keys, kept by the text they were parsed from. A policy passes the same
//! PEM certificate or JWKS document on every request; parsing it (X.509, base64, JSON) costs
//! more than the signature check, so the builtins parse each distinct text once.
//!
//! Bounded: at most [`MAX_ENTRIES`] texts, none longer than [`MAX_CACHED_TEXT`]; when full,
//! the oldest entry goes. A text that does not parse is not kept (its error is cheap to find
//! again). The content is a pure function of the key text, so one process-wide cache serves
//! every policy set, across reloads.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::Result;
use crate::jwt::{self, NamedKey};

/// How many distinct key texts are kept.
pub const MAX_ENTRIES: usize = 64;
/// Longer key texts are parsed on every call rather than kept (bounds the cache's memory to
/// `MAX_ENTRIES × MAX_CACHED_TEXT` twice over: text and parsed keys).
pub const MAX_CACHED_TEXT: usize = 64 << 10;

/// A bounded map from key text to parsed keys, oldest evicted first.
#[derive(Default)]
pub struct KeyCache {
    entries: HashMap<String, Arc<Vec<NamedKey>>>,
    order: VecDeque<String>,
}

impl KeyCache {
    /// The keys `text` holds, parsed at most once while they stay cached.
    pub fn keys(&mut self, text: &str) -> Result<Arc<Vec<NamedKey>>> {
        if let Some(keys) = self.entries.get(text) {
            return Ok(keys.clone());
        }
        let keys = Arc::new(jwt::parse_keys(text)?);
        if text.len() <= MAX_CACHED_TEXT {
            while self.entries.len() >= MAX_ENTRIES {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                self.entries.remove(&oldest);
            }
            self.entries.insert(text.to_owned(), keys.clone());
            self.order.push_back(text.to_owned());
        }
        Ok(keys)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// [`KeyCache::keys`] on the process-wide cache. A poisoned lock (a panic while parsing)
/// falls back to parsing without the cache.
pub fn cached_keys(text: &str) -> Result<Arc<Vec<NamedKey>>> {
    static CACHE: OnceLock<Mutex<KeyCache>> = OnceLock::new();
    match CACHE.get_or_init(Mutex::default).lock() {
        Ok(mut cache) => cache.keys(text),
        Err(_) => Ok(Arc::new(jwt::parse_keys(text)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(n: usize) -> String {
        format!(r#"{{"kty":"oct","k":"c2VjcmV0","kid":"k{n}"}}"#)
    }

    #[test]
    fn parses_each_text_once_and_returns_the_same_keys() {
        let mut cache = KeyCache::default();
        let a = cache.keys(&jwk(1)).unwrap();
        let b = cache.keys(&jwk(1)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a[0].kid.as_deref(), Some("k1"));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn stays_bounded_evicting_the_oldest() {
        let mut cache = KeyCache::default();
        for n in 0..MAX_ENTRIES + 10 {
            cache.keys(&jwk(n)).unwrap();
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert!(!cache.entries.contains_key(&jwk(0)));
        assert!(cache.entries.contains_key(&jwk(MAX_ENTRIES + 9)));
    }

    #[test]
    fn keeps_neither_errors_nor_oversized_texts() {
        let mut cache = KeyCache::default();
        assert!(cache.keys("not a key").is_err());
        let padded = format!("{}{}", " ".repeat(MAX_CACHED_TEXT), jwk(1));
        assert_eq!(cache.keys(&padded).unwrap().len(), 1);
        assert!(cache.is_empty());
    }
}
