//! Parent directories, made on demand (`mkdir -p` with `application/json; type=directory`) and
//! remembered per process, so a warm store does one PUT per object. Shared by the blob writer and
//! the alias log's segments.

use std::collections::HashSet;
use std::sync::Mutex;

use reqwest::header::HeaderMap;

use super::{api_error, layout, MantaClient, RequestBody};
use crate::Result;

pub(crate) struct Dirs {
    client: MantaClient,
    /// Directories known to exist (created or seen).
    known: Mutex<HashSet<String>>,
}

impl Dirs {
    pub(crate) fn new(client: MantaClient) -> Self {
        Dirs {
            client,
            known: Mutex::new(HashSet::new()),
        }
    }

    fn is_known(&self, dir: &str) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(dir)
    }

    fn remember(&self, dir: &str) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.to_string());
    }

    fn forget_all(&self) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// `mkdir -p dir`: creates each missing ancestor below the account's top directory
    /// (`/<user>/stor`), skipping the ones already known.
    async fn ensure(&self, dir: &str) -> Result<()> {
        if self.is_known(dir) {
            return Ok(());
        }
        for path in layout::ancestors(dir) {
            if self.is_known(&path) {
                continue;
            }
            self.client.put_directory(&path).await?;
            self.remember(&path);
        }
        Ok(())
    }

    /// PUTs an object, creating its parent directories first if not known to exist, and once more
    /// if Manta says a parent is missing (someone removed it behind our back).
    pub(crate) async fn put_with_parents(
        &self,
        path: &str,
        headers: HeaderMap,
        body: RequestBody,
    ) -> Result<HeaderMap> {
        let parent = layout::parent(path).to_string();
        self.ensure(&parent).await?;
        match self
            .client
            .put_object(path, headers.clone(), body.clone())
            .await
        {
            Err(e) if api_error(&e).is_some_and(|a| a.code == "DirectoryDoesNotExist") => {
                tracing::debug!(path, "parent directory vanished; recreating");
                self.forget_all();
                self.ensure(&parent).await?;
                self.client.put_object(path, headers, body).await
            }
            other => other,
        }
    }
}
