//! One logged-in PKCS#11 token: found by label (slot numbers change when tokens are added),
//! with a pool of sessions so concurrent signers do not queue on one, and a reconnect (new
//! sessions, new login) when the token went away and came back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::error::{Error, Result};

pub(super) const BACKEND: &str = "pkcs11";
/// Idle sessions kept open per token; more are opened on demand and closed when returned.
const MAX_IDLE: usize = 32;

/// The token's user PIN. No `Debug` derive and no `Display`: it is never printed or logged.
pub struct Pin(AuthPin);

impl Pin {
    /// The PIN as read from `ESM_PKCS11_PIN` or the PIN file: one trailing newline dropped.
    pub fn new(text: &str) -> Option<Self> {
        let t = text.strip_suffix('\n').unwrap_or(text);
        let t = t.strip_suffix('\r').unwrap_or(t);
        (!t.is_empty()).then(|| Self(AuthPin::from(t.to_owned())))
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// Modules are loaded and `C_Initialize`d once per process: a second `C_Initialize` of the
/// same library fails, and every token of a module shares its login state.
fn module(path: &Path) -> Result<Pkcs11> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| Error::Bug("PKCS#11 module table poisoned".into()))?;
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    if !path.is_file() {
        return Err(Error::Config(format!(
            "PKCS#11 module {}: no such file",
            path.display()
        )));
    }
    let ctx = Pkcs11::new(path).map_err(|e| {
        Error::Config(format!(
            "PKCS#11 module {}: cannot load: {e}",
            path.display()
        ))
    })?;
    initialize(&ctx, path)?;
    modules.insert(path.to_owned(), ctx.clone());
    Ok(ctx)
}

fn initialize(ctx: &Pkcs11, path: &Path) -> Result<()> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(Error::KeyBackend {
            backend: BACKEND,
            reason: format!("PKCS#11 module {}: C_Initialize: {e}", path.display()),
        }),
    }
}

/// True for the errors after which the sessions (or the login) are gone and only a new
/// connection helps: the token was pulled, the module reset, the login dropped.
pub(super) fn connection_lost(e: &P11Error) -> bool {
    matches!(
        e,
        P11Error::Pkcs11(
            RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid,
            _
        )
    )
}

/// One connection: the slot the token was found in and the sessions opened on it. Dropping
/// it closes its idle sessions.
pub(super) struct Conn {
    ctx: Pkcs11,
    slot: Slot,
    /// Bumped on every reconnect, so object handles found on an old connection are not reused.
    pub(super) generation: u64,
    idle: Mutex<Vec<Session>>,
}

impl Conn {
    fn checkout(&self) -> Result<Session, P11Error> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        match idle {
            Some(s) => Ok(s),
            None => self.ctx.open_rw_session(self.slot),
        }
    }

    fn checkin(&self, s: Session) {
        if let Ok(mut v) = self.idle.lock() {
            if v.len() < MAX_IDLE {
                v.push(s);
            }
        }
    }
}

/// A token by module and label, connected on first use.
pub struct Token {
    pub(super) module_path: PathBuf,
    pub(super) label: String,
    pin: Pin,
    conn: RwLock<Option<Arc<Conn>>>,
    generations: std::sync::atomic::AtomicU64,
}

/// What went wrong inside a session: a PKCS#11 return code (maybe a lost connection) or
/// one of esm's own findings.
pub(super) enum Failure {
    P11(P11Error),
    Esm(Error),
}

impl From<P11Error> for Failure {
    fn from(e: P11Error) -> Self {
        Self::P11(e)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Esm(e)
    }
}

impl Token {
    pub fn new(module_path: PathBuf, label: String, pin: Pin) -> Self {
        Self {
            module_path,
            label,
            pin,
            conn: RwLock::new(None),
            generations: Default::default(),
        }
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::KeyBackend {
            backend: BACKEND,
            reason: format!("token {:?}: {what}: {e}", self.label),
        }
    }

    /// Loads the module, finds the token, logs in. Wrong PIN, missing module and missing
    /// token are configuration errors with one-line messages; a token that goes missing
    /// after a first connection is a run-time failure ([`Error::KeyBackend`]).
    fn connect(&self) -> Result<Conn> {
        let ctx = module(&self.module_path)?;
        let slot = match self.find_slot(&ctx) {
            // A module finalised under us (or reset): initialise it again once.
            Err(P11Error::Pkcs11(RvError::CryptokiNotInitialized, _)) => {
                initialize(&ctx, &self.module_path)?;
                self.find_slot(&ctx)
            }
            other => other,
        }
        .map_err(|e| self.err("listing slots", e))?;
        let slot = slot.ok_or_else(|| {
            let message = format!(
                "PKCS#11 module {}: no token labelled {:?}",
                self.module_path.display(),
                self.label
            );
            // On the first connection a missing token is a wrong label or module; once
            // connected, it is a token pulled or failed at run time.
            if self.generations.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                Error::Config(message)
            } else {
                Error::KeyBackend {
                    backend: BACKEND,
                    reason: message,
                }
            }
        })?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| self.err("opening a session", e))?;
        match session.login(UserType::User, Some(&self.pin.0)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(P11Error::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid, _)) => {
                return Err(Error::Config(format!(
                    "PKCS#11 token {:?}: wrong PIN",
                    self.label
                )))
            }
            Err(P11Error::Pkcs11(RvError::PinLocked, _)) => {
                return Err(Error::Config(format!(
                    "PKCS#11 token {:?}: the user PIN is locked",
                    self.label
                )))
            }
            Err(e) => return Err(self.err("login", e)),
        }
        let generation = 1 + self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(pkcs11.token = %self.label, pkcs11.connection = generation, "PKCS#11 token logged in");
        Ok(Conn {
            ctx,
            slot,
            generation,
            idle: Mutex::new(vec![session]),
        })
    }

    fn find_slot(&self, ctx: &Pkcs11) -> Result<Option<Slot>, P11Error> {
        for slot in ctx.get_slots_with_token()? {
            let info = ctx.get_token_info(slot)?;
            if info.label().trim_end() == self.label {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    fn current(&self) -> Result<Arc<Conn>> {
        if let Some(c) = self.conn.read().ok().and_then(|g| g.clone()) {
            return Ok(c);
        }
        let mut g = self
            .conn
            .write()
            .map_err(|_| Error::Bug("PKCS#11 connection lock poisoned".into()))?;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new(self.connect()?);
        *g = Some(c.clone());
        Ok(c)
    }

    /// Forgets connection `generation` (its sessions close when the last user lets go).
    fn invalidate(&self, generation: u64) {
        if let Ok(mut g) = self.conn.write() {
            if g.as_ref().is_some_and(|c| c.generation == generation) {
                *g = None;
            }
        }
    }

    /// Whether the token offers `mechanism` for key pair generation (`generate`) or for
    /// signing. Asked one mechanism at a time: a module's full list holds vendor mechanisms
    /// the PKCS#11 library cannot name.
    pub(super) fn offers(
        &self,
        mechanism: cryptoki::mechanism::MechanismType,
        generate: bool,
    ) -> Result<bool> {
        let conn = self.current()?;
        match conn.ctx.get_mechanism_info(conn.slot, mechanism) {
            Ok(info) => Ok(if generate {
                info.generate_key_pair()
            } else {
                info.sign()
            }),
            Err(P11Error::Pkcs11(RvError::MechanismInvalid, _)) => Ok(false),
            Err(e) => Err(self.err("reading mechanism info", e)),
        }
    }

    /// Connects and logs in now: `esm init` checks the token before it writes anything.
    pub fn check(&self) -> Result<()> {
        self.current().map(|_| ())
    }

    /// Runs `f` on a pooled session. A lost connection is re-established and `f` tried once
    /// more; if the token is still gone, the error says so.
    pub(super) fn with_session<T>(
        &self,
        what: &str,
        f: impl Fn(&Session, &Conn) -> Result<T, Failure>,
    ) -> Result<T> {
        let mut last = None;
        for _attempt in 0..2 {
            let conn = self.current()?;
            let result = conn.checkout().map_err(Failure::P11).and_then(|s| {
                let r = f(&s, &conn);
                match &r {
                    Err(Failure::P11(e)) if connection_lost(e) => drop(s),
                    _ => conn.checkin(s),
                }
                r
            });
            match result {
                Ok(v) => return Ok(v),
                Err(Failure::Esm(e)) => return Err(e),
                Err(Failure::P11(e)) if connection_lost(&e) => {
                    tracing::warn!(pkcs11.token = %self.label, error = %e, "PKCS#11 connection lost; reconnecting");
                    self.invalidate(conn.generation);
                    last = Some(e);
                }
                Err(Failure::P11(e)) => return Err(self.err(what, e)),
            }
        }
        Err(self.err(
            &format!("{what} (after reconnecting)"),
            last.map(|e| e.to_string()).unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_debug_never_shows_the_pin() {
        let pin = Pin::new("s3cret-1234\n");
        assert!(pin.is_some());
        let shown = format!("{pin:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn empty_pin_is_no_pin() {
        assert!(Pin::new("\n").is_none());
        assert!(Pin::new("").is_none());
    }

    #[test]
    fn pulled_token_and_dropped_login_count_as_lost_connection() {
        let lost = |rv| connection_lost(&P11Error::Pkcs11(rv, cryptoki::context::Function::Sign));
        assert!(lost(RvError::DeviceRemoved));
        assert!(lost(RvError::SessionHandleInvalid));
        assert!(lost(RvError::TokenNotPresent));
        assert!(lost(RvError::UserNotLoggedIn));
        assert!(!lost(RvError::PinIncorrect));
        assert!(!lost(RvError::MechanismInvalid));
    }
}
