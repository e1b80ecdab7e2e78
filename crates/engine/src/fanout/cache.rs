//! The run manifests a warm container has read. A manifest is write-once and locked, so it can
//! be kept as long as the process lives; a container works one run at a time, so the last two
//! runs are kept (the current one, and an earlier one whose redelivered items arrive late).
//! Without it every batch would GET and parse the whole manifest, 130 bytes per expected
//! image. Keyed by vault location and run id: one process may serve several vaults (tests do).

use std::sync::{Arc, Mutex};

use ecr_vault_vault::{SnapshotId, Vault, VaultLocation};

use super::state::{IndexedManifest, read_manifest};
use crate::EngineError;

/// Runs whose manifests are kept per process.
const RUNS: usize = 2;

type Key = (VaultLocation, SnapshotId);

static MANIFESTS: Mutex<Recent<Key, Arc<IndexedManifest>>> = Mutex::new(Recent::new(RUNS));

/// A run's manifest, indexed, from this process's cache or read once from the vault; `None`
/// when the run did not fan out (not cached: it costs one GET, as before).
pub async fn read_manifest_cached(
    vault: &Vault,
    run: &SnapshotId,
) -> Result<Option<Arc<IndexedManifest>>, EngineError> {
    let key = (vault.location().clone(), run.clone());
    if let Some(m) = cache().get(&key) {
        return Ok(Some(m));
    }
    // Two batches missing at once both read it; the manifest is the same either way.
    let Some(m) = read_manifest(vault, run).await? else {
        return Ok(None);
    };
    let m = Arc::new(IndexedManifest::from(m));
    cache().insert(key, m.clone());
    Ok(Some(m))
}

fn cache() -> std::sync::MutexGuard<'static, Recent<Key, Arc<IndexedManifest>>> {
    // A panic while holding the lock cannot leave the list half-changed: use it as it is.
    MANIFESTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `capacity` most recently used entries, most recent last.
struct Recent<K, V> {
    capacity: usize,
    entries: Vec<(K, V)>,
}

impl<K: PartialEq, V: Clone> Recent<K, V> {
    const fn new(capacity: usize) -> Self {
        Recent {
            capacity,
            entries: Vec::new(),
        }
    }

    fn get(&mut self, key: &K) -> Option<V> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        let e = self.entries.remove(i);
        let v = e.1.clone();
        self.entries.push(e);
        Some(v)
    }

    fn insert(&mut self, key: K, value: V) {
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push((key, value));
        let over = self.entries.len().saturating_sub(self.capacity);
        self.entries.drain(..over);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recently_used_entries() {
        let mut r = Recent::new(2);
        r.insert("a", 1);
        r.insert("b", 2);
        assert_eq!(r.get(&"a"), Some(1));
        // "b" is now the least recently used: it goes first.
        r.insert("c", 3);
        assert_eq!(r.get(&"b"), None);
        assert_eq!((r.get(&"a"), r.get(&"c")), (Some(1), Some(3)));
        // Re-inserting replaces, never duplicates.
        r.insert("c", 4);
        assert_eq!(r.entries.len(), 2);
        assert_eq!(r.get(&"c"), Some(4));
    }
}
