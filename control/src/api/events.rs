//! `GET /v1/events/stream`: Server-Sent Events of the team's lifecycle
//! events (capsules, snapshots, and hosts the team may see), from Postgres
//! LISTEN/NOTIFY. A `: keepalive` comment every 30 seconds.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiResult;
use crate::app::AppState;
use crate::auth::Principal;

#[utoipa::path(get, path = "/v1/events/stream", tag = "events",
    responses((status = 200, description = "text/event-stream of SSEEvent frames")))]
pub async fn stream(
    State(app): State<AppState>,
    p: Principal,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let rx = app.events.subscribe();
    let hello = Event::default().event("connected").data(
        serde_json::json!({
            "event": "connected",
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
        .to_string(),
    );
    let team = p.team_id.clone();
    let admin = p.is_admin;
    let events = futures::stream::unfold(rx, move |mut rx| {
        let team = team.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(n) => {
                        let visible = match &n.team_id {
                            Some(t) => *t == team,
                            None => admin,
                        };
                        if visible {
                            let ev = Event::default()
                                .event(n.event.clone())
                                .data(n.data.to_string());
                            return Some((Ok(ev), rx));
                        }
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    let stream = futures::StreamExt::chain(futures::stream::once(async move { Ok(hello) }), events);
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(30))
            .text("keepalive"),
    ))
}
