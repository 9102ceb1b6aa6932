//! What clients send, and its checks.

use confab_sdk::ApiError;
use confab_sdk::ids::is_id;
use serde::Deserialize;
use utoipa::ToSchema;

/// `subscribe_presence` / `unsubscribe_presence`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscribePresenceRequest {
    /// User ids (24 hex digits); duplicates count once.
    #[schema(example = json!(["665f1c2ab4d3e1f0a9c8b7a6"]))]
    pub user_ids: Vec<String>,
}

/// The ids, checked, lowercased and deduplicated in their first order.
pub(crate) fn user_ids(ids: Vec<String>, max: usize) -> Result<Vec<String>, ApiError> {
    if ids.len() > max {
        return Err(ApiError::validation(
            "userIds",
            format!("at most {max} ids per request"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        if !is_id(&id) {
            return Err(ApiError::validation(
                &format!("userIds[{i}]"),
                "expected a user id of 24 hex digits",
            ));
        }
        let id = id.to_ascii_lowercase();
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_normalized_and_deduplicated() {
        let a = "665F1C2AB4D3E1F0A9C8B7A6".to_owned();
        let b = "665f1c2ab4d3e1f0a9c8b7a7".to_owned();
        assert_eq!(
            user_ids(vec![a.clone(), b.clone(), a.to_lowercase()], 5).unwrap(),
            vec![a.to_lowercase(), b.clone()]
        );
        let e = user_ids(vec![b.clone(), "nope".into()], 5).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("userIds[1]"));
        let e = user_ids(vec![b.clone(); 6], 5).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("userIds"));
        assert!(user_ids(Vec::new(), 5).unwrap().is_empty());
    }
}
