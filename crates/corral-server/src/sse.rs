//! Native NDJSON answers re-sent as server-sent events, for the OpenAI and Anthropic routes.

use std::convert::Infallible;

use axum::body::Body;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;

/// Turn a native answer's objects into SSE events: `events` gets each object in turn, then
/// `None` once the answer has ended. Each event waits for room in the channel (a slow client
/// slows the answer; nothing is dropped); if the client goes away, the native body is
/// dropped, which cancels the request in the runner.
pub fn from_ndjson(
    native: Body,
    mut events: impl FnMut(Option<&Value>) -> Vec<Event> + Send + 'static,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        let mut stream = native.into_data_stream();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                // The client went away before the next object (queued, or its prompt being
                // evaluated): dropping the native body cancels the request in the runner now.
                _ = tx.closed() => return,
            };
            let Some(Ok(bytes)) = next else {
                break;
            };
            buf.extend_from_slice(&bytes);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                for e in events(Some(&v)) {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
            }
        }
        for e in events(None) {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).into_response()
}
