//! What the runner writes for a request, streamed as NDJSON or collected into one object,
//! watched for stalls and shutdown, and shaped for the endpoint.

use super::*;

/// Sends `Cancel` for a request when dropped, unless its answer ended first (`disarm`): a
/// non-streamed request whose client went away, or one dropped while it waited, stops in the
/// runner instead of running on for nobody.
pub(crate) struct CancelOnDrop {
    runner: Option<std::sync::Arc<crate::runner::RunnerProcess>>,
    id: u64,
}

impl CancelOnDrop {
    pub(crate) fn new(runner: std::sync::Arc<crate::runner::RunnerProcess>, id: u64) -> Self {
        CancelOnDrop {
            runner: Some(runner),
            id,
        }
    }

    /// The runner has ended the request: nothing to cancel.
    pub(crate) fn disarm(&mut self) {
        self.runner = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(r) = self.runner.take() {
            let id = self.id;
            tokio::spawn(async move { r.cancel(id).await });
        }
    }
}

/// Watches one request for stalls and for server shutdown.
pub(super) struct Watch {
    pub(super) stall: std::time::Duration,
    pub(super) shutdown: tokio::sync::watch::Receiver<bool>,
    /// Set once the runner has begun the request; queued requests wait without a stall clock.
    pub(super) started: bool,
}

impl Watch {
    /// The next event, or an error message if the runner stalled or the server is stopping.
    pub(super) async fn next(
        &mut self,
        lease: &Lease,
        events: &mut mpsc::UnboundedReceiver<RunnerEvent>,
    ) -> Result<Option<RunnerEvent>, String> {
        if *self.shutdown.borrow() {
            return Err("the server is shutting down".into());
        }
        // With RPC workers the clock runs out early by a check of the workers (and half a
        // second for the runner to go), so that the error naming a worker that went away
        // still comes within the stall timeout.
        let workers = !lease.runner.spec.rpc_servers.is_empty();
        let limit = if workers {
            self.stall
                .saturating_sub(crate::runner::WORKER_CHECK + std::time::Duration::from_millis(500))
                .max(self.stall / 2)
        } else {
            self.stall
        };
        let stall = async {
            if self.started {
                tokio::time::sleep(limit).await
            } else {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            ev = events.recv() => {
                // Accepted means queued, not yet running: no stall clock for it.
                if !matches!(ev, Some(RunnerEvent::Accepted { .. })) {
                    self.started = true;
                }
                Ok(ev)
            }
            _ = stall => {
                // A runner that makes no progress is stuck: replace it rather than wait forever.
                // Kill first and wait until it is gone (its connections closed): a healthy
                // worker answers the check once its runner has let go of it.
                lease.runner.kill().await;
                let why = lease.runner.worker_faults().await;
                Err(format!(
                    "the model stopped making progress: no token for {}s{why}; its runner was stopped and will be restarted",
                    limit.as_secs_f32()
                ))
            }
            _ = self.shutdown.changed() => Err("the server is shutting down".into()),
        }
    }
}

/// The answer as NDJSON, one object per piece, produced as the runner writes.
pub(super) fn stream_response(answer: Answer, id: u64) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let Answer {
        job,
        lease,
        mut events,
        mut watch,
        mut tracker,
        mut cancel,
    } = answer;
    let mut parser = job.parser();
    // Log probabilities wait for the next object that carries text (the parsers may hold a
    // token's text back), or the final one.
    let mut logprobs: Vec<Logprob> = Vec::new();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = watch.next(&lease, &mut events) => next,
                // The client went away while nothing was being sent (its request queued, or
                // its prompt being evaluated): free the runner now, not at the first token.
                _ = tx.closed() => {
                    lease.runner.cancel(id).await;
                    return;
                }
            };
            let ev = match next {
                Ok(Some(ev)) => ev,
                Ok(None) => {
                    let message = "the runner ended the request without an answer";
                    let _ = tx
                        .send(Ok(ndjson(&serde_json::json!({ "error": message }))))
                        .await;
                    return;
                }
                Err(message) => {
                    lease.runner.cancel(id).await;
                    let _ = tx
                        .send(Ok(ndjson(&serde_json::json!({ "error": message }))))
                        .await;
                    return;
                }
            };
            let lines: Vec<serde_json::Value> = match ev {
                RunnerEvent::Token {
                    text, logprobs: lp, ..
                } => {
                    tracker.token();
                    logprobs.extend(lp);
                    let pieces: Vec<Out> = if parser.active() {
                        parser.push(&text).into_iter().map(Out::from).collect()
                    } else if text.is_empty() {
                        Vec::new()
                    } else {
                        vec![Out::from(text)]
                    };
                    pieces
                        .into_iter()
                        .map(|mut o| {
                            o.logprobs = std::mem::take(&mut logprobs);
                            answer_object(&job, o, None)
                        })
                        .collect()
                }
                RunnerEvent::Done(d) => {
                    cancel.disarm();
                    let mut lines: Vec<serde_json::Value> = parser
                        .finish()
                        .into_iter()
                        .map(|p| {
                            let mut o = Out::from(p);
                            o.logprobs = std::mem::take(&mut logprobs);
                            answer_object(&job, o, None)
                        })
                        .collect();
                    let ending = done_parts(&job, &lease, &d, &mut tracker);
                    let last = Out {
                        logprobs: std::mem::take(&mut logprobs),
                        ..Out::default()
                    };
                    lines.push(answer_object(&job, last, Some(ending)));
                    for line in lines {
                        if tx.send(Ok(ndjson(&line))).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                RunnerEvent::Error { message, .. } => {
                    cancel.disarm();
                    let _ = tx
                        .send(Ok(ndjson(&serde_json::json!({ "error": message }))))
                        .await;
                    return;
                }
                RunnerEvent::Started { .. } => {
                    tracker.started();
                    continue;
                }
                RunnerEvent::Progress { .. }
                | RunnerEvent::Accepted { .. }
                | RunnerEvent::Usage { .. }
                | RunnerEvent::Ready(_)
                | RunnerEvent::Loading { .. }
                | RunnerEvent::Quantizing { .. }
                | RunnerEvent::Converting { .. }
                | RunnerEvent::Pong { .. }
                | RunnerEvent::Embeddings { .. } => continue,
            };
            for line in lines {
                if tx.send(Ok(ndjson(&line))).await.is_err() {
                    // The client went away: free the runner at its next token.
                    lease.runner.cancel(id).await;
                    return;
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .expect("valid response")
}

/// The answer as one object (`"stream": false`).
pub(super) async fn collect_response(answer: Answer) -> Response {
    let Answer {
        job,
        lease,
        mut events,
        mut watch,
        mut tracker,
        mut cancel,
    } = answer;
    let mut parser = job.parser();
    let mut out = Out::default();
    loop {
        let ev = match watch.next(&lease, &mut events).await {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(message) => return ApiError::internal(message).into_response(),
        };
        match ev {
            RunnerEvent::Token {
                text: t, logprobs, ..
            } => {
                tracker.token();
                out.logprobs.extend(logprobs);
                if parser.active() {
                    for p in parser.push(&t) {
                        out.add(p);
                    }
                } else {
                    out.content.push_str(&t);
                }
            }
            RunnerEvent::Started { .. } => tracker.started(),
            RunnerEvent::Done(d) => {
                cancel.disarm();
                for p in parser.finish() {
                    out.add(p);
                }
                let ending = done_parts(&job, &lease, &d, &mut tracker);
                return json_ok(answer_object(&job, out, Some(ending)));
            }
            RunnerEvent::Error { message, .. } => {
                cancel.disarm();
                return ApiError::internal(message).into_response();
            }
            _ => {}
        }
    }
    ApiError::internal("runner closed the request without an answer").into_response()
}

pub(super) fn done_parts(job: &Job, lease: &Lease, d: &DoneInfo, tracker: &mut Tracker) -> Ending {
    tracker.finished(d);
    let metrics = Metrics {
        total_duration: job.started.elapsed().as_nanos() as u64,
        load_duration: lease.load_duration.unwrap_or_default().as_nanos() as u64,
        // The whole prompt, as Ollama counts it, the part reused from the cache included.
        prompt_eval_count: d.prompt_eval_count + d.prompt_cached,
        prompt_cached_count: d.prompt_cached,
        prompt_eval_duration: d.prompt_eval_duration_ns,
        eval_count: d.eval_count,
        eval_duration: d.eval_duration_ns,
        prompt_truncated_tokens: d.prompt_truncated,
        draft_tokens: d.draft_proposed,
        draft_accepted_tokens: d.draft_accepted,
    };
    Ending {
        reason: d.reason.as_str(),
        metrics,
        context: d.context.clone(),
        // Only the request's own (a single-call answer's `</tool_call>` is the server's).
        stop_sequence: d
            .stop_sequence
            .clone()
            .filter(|s| job.options.stop.as_ref().is_some_and(|own| own.contains(s))),
    }
}

/// What ends an answer: the fields only the final object of an answer carries.
pub(super) struct Ending {
    /// `done_reason`: `stop`, `length`, ...
    pub(super) reason: &'static str,
    /// Counts and timings.
    pub(super) metrics: Metrics,
    /// Generate's `context`, when asked for.
    pub(super) context: Option<Vec<i32>>,
    /// The stop sequence that ended the answer, if one did.
    pub(super) stop_sequence: Option<String>,
}

pub(super) fn final_object(
    job: &Job,
    reason: &'static str,
    metrics: Metrics,
    context: Option<Vec<i32>>,
    text: String,
) -> serde_json::Value {
    let ending = Ending {
        reason,
        metrics,
        context,
        stop_sequence: None,
    };
    answer_object(job, Out::from(text), Some(ending))
}

/// The parts of an answer object: text, thinking, tool calls.
#[derive(Debug, Default)]
pub(super) struct Out {
    content: String,
    thinking: Option<String>,
    tool_calls: Option<Vec<serde_json::Value>>,
    logprobs: Vec<Logprob>,
}

impl Out {
    fn add(&mut self, p: Piece) {
        match p {
            Piece::Content(t) => self.content.push_str(&t),
            Piece::Thinking(t) => self.thinking.get_or_insert_with(String::new).push_str(&t),
            Piece::ToolCalls(c) => self.tool_calls.get_or_insert_with(Vec::new).extend(c),
        }
    }
}

impl From<Piece> for Out {
    fn from(p: Piece) -> Self {
        let mut o = Out::default();
        o.add(p);
        o
    }
}

impl From<String> for Out {
    fn from(content: String) -> Self {
        Out {
            content,
            ..Default::default()
        }
    }
}

/// One object of an answer, shaped for the endpoint: a piece, or the final one with `ending`.
pub(super) fn answer_object(job: &Job, out: Out, ending: Option<Ending>) -> serde_json::Value {
    let model = job.requested.clone();
    let done = ending.is_some();
    let (reason, metrics, context, stop_sequence) = match ending {
        Some(e) => (
            Some(e.reason.to_string()),
            e.metrics,
            e.context,
            e.stop_sequence,
        ),
        None => (None, Metrics::default(), None, None),
    };
    let logprobs = (!out.logprobs.is_empty()).then_some(out.logprobs);
    let v = match job.kind {
        Kind::Generate => serde_json::to_value(GenerateResponse {
            model,
            created_at: Utc::now(),
            response: out.content,
            thinking: out.thinking,
            done,
            done_reason: reason,
            stop_sequence: stop_sequence.clone(),
            context,
            logprobs,
            metrics,
        }),
        Kind::Chat => serde_json::to_value(ChatResponse {
            model,
            created_at: Utc::now(),
            message: Message {
                role: "assistant".into(),
                content: out.content,
                thinking: out.thinking,
                tool_calls: out.tool_calls,
                ..Default::default()
            },
            done,
            done_reason: reason,
            stop_sequence,
            logprobs,
            metrics,
        }),
    };
    v.expect("responses serialize")
}

pub(super) fn json_ok(v: serde_json::Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

pub(super) fn ndjson(v: &impl serde::Serialize) -> Bytes {
    let mut line = serde_json::to_vec(v).expect("responses serialize");
    line.push(b'\n');
    Bytes::from(line)
}
