//! Versioned schema migrations: the SQL files in `host/migrations/postgres/`, applied in order.
//!
//! Each migration runs once per database, and `schema_migrations` records it with the SHA-256
//! of its text. All pending migrations apply in one transaction under a transaction-level
//! advisory lock, so nodes starting at the same moment apply them once between them, and a
//! failure leaves the schema as it was. A database whose recorded migrations do not match
//! this build's files (an edited file, or a newer build's schema) is refused with the
//! versions named, rather than run against a schema this build does not know.

use sha2::{Digest as _, Sha256};

use super::PgStore;
use crate::store::StoreError;

/// One schema change, as shipped in the binary.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration of this build, oldest first. Append; never edit one that has shipped.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "queue",
        sql: include_str!("../../../migrations/postgres/0001_queue.sql"),
    },
    Migration {
        version: 2,
        name: "domain",
        sql: include_str!("../../../migrations/postgres/0002_domain.sql"),
    },
    Migration {
        version: 3,
        name: "meta",
        sql: include_str!("../../../migrations/postgres/0003_meta.sql"),
    },
    Migration {
        version: 4,
        name: "shared_config",
        sql: include_str!("../../../migrations/postgres/0004_shared_config.sql"),
    },
];

/// The advisory lock key migrations hold (any constant the gateway uses for nothing else).
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6d69_6772; // "hookmigr"

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this run, oldest first.
    pub applied: Vec<i32>,
    /// The schema version now in force.
    pub version: i32,
}

impl Migration {
    fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// Applies every migration the database lacks.
pub async fn migrate(store: &PgStore) -> Result<MigrationReport, StoreError> {
    run(store, MIGRATIONS).await
}

async fn run(store: &PgStore, migrations: &[Migration]) -> Result<MigrationReport, StoreError> {
    let mut client = store.client().await?;
    let txn = client.transaction().await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             checksum   text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let recorded: Vec<(i32, String, String)> = txn
        .query(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    check_recorded(&recorded, migrations)?;
    let mut applied = Vec::new();
    for migration in &migrations[recorded.len()..] {
        txn.batch_execute(migration.sql)
            .await
            .map_err(|err| StoreError::Schema {
                message: format!(
                    "migration {} ({}) failed, nothing was applied: {err}",
                    migration.version, migration.name
                ),
            })?;
        txn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &migration.checksum()],
        )
        .await?;
        applied.push(migration.version);
    }
    txn.commit().await?;
    Ok(MigrationReport {
        applied,
        version: migrations.last().map_or(0, |last| last.version),
    })
}

/// Refuses a database whose recorded migrations are not a prefix of `migrations`.
fn check_recorded(
    recorded: &[(i32, String, String)],
    migrations: &[Migration],
) -> Result<(), StoreError> {
    for (index, (version, name, checksum)) in recorded.iter().enumerate() {
        let Some(known) = migrations.get(index) else {
            return Err(StoreError::Schema {
                message: format!(
                    "the database has schema version {version} ({name}), newer than this build \
                     knows (up to {}): run the hookgate version that migrated it, or a newer one",
                    migrations.last().map_or(0, |last| last.version)
                ),
            });
        };
        if known.version != *version || known.checksum() != *checksum {
            return Err(StoreError::Schema {
                message: format!(
                    "migration {version} ({name}) in the database differs from this build's \
                     migration {} ({}): the database was migrated by another build; use that \
                     build, or restore the database",
                    known.version, known.name
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i32 + 1, "{}", migration.name);
        }
    }

    #[test]
    fn a_recorded_migration_must_match_this_builds_file() {
        let first = MIGRATIONS[0];
        let ok = [(1, first.name.to_owned(), first.checksum())];
        check_recorded(&ok, MIGRATIONS).expect("the same migration");

        let edited = [(1, first.name.to_owned(), "0".repeat(64))];
        let message = check_recorded(&edited, MIGRATIONS).unwrap_err().to_string();
        assert!(message.contains("differs from this build"), "{message}");

        let newer = [
            (1, first.name.to_owned(), first.checksum()),
            (99, "future".to_owned(), "0".repeat(64)),
        ];
        let message = check_recorded(&newer[..], &MIGRATIONS[..1])
            .unwrap_err()
            .to_string();
        assert!(message.contains("newer than this build"), "{message}");
    }
}
