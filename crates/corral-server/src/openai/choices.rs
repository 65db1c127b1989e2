//! OpenAI's `n`: several choices for one request. Each choice is a native request of its own,
//! all sent at once (they share the model's slots and queue like any others); a streamed
//! answer interleaves their objects, each marked with its choice, and the usage comes once, when
//! the last choice has ended.

use std::convert::Infallible;
use std::future::Future;

use tokio_stream::wrappers::ReceiverStream;

use super::*;

/// Most choices one request may ask for (OpenAI's limit).
const MAX_CHOICES: i64 = 128;

/// The number of choices a request asks for: `n`, 1 when absent.
pub(super) fn count(n: Option<i64>) -> Result<usize, Invalid> {
    match n {
        None => Ok(1),
        Some(n) if (1..=MAX_CHOICES).contains(&n) => Ok(n as usize),
        Some(n) => Err(invalid(format!(
            "n must be between 1 and {MAX_CHOICES}, got {n}"
        ))),
    }
}

/// The options of choice `i`: with a seed, choice `i` samples with `seed + i`, so that the
/// choices differ (as OpenAI's do) and the whole answer is still reproducible.
pub(super) fn options_for(options: &BTreeMap<String, Value>, i: usize) -> BTreeMap<String, Value> {
    let mut o = options.clone();
    if let Some(seed) = o.get("seed").and_then(Value::as_i64) {
        o.insert("seed".into(), json!(seed.wrapping_add(i as i64)));
    }
    o
}

/// A native request that carries options (where each choice's seed goes).
pub(super) trait Native: Clone {
    fn options_mut(&mut self) -> &mut Option<BTreeMap<String, Value>>;
}

impl Native for corral_api::ChatRequest {
    fn options_mut(&mut self) -> &mut Option<BTreeMap<String, Value>> {
        &mut self.options
    }
}

impl Native for corral_api::GenerateRequest {
    fn options_mut(&mut self) -> &mut Option<BTreeMap<String, Value>> {
        &mut self.options
    }
}

/// Sends the native request of every choice at once (`send`), each with its seed. The first
/// that fails answers for all; the others are dropped, which cancels them in the runner.
pub(super) async fn run<R: Native, Fut: Future<Output = Response>>(
    n: usize,
    native: &R,
    send: impl Fn(R) -> Fut,
) -> Result<Vec<Response>, Response> {
    let options = native.clone().options_mut().take().unwrap_or_default();
    // The first choice refused ends the others at once (dropping a request cancels it), so
    // that no answer is written for nobody.
    let answers = futures::future::try_join_all((0..n).map(|i| {
        let mut one = native.clone();
        *one.options_mut() = Some(options_for(&options, i));
        let answer = send(one);
        async move {
            let a = answer.await;
            if a.status().is_success() {
                Ok(a)
            } else {
                Err(a)
            }
        }
    }))
    .await;
    match answers {
        Ok(out) => Ok(out),
        Err(refused) => {
            let (status, mut message) = crate::error::native_error(refused).await;
            if status == StatusCode::SERVICE_UNAVAILABLE && n > 1 {
                // Each choice is a request of its own: say so, since "try again" alone may
                // never work for a model with fewer slots and queue places than choices.
                message.push_str(&format!(
                    " (each of the {n} choices takes a place: ask for fewer, or raise \
                     CORRAL_NUM_PARALLEL or CORRAL_MAX_QUEUE)"
                ));
            }
            Err(error(status, message))
        }
    }
}

/// Each choice's native `"stream": false` answer.
pub(super) async fn whole(answers: Vec<Response>) -> Vec<Value> {
    let mut out = Vec::with_capacity(answers.len());
    for a in answers {
        out.push(whole_answer(a).await);
    }
    out
}

/// The native answers of several choices as one NDJSON body, each object marked with its
/// `choice`, in the order they come. A client that goes away drops every choice's answer.
pub(super) fn merge(answers: Vec<Response>) -> Body {
    if answers.len() == 1 {
        return answers.into_iter().next().expect("one").into_body();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    for (i, answer) in answers.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = crate::sse::NdjsonObjects::new(answer.into_body());
            loop {
                let next = tokio::select! {
                    next = lines.next() => next,
                    _ = tx.closed() => return,
                };
                let Some(mut v) = next else {
                    return;
                };
                v["choice"] = json!(i);
                let mut out = v.to_string();
                out.push('\n');
                if tx.send(Ok(Bytes::from(out))).await.is_err() {
                    return;
                }
            }
        });
    }
    Body::from_stream(ReceiverStream::new(rx))
}

/// The choice a (merged) native object belongs to.
pub(super) fn index(v: &Value) -> u64 {
    v["choice"].as_u64().unwrap_or(0)
}

/// The usage of several choices: the prompt once (every choice had the same one), the
/// completions summed.
pub(super) fn usage_of(answers: &[Value]) -> Value {
    let mut u = answers.first().map(usage).unwrap_or_else(|| json!({}));
    let completion: u64 = answers
        .iter()
        .map(|v| v["eval_count"].as_u64().unwrap_or(0))
        .sum();
    let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
    u["completion_tokens"] = json!(completion);
    u["total_tokens"] = json!(prompt + completion);
    u
}

/// Counts the choices of a stream as they end; gives the usage once the last has.
pub(super) struct Tally {
    n: usize,
    ended: Vec<Value>,
}

impl Tally {
    pub(super) fn new(n: usize) -> Self {
        Tally {
            n,
            ended: Vec::new(),
        }
    }

    /// For a native object: the usage of the whole answer when it ends the last choice.
    pub(super) fn add(&mut self, v: &Value) -> Option<Value> {
        if !v["done"].as_bool().unwrap_or(false) {
            return None;
        }
        self.ended.push(v.clone());
        (self.ended.len() == self.n).then(|| usage_of(&self.ended))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_seeds_and_usage() {
        assert_eq!(count(None).unwrap(), 1);
        assert_eq!(count(Some(128)).unwrap(), 128);
        assert!(count(Some(0)).is_err() && count(Some(129)).is_err());
        let o: BTreeMap<String, Value> = [("seed".to_string(), json!(7))].into();
        assert_eq!(options_for(&o, 2)["seed"], 9);
        assert!(!options_for(&BTreeMap::new(), 2).contains_key("seed"));
        let a = json!({"done": true, "prompt_eval_count": 15, "prompt_cached_count": 5, "eval_count": 3});
        let b = json!({"done": true, "prompt_eval_count": 15, "prompt_cached_count": 15, "eval_count": 4});
        let u = usage_of(&[a.clone(), b.clone()]);
        assert_eq!(
            (
                &u["prompt_tokens"],
                &u["completion_tokens"],
                &u["total_tokens"]
            ),
            (&json!(15), &json!(7), &json!(22))
        );
        let mut t = Tally::new(2);
        assert_eq!(t.add(&json!({"done": false})), None);
        assert_eq!(t.add(&a), None);
        assert_eq!(t.add(&b), Some(u));
    }
}
