//! Endpoints as the store keeps them: every endpoint the gateway sends to, from the config
//! file (seeded at each start, marked as such) or created over the admin API.
//!
//! The record holds the signing secrets: the store file is owner-only (mode 0600) like the
//! config file that held them before.

use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, Tables, read_record};
use crate::config::EndpointConfig;
use crate::time::UnixMillis;

/// Endpoint id → [`StoredEndpoint`] (JSON).
pub(crate) const ENDPOINT_CONFIGS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("endpoint_configs");

/// One endpoint's configuration and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEndpoint {
    pub config: EndpointConfig,
    /// Seeded from the config file: changed there, not over the API.
    #[serde(default)]
    pub from_config: bool,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

impl Store {
    /// Writes the config file's endpoints over their stored copies, removes stored copies of
    /// config endpoints that are gone from the file, and returns every endpoint: the file's in
    /// its order, then the API's by creation time. An API endpoint whose id the file now uses
    /// is replaced by the file's (logged).
    pub fn seed_endpoints(
        &self,
        configured: &[EndpointConfig],
        now: UnixMillis,
    ) -> Result<Vec<StoredEndpoint>, StoreError> {
        let txn = self.database().begin_write()?;
        let all = {
            let mut table = txn.open_table(ENDPOINT_CONFIGS)?;
            let mut stored: Vec<StoredEndpoint> = Vec::new();
            for entry in table.iter()? {
                let (_, raw) = entry?;
                stored.push(serde_json::from_slice(raw.value())?);
            }
            let seeded = seed(stored, configured, now);
            for record in &seeded.all[..seeded.from_file] {
                table.insert(
                    record.config.id.as_str(),
                    serde_json::to_vec(record)?.as_slice(),
                )?;
            }
            for id in &seeded.removed {
                table.remove(id.as_str())?;
            }
            seeded.all
        };
        txn.commit()?;
        Ok(all)
    }

    /// One stored endpoint.
    pub fn stored_endpoint(&self, id: &str) -> Result<Option<StoredEndpoint>, StoreError> {
        let txn = self.database().begin_read()?;
        let table = txn.open_table(ENDPOINT_CONFIGS)?;
        read_record(&table, id)
    }
}

impl Tables<'_> {
    pub fn stored_endpoint(&self, id: &str) -> Result<Option<StoredEndpoint>, StoreError> {
        read_record(&self.endpoint_configs, id)
    }

    pub fn put_stored_endpoint(&mut self, record: &StoredEndpoint) -> Result<(), StoreError> {
        let raw = serde_json::to_vec(record)?;
        self.endpoint_configs
            .insert(record.config.id.as_str(), raw.as_slice())?;
        Ok(())
    }

    /// Removes an endpoint and what the gateway recorded about it; whether it existed.
    pub fn delete_stored_endpoint(&mut self, id: &str) -> Result<bool, StoreError> {
        self.endpoints.remove(id)?;
        Ok(self.endpoint_configs.remove(id)?.is_some())
    }
}

/// What seeding leaves in `endpoint_configs`.
pub(crate) struct Seeded {
    /// Every endpoint in answer order: the file's, then the API's by creation time.
    pub all: Vec<StoredEndpoint>,
    /// How many of `all` (the first ones) come from the file and are written.
    pub from_file: usize,
    /// Ids of endpoints seeded from the file before and gone from it now.
    pub removed: Vec<String>,
}

/// Merges the config file's endpoints into the `stored` ones (in id order), for either
/// backend to write.
pub(crate) fn seed(
    stored: Vec<StoredEndpoint>,
    configured: &[EndpointConfig],
    now: UnixMillis,
) -> Seeded {
    let mut all: Vec<StoredEndpoint> = configured
        .iter()
        .map(|config| {
            let previous = stored.iter().find(|record| record.config.id == config.id);
            if previous.is_some_and(|previous| !previous.from_config) {
                tracing::warn!(endpoint_id = %config.id,
                    "the config file defines an endpoint with the id of one created over the API; the file's replaces it");
            }
            StoredEndpoint {
                config: config.clone(),
                from_config: true,
                created_at: previous.map_or(now, |previous| previous.created_at),
                updated_at: now,
            }
        })
        .collect();
    let from_file = all.len();
    let mut removed = Vec::new();
    let mut from_api = Vec::new();
    for record in stored {
        if configured
            .iter()
            .any(|config| config.id == record.config.id)
        {
            continue;
        }
        if record.from_config {
            tracing::info!(endpoint_id = %record.config.id,
                "endpoint removed from the config file; its pending deliveries are dead-lettered");
            removed.push(record.config.id);
        } else {
            from_api.push(record);
        }
    }
    from_api.sort_by_key(|record| record.created_at);
    all.extend(from_api);
    Seeded {
        all,
        from_file,
        removed,
    }
}
