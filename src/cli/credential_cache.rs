//! The exec plugin's on-disk state: cached tokens, remembered failures and the refresh lock.
//!
//! - `<cache dir>/tka/credentials/<key>.json`: the last token, its expiry and the time the plugin should
//!   refresh (expiry minus `min(60 s, 10 % of the lifetime)`); 0600 in a 0700 directory, written atomically;
//! - `<cache dir>/tka/credentials/<key>.failed.json`: the last refresh failure, replayed for 5 s so background
//!   tools (IDEs, k9s) cannot hammer the server;
//! - `<runtime dir>/tka/<key>.lock`: taken only on a cache miss, so concurrent kubectl calls make one request.
//!
//! `<key>` = hex SHA-256 of `server URL + "\n" + cluster`. Nothing here talks to the network.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{CliError, Exit};
use super::kubeconfig_files::write_atomic;

/// How long a failed refresh is replayed instead of asking the server again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Upper bound of the refresh skew.
const MAX_SKEW: Duration = Duration::from_secs(60);

/// A cached token. The token itself never leaves this file except as the plugin's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedToken {
    pub token: String,
    /// Expiry of the token as the server reported it.
    pub expires_at: Timestamp,
    /// Expiry minus the skew: the `expirationTimestamp` handed to kubectl, and when the cache stops being used.
    pub refresh_at: Timestamp,
}

impl CachedToken {
    /// A token fetched at `now` that expires at `expires_at`.
    pub fn new(token: String, expires_at: Timestamp, now: Timestamp) -> CachedToken {
        let lifetime = expires_at.duration_since(now);
        let lifetime = if lifetime.is_negative() {
            Duration::ZERO
        } else {
            lifetime.unsigned_abs()
        };
        let skew = MAX_SKEW.min(lifetime / 10);
        let refresh_at = expires_at
            .checked_sub(jiff::SignedDuration::try_from(skew).unwrap_or_default())
            .unwrap_or(expires_at);
        CachedToken {
            token,
            expires_at,
            refresh_at,
        }
    }

    /// Usable without a refresh.
    pub fn fresh(&self, now: Timestamp) -> bool {
        now < self.refresh_at
    }
}

/// A remembered failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub until: Timestamp,
    pub exit: u8,
    pub message: String,
    #[serde(default)]
    pub advice: Vec<String>,
    #[serde(default)]
    pub request_id: Option<String>,
}

impl Failure {
    pub fn from_error(e: &CliError, now: Timestamp) -> Failure {
        Failure {
            until: now
                .checked_add(jiff::SignedDuration::try_from(NEGATIVE_TTL).unwrap_or_default())
                .unwrap_or(now),
            exit: e.exit.code(),
            message: e.message.clone(),
            advice: e.advice.clone(),
            request_id: e.request_id.clone(),
        }
    }

    /// The remembered error, saying that it is a replay.
    pub fn to_error(&self, now: Timestamp) -> CliError {
        let left = self.until.duration_since(now).as_secs_f64().ceil().max(1.0);
        let mut e = CliError::new(exit_from_code(self.exit), self.message.clone());
        e.advice = self.advice.clone();
        e.advice.push(format!(
            "this failure is remembered for {left:.0} s so tools calling the plugin in a loop do not flood the \
             server; `tka login` clears it"
        ));
        e.request_id = self.request_id.clone();
        e
    }
}

fn exit_from_code(code: u8) -> Exit {
    match code {
        2 => Exit::Usage,
        3 => Exit::NotAuthorized,
        4 => Exit::NotSignedIn,
        5 => Exit::Unavailable,
        _ => Exit::Other,
    }
}

/// What a cache file holds: the value plus the server it belongs to, so that everything of one server can be
/// forgotten at once (logout, a revoked session) without knowing every cluster it was cached for. Files written
/// before the field existed read as server `""`.
#[derive(Serialize, Deserialize)]
struct Stored<T> {
    #[serde(default)]
    server: String,
    #[serde(flatten)]
    value: T,
}

/// Just the owner of a cache file.
#[derive(Deserialize)]
struct Owner {
    #[serde(default)]
    server: String,
}

/// The files of one (server, cluster) pair.
#[derive(Debug, Clone)]
pub struct Slot {
    /// `<cache dir>/tka`: the root whose permissions are kept at 0700.
    root: PathBuf,
    server: String,
    pub token_file: PathBuf,
    pub failure_file: PathBuf,
    pub lock_file: PathBuf,
}

/// hex SHA-256 of `server + "\n" + cluster`.
pub fn key(server: &str, cluster: &str) -> String {
    let mut h = Sha256::new();
    h.update(server.as_bytes());
    h.update(b"\n");
    h.update(cluster.as_bytes());
    hex::encode(h.finalize())
}

/// `<cache dir>/tka`.
fn cache_root() -> Result<PathBuf, CliError> {
    dirs::cache_dir().map(|d| d.join("tka")).ok_or_else(|| {
        CliError::usage("cannot determine the cache directory: set HOME or XDG_CACHE_HOME")
    })
}

/// Forgets every cached token and remembered failure of `server`, whatever cluster they were for. Returns how
/// many files were deleted.
pub fn clear_server(server: &str) -> Result<usize, CliError> {
    let root = cache_root()?;
    clear_server_at(&root, server)
        .map_err(|e| CliError::other(format!("cannot clear {}: {e}", root.display())))
}

/// [`clear_server`] under an explicit cache root. Unreadable or foreign files are left alone.
pub fn clear_server_at(root: &Path, server: &str) -> io::Result<usize> {
    let dir = root.join("credentials");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let owner = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Owner>(&b).ok());
        if owner.is_some_and(|o| o.server == server) {
            remove_if_exists(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

impl Slot {
    /// The slot under the platform's cache and runtime directories.
    pub fn new(server: &str, cluster: &str) -> Result<Slot, CliError> {
        let cache = cache_root()?;
        // $XDG_RUNTIME_DIR is per user and 0700 by definition; never a shared /tmp.
        let runtime = dirs::runtime_dir().map(|d| d.join("tka"));
        Ok(Slot::at(&cache, runtime.as_deref(), server, cluster))
    }

    /// The slot under explicit directories (`runtime` falls back to the cache root).
    pub fn at(root: &Path, runtime: Option<&Path>, server: &str, cluster: &str) -> Slot {
        let k = key(server, cluster);
        let dir = root.join("credentials");
        let lock_dir = runtime.map_or_else(|| root.to_path_buf(), Path::to_path_buf);
        Slot {
            root: root.to_path_buf(),
            server: server.to_string(),
            token_file: dir.join(format!("{k}.json")),
            failure_file: dir.join(format!("{k}.failed.json")),
            lock_file: lock_dir.join(format!("{k}.lock")),
        }
    }

    /// The cached token, if the file exists and parses (a damaged file is a miss, not an error).
    pub fn read_token(&self) -> Option<CachedToken> {
        read_stored(&self.token_file)
    }

    pub fn read_failure(&self) -> Option<Failure> {
        read_stored(&self.failure_file)
    }

    pub fn write_token(&self, t: &CachedToken) -> io::Result<()> {
        self.write_stored(&self.token_file, t)?;
        remove_if_exists(&self.failure_file)
    }

    pub fn write_failure(&self, f: &Failure) -> io::Result<()> {
        self.write_stored(&self.failure_file, f)
    }

    fn write_stored<T: Serialize>(&self, path: &Path, value: &T) -> io::Result<()> {
        let body = serde_json::to_vec(&Stored {
            server: self.server.clone(),
            value,
        })
        .map_err(io::Error::other)?;
        write_atomic(&self.root, path, &body)
    }

    /// Forgets the token and any remembered failure (logout; a new login).
    pub fn clear(&self) -> io::Result<()> {
        remove_if_exists(&self.token_file)?;
        remove_if_exists(&self.failure_file)
    }

    /// Opens (creating with 0600 in a 0700 directory) the lock file; the caller locks it.
    pub fn open_lock(&self) -> io::Result<fs::File> {
        let dir = self
            .lock_file
            .parent()
            .ok_or_else(|| io::Error::other("lock file has no directory"))?;
        create_private_dir(dir)?;
        let mut o = fs::OpenOptions::new();
        o.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        o.open(&self.lock_file)
    }
}

fn read_stored<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice::<Stored<T>>(&fs::read(path).ok()?)
        .ok()
        .map(|s| s.value)
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn key_is_sha256_of_server_newline_cluster() {
        // printf 'https://tka.example.ts.net\nprod' | sha256sum
        assert_eq!(
            key("https://tka.example.ts.net", "prod"),
            "34eb58184aac99fb75492b2e0d1691cdf82b8fcdf6c823c6d157dcfd4fe0ecb7"
        );
        assert_ne!(key("s", "a"), key("s", "b"));
        assert_ne!(key("s", ""), key("t", ""));
        assert_eq!(key("s", "c").len(), 64);
    }

    #[test]
    fn skew_is_ten_percent_capped_at_a_minute() {
        let now = ts("2026-11-24T10:00:00Z");
        let t = CachedToken::new("t".into(), ts("2026-11-24T10:15:00Z"), now);
        assert_eq!(t.refresh_at, ts("2026-11-24T10:14:00Z"));
        let t = CachedToken::new("t".into(), ts("2026-11-24T10:05:00Z"), now);
        assert_eq!(t.refresh_at, ts("2026-11-24T10:04:30Z"));
        assert!(t.fresh(ts("2026-11-24T10:04:29Z")));
        assert!(!t.fresh(ts("2026-11-24T10:04:30Z")));
        // Already expired: no skew, never fresh.
        let t = CachedToken::new("t".into(), ts("2026-11-24T09:00:00Z"), now);
        assert!(!t.fresh(now));
    }

    #[cfg(unix)]
    #[test]
    fn files_are_private_and_failures_expire_from_the_replay() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cache/tka");
        let slot = Slot::at(&root, None, "https://s", "c");
        assert!(slot.read_token().is_none());
        let now = ts("2026-11-24T10:00:00Z");
        let f = Failure::from_error(
            &CliError::new(Exit::NotSignedIn, "not signed in").advice("run `tka login`"),
            now,
        );
        slot.write_failure(&f).unwrap();
        assert_eq!(slot.read_failure(), Some(f.clone()));
        let replay = f.to_error(now);
        assert_eq!(replay.exit, Exit::NotSignedIn);
        assert!(replay.advice[1].contains("remembered for 5 s"), "{replay}");

        let t = CachedToken::new("secret".into(), ts("2026-11-24T11:00:00Z"), now);
        slot.write_token(&t).unwrap();
        assert_eq!(slot.read_token(), Some(t));
        assert!(
            slot.read_failure().is_none(),
            "a success clears the failure"
        );
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&slot.token_file), 0o600);
        assert_eq!(mode(slot.token_file.parent().unwrap()), 0o700);
        assert_eq!(mode(&root), 0o700);
        let lock = slot.open_lock().unwrap();
        drop(lock);
        assert_eq!(mode(&slot.lock_file), 0o600);
        slot.clear().unwrap();
        assert!(!slot.token_file.exists());
        slot.clear().unwrap();
    }

    #[test]
    fn everything_of_one_server_is_forgotten_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cache/tka");
        let now = ts("2026-11-24T10:00:00Z");
        let t = CachedToken::new("secret".into(), ts("2026-11-24T11:00:00Z"), now);
        let f = Failure::from_error(&CliError::new(Exit::NotSignedIn, "x"), now);
        let mine: Vec<Slot> = ["", "prod", "prod-west"]
            .iter()
            .map(|c| Slot::at(&root, None, "https://tka.a", c))
            .collect();
        for s in &mine {
            s.write_token(&t).unwrap();
        }
        mine[0].write_failure(&f).unwrap();
        let other = Slot::at(&root, None, "https://tka.b", "prod");
        other.write_token(&t).unwrap();
        // A file of an older tka without the server field is not guessed at.
        fs::write(
            root.join("credentials/legacy.json"),
            serde_json::to_vec(&t).unwrap(),
        )
        .unwrap();

        assert_eq!(clear_server_at(&root, "https://tka.a").unwrap(), 4);
        for s in &mine {
            assert!(s.read_token().is_none() && s.read_failure().is_none());
        }
        assert_eq!(other.read_token(), Some(t), "another server's token stays");
        assert!(root.join("credentials/legacy.json").exists());
        assert_eq!(clear_server_at(&tmp.path().join("none"), "x").unwrap(), 0);
    }
}
