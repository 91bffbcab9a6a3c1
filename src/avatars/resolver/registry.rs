//! The identity registry as the resolver sees it: key → upstream URL and display name,
//! remembered briefly so repeated misses of one key do not query the database each time.

use super::*;

impl Avatars {
    pub(super) async fn identity(&self, key: &UserKey) -> Option<Arc<Identity>> {
        let generation = self.0.generations.current(key.as_str());
        if let Some((tag, found)) = self.0.identities.get(key)
            && tag == generation
        {
            return found;
        }
        match self.0.repo.identity(key).await {
            Ok(found) => {
                let found = found.map(Arc::new);
                self.0
                    .identities
                    .insert(key.clone(), (generation, found.clone()));
                found
            }
            Err(e) => {
                // Serve a default now; do not remember the absence.
                tracing::error!(error = %e, "registry lookup failed");
                None
            }
        }
    }

    /// Register identities; renditions of changed keys are forgotten at once.
    pub async fn register(&self, batch: &[Identity]) -> Result<(), crate::repo::RepoError> {
        let changed = self.0.repo.upsert_identities(batch).await?;
        for key in &changed {
            self.forget(key);
        }
        Ok(())
    }
}
