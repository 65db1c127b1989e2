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
        let mut lines = NdjsonObjects::new(native);
        loop {
            let next = tokio::select! {
                next = lines.next() => next,
                // The client went away before the next object (queued, or its prompt being
                // evaluated): dropping the native body cancels the request in the runner now.
                _ = tx.closed() => return,
            };
            let Some(v) = next else {
                break;
            };
            for e in events(Some(&v)) {
                if tx.send(Ok(e)).await.is_err() {
                    return;
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

/// The JSON objects of a native NDJSON answer, one by one (lines that do not parse skipped).
pub struct NdjsonObjects {
    stream: axum::body::BodyDataStream,
    buf: Vec<u8>,
}

impl NdjsonObjects {
    pub fn new(native: Body) -> Self {
        NdjsonObjects {
            stream: native.into_data_stream(),
            buf: Vec::new(),
        }
    }

    /// The next object; `None` when the answer has ended (or broken off).
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    return Some(v);
                }
            }
            match self.stream.next().await {
                Some(Ok(bytes)) => self.buf.extend_from_slice(&bytes),
                _ => return None,
            }
        }
    }
}
