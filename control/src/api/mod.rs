//! The REST API: one module per route family, the router, and the OpenAPI
//! document generated from the handlers' annotations (`/openapi.json`,
//! rendered at `/docs` by the embedded web console, `web/`). Handlers parse a request, call one function of
//! the domain layer ([`crate::domain`]) and render its result; errors
//! become HTTP only here ([`error`]). Extensions' routes are merged in
//! before the layers, so they share authentication, the audit trail and
//! the state ([`Extra`]).

pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod audit_logs;
pub mod auth;
pub mod builds;
pub mod capsule_proxy;
pub mod capsules;
pub mod error;
pub mod events;
pub mod exec;
pub mod extract;
pub mod files;
pub mod hosts;
pub mod layers;
pub mod pty;
pub mod snapshots;
pub mod teams;
pub mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Warren API", description = "Wrenn-compatible capsule API of the Warren control plane."),
    modifiers(&Security),
    security(("apiKeyAuth" = []), ("bearerAuth" = []))
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "apiKeyAuth",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        c.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every documented route.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::signup))
        .routes(routes!(auth::login))
        .routes(routes!(auth::switch_team))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::me, auth::update_me))
        .routes(routes!(api_keys::create, api_keys::list))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(teams::list, teams::create))
        .routes(routes!(teams::get, teams::rename, teams::delete))
        .routes(routes!(teams::list_members, teams::add_member))
        .routes(routes!(teams::update_member, teams::remove_member))
        .routes(routes!(teams::leave))
        .routes(routes!(capsules::create, capsules::list))
        .routes(routes!(capsules::stats))
        .routes(routes!(capsules::usage))
        .routes(routes!(capsules::get, capsules::destroy))
        .routes(routes!(capsules::pause))
        .routes(routes!(capsules::resume))
        .routes(routes!(capsules::ping))
        .routes(routes!(capsules::metrics))
        .routes(routes!(exec::exec))
        .routes(routes!(exec::exec_stream))
        .routes(routes!(exec::list_processes))
        .routes(routes!(exec::kill_process))
        .routes(routes!(exec::process_stream))
        .routes(routes!(pty::pty))
        .routes(routes!(files::write))
        .routes(routes!(files::stream_write))
        .routes(routes!(files::read))
        .routes(routes!(files::stream_read))
        .routes(routes!(files::list))
        .routes(routes!(files::mkdir))
        .routes(routes!(files::remove))
        .routes(routes!(files::rename))
        .routes(routes!(snapshots::create, snapshots::list))
        .routes(routes!(snapshots::delete))
        .routes(routes!(events::stream))
        .routes(routes!(hosts::create, hosts::list))
        .routes(routes!(hosts::register))
        .routes(routes!(hosts::get, hosts::delete))
        .routes(routes!(hosts::regenerate_token))
        .routes(routes!(hosts::heartbeat))
        .routes(routes!(hosts::list_tags, hosts::add_tag))
        .routes(routes!(hosts::remove_tag))
        .routes(routes!(audit_logs::list))
        .routes(routes!(admin::teams))
        .routes(routes!(admin::users))
        .routes(routes!(admin::update_user))
        .routes(routes!(admin::capsules))
        .routes(routes!(admin::destroy_capsule))
        .routes(routes!(admin::templates, admin::put_template))
        .routes(routes!(admin::delete_template))
        .routes(routes!(builds::create, builds::list))
        .routes(routes!(builds::get))
        .routes(routes!(builds::cancel))
        .routes(routes!(builds::logs))
}

/// Routes an extension adds: documented ones (in `/openapi.json`) and
/// plain ones. Both sit behind the same authentication (handlers take
/// [`crate::auth::Principal`]) and audit trail as the built-in API.
#[derive(Default)]
pub struct Extra {
    pub documented: Vec<OpenApiRouter<AppState>>,
    pub plain: Vec<Router<AppState>>,
}

impl std::fmt::Debug for Extra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extra")
            .field("documented", &self.documented.len())
            .field("plain", &self.plain.len())
            .finish()
    }
}

/// The OpenAPI document of the built-in API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

async fn health() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

/// The whole HTTP application, with the extensions' routes.
pub fn router(app: AppState, extra: Extra) -> Router {
    let documented = extra
        .documented
        .into_iter()
        .fold(api_routes(), OpenApiRouter::merge);
    let (api, doc) = documented.split_for_parts();
    let api = extra.plain.into_iter().fold(api, Router::merge);
    let doc_json = serde_json::to_string(&doc).unwrap_or_default();
    api.route_layer(axum::middleware::from_fn_with_state(
        app.clone(),
        audit::middleware,
    ))
    .route(
        "/openapi.json",
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], doc_json) }),
    )
    .route("/health", get(health))
    // The web console (and /docs) for every other path.
    .fallback(warren_console::serve)
    // Bodies are limited where they are read (JSON: max_body_bytes;
    // uploads: max_upload_bytes or unlimited when streamed).
    .layer(DefaultBodyLimit::disable())
    .layer(axum::middleware::from_fn_with_state(
        app.clone(),
        layers::authenticate,
    ))
    .layer(tower_http::trace::TraceLayer::new_for_http())
    // Capsule ports (`{port}-{id}.` hosts) never reach the API or its auth.
    .layer(axum::middleware::from_fn_with_state(
        app.clone(),
        capsule_proxy::middleware,
    ))
    .with_state(app)
}
