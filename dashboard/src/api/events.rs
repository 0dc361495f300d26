//! `GET /api/v1/events`: the live events ([`crate::app::LiveEvent`]) as
//! server-sent events, one stream per client, each with its own bounded buffer
//! (`server.sse_buffer`): a client that falls behind skips the oldest events,
//! counted in `/metrics`. Streams end when the server shuts down.

use std::{convert::Infallible, sync::Arc, time::Duration};

use futures_util::StreamExt;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use warp::{Reply, reply::Response};

use crate::{app::App, metrics::inc};

pub(super) fn events(app: &App) -> Response {
    let mut closing = app.closing.subscribe();
    inc(&app.metrics.sse_clients);
    // Owned by the stream: dropped (gauge decremented) when the client goes.
    let client = ClientGuard(app.metrics.clone());
    let stream = BroadcastStream::new(app.events.subscribe())
        .filter_map(move |r| {
            let out = match r {
                Ok(ev) => serde_json::to_string(&ev).ok().map(|json| {
                    Ok::<_, Infallible>(warp::sse::Event::default().event(ev.name()).data(json))
                }),
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    client
                        .0
                        .sse_lagged_events
                        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    None
                }
            };
            std::future::ready(out)
        })
        .take_until(async move {
            let _ = closing.wait_for(|c| *c).await;
        });
    warp::sse::reply(
        warp::sse::keep_alive()
            .interval(Duration::from_secs(15))
            .stream(stream),
    )
    .into_response()
}

/// Decrements the SSE client gauge when the stream is dropped.
struct ClientGuard(Arc<crate::metrics::Metrics>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0
            .sse_clients
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
