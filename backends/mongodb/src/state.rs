//! `StateStore` on MongoDB: the `cluster_state` collection, one document per record,
//! written with the store's write concern; a TTL index removes expired ones.

use confab_sdk::async_trait;
use confab_sdk::futures_util::TryStreamExt;
use confab_sdk::storage::{StateEntry, StateStore, StorageError, StorageResult};
use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::ReplaceOptions;

use crate::{MongoStore, backend, queries as q};

fn id(kind: &str, key: &str) -> String {
    format!("{kind}/{key}")
}

impl MongoStore {
    fn state(&self) -> mongodb::Collection<Document> {
        self.shared.cols.db.collection(q::CLUSTER_STATE)
    }
}

#[async_trait]
impl StateStore for MongoStore {
    async fn put_state(&self, kind: &str, key: &str, value: &str, expires_ms: i64) -> StorageResult<()> {
        self.check_open()?;
        let id = id(kind, key);
        let record = doc! {
            "_id": &id,
            "kind": kind,
            "value": value,
            "expires": DateTime::from_millis(expires_ms),
        };
        self.state()
            .replace_one(doc! {"_id": &id}, record)
            .with_options(ReplaceOptions::builder().upsert(true).build())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_state(&self, kind: &str, key: &str) -> StorageResult<()> {
        self.check_open()?;
        self.state()
            .delete_one(doc! {"_id": id(kind, key)})
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load_state(&self, kind: &str, now_ms: i64) -> StorageResult<Vec<StateEntry>> {
        let filter = doc! {"kind": kind, "expires": {"$gt": DateTime::from_millis(now_ms)}};
        let docs: Vec<Document> = self
            .state()
            .find(filter)
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        let prefix = id(kind, "");
        docs.into_iter()
            .map(|d| {
                let bad = || StorageError::Backend(format!("malformed {} record", q::CLUSTER_STATE));
                let key = d
                    .get_str("_id")
                    .ok()
                    .and_then(|i| i.strip_prefix(&prefix))
                    .ok_or_else(bad)?;
                Ok(StateEntry {
                    key: key.to_owned(),
                    value: d.get_str("value").map_err(|_| bad())?.to_owned(),
                    expires_ms: d.get_datetime("expires").map_err(|_| bad())?.timestamp_millis(),
                })
            })
            .collect()
    }
}
