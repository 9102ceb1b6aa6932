//! Users: unique names (case-insensitively), lookups, password hash updates.

use confab_sdk::ids::{is_id, new_id};
use confab_sdk::storage::{NewUser, StorageError};

use super::{Stores, expect_err, new_user, unique};

pub(crate) async fn unique_usernames(s: Stores) {
    let name = unique("Alice");
    let created = s
        .users
        .create_user(NewUser {
            username: name.clone(),
            display_name: Some("Alice".into()),
            password_hash: "h".into(),
        })
        .await
        .expect("create_user with a fresh name");
    assert!(
        is_id(&created.id),
        "user id must be 24 hex digits, got {:?}",
        created.id
    );
    assert_eq!(created.username, name, "the username keeps its case");
    assert_eq!(
        created.created_at, created.updated_at,
        "a new user has createdAt == updatedAt"
    );
    for taken in [name.clone(), name.to_uppercase(), name.to_lowercase()] {
        let again = s
            .users
            .create_user(NewUser {
                username: taken.clone(),
                display_name: None,
                password_hash: "h".into(),
            })
            .await;
        expect_err(
            again,
            StorageError::Conflict("username is taken".into()),
            &format!("create_user({taken}) after {name}"),
        );
    }
    let other = new_user(&s, "alicia").await;
    assert_ne!(other.id, created.id, "two users must get distinct ids");
}

pub(crate) async fn user_lookup(s: Stores) {
    let name = unique("Bob");
    let created = s
        .users
        .create_user(NewUser {
            username: name.clone(),
            display_name: Some("Bob B.".into()),
            password_hash: "h1".into(),
        })
        .await
        .expect("create_user");
    let by_id = s.users.user_by_id(&created.id).await.expect("user_by_id");
    assert_eq!(by_id.as_ref(), Some(&created), "user_by_id returns the stored user");
    for spelled in [name.clone(), name.to_uppercase(), name.to_lowercase()] {
        let found = s.users.user_by_username(&spelled).await.expect("user_by_username");
        assert_eq!(
            found.as_ref(),
            Some(&created),
            "user_by_username({spelled}) is case-insensitive"
        );
    }
    let plain = new_user(&s, "plain").await;
    let found = s
        .users
        .user_by_id(&plain.id)
        .await
        .expect("user_by_id")
        .expect("stored user");
    assert_eq!(found.display_name, None, "a missing displayName stays missing");
    assert_eq!(
        s.users.user_by_id(&new_id(0)).await.expect("user_by_id"),
        None,
        "unknown id"
    );
    assert_eq!(
        s.users
            .user_by_username(&unique("nobody"))
            .await
            .expect("user_by_username"),
        None,
        "unknown name"
    );
}

pub(crate) async fn password_hash(s: Stores) {
    let user = new_user(&s, "carol").await;
    s.users
        .set_password_hash(&user.id, "new-hash")
        .await
        .expect("set_password_hash");
    let stored = s
        .users
        .user_by_id(&user.id)
        .await
        .expect("user_by_id")
        .expect("user exists");
    assert_eq!(stored.password_hash, "new-hash", "the new hash is stored");
    assert!(stored.updated_at >= user.updated_at, "updatedAt never moves back");
    assert_eq!(stored.username, user.username, "other fields are kept");
    expect_err(
        s.users.set_password_hash(&new_id(0), "x").await,
        StorageError::NotFound("user not found".into()),
        "set_password_hash on an unknown user",
    );
}
