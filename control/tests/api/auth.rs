//! Signup, login, sessions, API keys (shown once, stored hashed, expired,
//! revoked).

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn signup_login_and_sessions() {
    let c = Control::on(&fresh_db().await).await;
    let http = c.client();
    let u = signup(&http, "Ann@Example.com").await;
    assert_eq!(u.token.split('.').count(), 3, "a JWT");

    let (st, me) = http.with(&u.token).get("/v1/me").await;
    assert_eq!(st, 200);
    assert_eq!(me["email"], "ann@example.com");
    assert_eq!(me["team_id"], u.team_id.as_str());
    assert_eq!(me["role"], "owner");

    let (st, v) = http
        .post(
            "/v1/auth/login",
            json!({ "email": "ann@example.com", "password": "hunter22hunter" }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["team_id"], u.team_id.as_str());
    let (st, _) = http.with(v["token"].as_str().unwrap()).get("/v1/me").await;
    assert_eq!(st, 200);

    assert_error(
        &http
            .post(
                "/v1/auth/login",
                json!({ "email": "ann@example.com", "password": "wrong-password" }),
            )
            .await,
        401,
        "unauthorized",
    );
    assert_error(
        &http
            .post(
                "/v1/auth/login",
                json!({ "email": "nobody@example.com", "password": "hunter22hunter" }),
            )
            .await,
        401,
        "unauthorized",
    );
    assert_error(&http.post("/v1/auth/signup", json!({ "email": "ANN@example.com", "password": "hunter22hunter", "name": "Again" })).await, 409, "conflict");

    // A tampered or foreign token is refused; so is no token.
    let mut bad = u.token.clone();
    bad.pop();
    assert_error(&http.with(&bad).get("/v1/me").await, 401, "unauthorized");
    assert_error(
        &http.with("not.a.jwt").get("/v1/capsules").await,
        401,
        "unauthorized",
    );
    assert_error(&http.get("/v1/capsules").await, 401, "unauthorized");

    // A session renews itself (same user and team); an API key cannot.
    let (st, r) = http
        .with(&u.token)
        .post("/v1/auth/refresh", json!({}))
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["user_id"].as_str(), r["team_id"].as_str()),
        (Some(u.user_id.as_str()), Some(u.team_id.as_str()))
    );
    let (st, _) = http.with(r["token"].as_str().unwrap()).get("/v1/me").await;
    assert_eq!(st, 200);
    let key = api_key(&http, &u).await;
    assert_error(
        &http.with(&key).post("/v1/auth/refresh", json!({})).await,
        403,
        "forbidden",
    );
    assert_error(
        &http.post("/v1/auth/refresh", json!({})).await,
        401,
        "unauthorized",
    );
    assert_error(
        &http.with(&bad).post("/v1/auth/refresh", json!({})).await,
        401,
        "unauthorized",
    );

    // Passwords are stored as argon2id hashes.
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(&u.user_id)
        .fetch_one(&c.app.db)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains("hunter22hunter"));
    c.stop().await;
}

#[tokio::test]
async fn api_keys_are_shown_once_and_stored_hashed() {
    let c = Control::on(&fresh_db().await).await;
    let http = c.client();
    let u = signup(&http, "keys@example.com").await;
    let key = api_key(&http, &u).await;
    assert!(key.starts_with("wrn_"));

    // Works as X-API-Key and as Bearer.
    assert_eq!(http.with(&key).get("/v1/capsules").await.0, 200);
    let (st, _) = http
        .req(reqwest::Method::GET, "/v1/capsules")
        .bearer_auth(&key)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(st, 200);

    // Listing never shows it again; the database holds only a digest.
    let (st, list) = http.with(&u.token).get("/v1/api-keys").await;
    assert_eq!(st, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("key").is_none(), "{list}");
    assert!(
        key.starts_with(
            list[0]["key_prefix"]
                .as_str()
                .unwrap()
                .trim_end_matches("...")
        )
    );
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT key_prefix, key_hash FROM api_keys")
        .fetch_all(&c.app.db)
        .await
        .unwrap();
    assert_eq!(rows[0].1, warren_control::ids::token_hash(&key));
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, '') FROM api_keys t")
        .fetch_one(&c.app.db)
        .await
        .unwrap();
    assert!(!dump.contains(&key), "plaintext key stored");

    // A key cannot make keys or manage the team.
    assert_error(
        &http.with(&key).post("/v1/api-keys", json!({})).await,
        403,
        "forbidden",
    );
    assert_error(&http.with(&key).get("/v1/teams").await, 403, "forbidden");
    c.stop().await;
}

#[tokio::test]
async fn expired_and_revoked_keys_are_refused() {
    let c = Control::on(&fresh_db().await).await;
    let http = c.client();
    let u = signup(&http, "exp@example.com").await;
    let key = api_key(&http, &u).await;
    let (_, list) = http.with(&u.token).get("/v1/api-keys").await;
    let id = list[0]["id"].as_str().unwrap().to_string();

    // Expired.
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(&id)
        .execute(&c.app.db)
        .await
        .unwrap();
    let r = http.with(&key).get("/v1/capsules").await;
    assert_error(&r, 401, "unauthorized");
    assert!(
        r.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    // Revoked.
    let key2 = api_key(&http, &u).await;
    let (_, list) = http.with(&u.token).get("/v1/api-keys").await;
    let id2 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] != id.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(http.with(&key2).get("/v1/capsules").await.0, 200);
    assert_eq!(
        http.with(&u.token)
            .delete(&format!("/v1/api-keys/{id2}"))
            .await
            .0,
        204
    );
    let r = http.with(&key2).get("/v1/capsules").await;
    assert_error(&r, 401, "unauthorized");
    assert!(
        r.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    assert_error(
        &http
            .with(&u.token)
            .delete(&format!("/v1/api-keys/{id2}"))
            .await,
        404,
        "not_found",
    );

    // Keys can be made with an expiry; bad expiries are refused.
    let (st, v) = http
        .with(&u.token)
        .post(
            "/v1/api-keys",
            json!({ "name": "short", "expires_in_days": 1 }),
        )
        .await;
    assert_eq!(st, 201);
    assert!(v["expires_at"].is_string());
    assert_error(
        &http
            .with(&u.token)
            .post("/v1/api-keys", json!({ "expires_in_days": 0 }))
            .await,
        400,
        "invalid_request",
    );
    assert_error(
        &http
            .with(&u.token)
            .post(
                "/v1/api-keys",
                json!({ "expires_at": "2001-01-01T00:00:00Z" }),
            )
            .await,
        400,
        "invalid_request",
    );
    c.stop().await;
}

#[tokio::test]
async fn teams_members_and_roles() {
    let c = Control::on(&fresh_db().await).await;
    let http = c.client();
    let owner = signup(&http, "owner@example.com").await;
    let bob = signup(&http, "bob@example.com").await;
    let o = http.with(&owner.token);
    let t = format!("/v1/teams/{}", owner.team_id);

    let (st, m) = o
        .post(
            &format!("{t}/members"),
            json!({ "email": "bob@example.com" }),
        )
        .await;
    assert_eq!(st, 201, "{m}");
    assert_eq!(m["role"], "member");
    assert_error(
        &o.post(
            &format!("{t}/members"),
            json!({ "email": "bob@example.com" }),
        )
        .await,
        409,
        "conflict",
    );
    assert_error(
        &o.post(
            &format!("{t}/members"),
            json!({ "email": "ghost@example.com" }),
        )
        .await,
        404,
        "not_found",
    );

    // Bob switches to the team; as a member he cannot manage it.
    let (st, s) = http
        .with(&bob.token)
        .post("/v1/auth/switch-team", json!({ "team_id": owner.team_id }))
        .await;
    assert_eq!(st, 200, "{s}");
    let b = http.with(s["token"].as_str().unwrap());
    let (_, me) = b.get("/v1/me").await;
    assert_eq!(
        (
            me["team_id"].as_str().unwrap(),
            me["role"].as_str().unwrap()
        ),
        (owner.team_id.as_str(), "member")
    );
    assert_error(
        &b.call(reqwest::Method::PATCH, &t, Some(json!({ "name": "Mine" })))
            .await,
        403,
        "forbidden",
    );
    assert_error(
        &b.delete(&format!("{t}/members/{}", owner.user_id)).await,
        403,
        "forbidden",
    );

    // Promoted to admin he can rename, but not touch the owner or delete.
    let r = o
        .call(
            reqwest::Method::PATCH,
            &format!("{t}/members/{}", bob.user_id),
            Some(json!({ "role": "admin" })),
        )
        .await;
    assert_eq!(r.0, 204, "{r:?}");
    assert_eq!(
        b.call(
            reqwest::Method::PATCH,
            &t,
            Some(json!({ "name": "Renamed team" }))
        )
        .await
        .0,
        204
    );
    assert_error(
        &b.call(
            reqwest::Method::PATCH,
            &format!("{t}/members/{}", owner.user_id),
            Some(json!({ "role": "member" })),
        )
        .await,
        403,
        "forbidden",
    );
    assert_error(&b.delete(&t).await, 403, "forbidden");
    assert_error(
        &o.call(
            reqwest::Method::PATCH,
            &format!("{t}/members/{}", bob.user_id),
            Some(json!({ "role": "owner" })),
        )
        .await,
        400,
        "invalid_request",
    );

    // The owner cannot leave; Bob can, and then his session is void.
    assert_error(
        &o.post(&format!("{t}/leave"), json!({})).await,
        403,
        "forbidden",
    );
    assert_eq!(b.post(&format!("{t}/leave"), json!({})).await.0, 204);
    assert_error(&b.get("/v1/me").await, 401, "unauthorized");

    // Switching to a team one is not in is refused.
    assert_error(
        &http
            .with(&bob.token)
            .post("/v1/auth/switch-team", json!({ "team_id": owner.team_id }))
            .await,
        404,
        "not_found",
    );
    c.stop().await;
}
