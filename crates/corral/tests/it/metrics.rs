//! `GET /metrics`: scraped by a real Prometheus server (Debian's `prometheus`, started here on
//! loopback) while eight clients stream, and read directly for the runner exit reasons, the
//! API key and `CORRAL_METRICS=0`.

use crate::common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A Prometheus server scraping one Corral server every second.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    http: reqwest::blocking::Client,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        let exe = "/usr/bin/prometheus";
        assert!(
            std::path::Path::new(exe).exists(),
            "prometheus is missing: scripts/test.sh installs it (apt-get install prometheus)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: corral\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(exe)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
            http: reqwest::blocking::Client::new(),
        };
        let ready = wait_for(Duration::from_secs(60), || {
            p.http
                .get(format!("http://127.0.0.1:{port}/-/ready"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        assert!(ready, "prometheus did not become ready");
        p
    }

    /// The value of an instant query with one result (None: no result).
    fn query(&self, q: &str) -> Option<f64> {
        let v: Value = self
            .http
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", q)])
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(v["status"], "success", "{q}: {v}");
        let result = v["data"]["result"].as_array()?.first()?.clone();
        result["value"][1].as_str()?.parse().ok()
    }

    /// Wait until a query gives `want`; the last value seen otherwise.
    fn wait_for_value(&self, q: &str, want: f64) -> Option<f64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.query(q);
            if got == Some(want) || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sample of `name` whose labels include every one of `labels`, from the text format.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let (series, _) = l.rsplit_once(' ').unwrap_or((l, ""));
            (series == name || series.starts_with(&format!("{name}{{")))
                && labels.iter().all(|x| series.contains(x))
        })
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn prometheus_sees_the_load_move() {
    let s = TestServer::start_with(&[("CORRAL_NUM_PARALLEL", "2")]);
    s.create_smol();
    let prom = Prometheus::start(s.port);
    // Prometheus has scraped an idle server at least once.
    assert_eq!(prom.wait_for_value("corral_models_loaded", 0.0), Some(0.0));

    // Eight clients at once on two slots: six wait while two are decoded.
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let lines = s.stream(
                        "/api/generate",
                        json!({"model": "smol", "prompt": format!("Count from {i} to 100:"),
                               "options": {"num_predict": 64, "temperature": 0}}),
                    );
                    lines.last().unwrap().1.clone()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let sum = |field: &str| -> f64 {
        answers
            .iter()
            .map(|a| {
                assert_eq!(a["done"], true, "{a}");
                a[field].as_u64().unwrap_or(0) as f64
            })
            .sum()
    };
    // The answers count the whole prompt; the metrics count what was evaluated and, apart,
    // what came from the cache.
    let (eval, prompt, cached) = (
        sum("eval_count"),
        sum("prompt_eval_count") - sum("prompt_cached_count"),
        sum("prompt_cached_count"),
    );
    assert!(eval > 0.0);
    let m = r#"{model="smol:latest"}"#;
    assert_eq!(
        prom.wait_for_value(&format!("corral_generation_tokens_total{m}"), eval),
        Some(eval),
        "tokens counted equal the answers' eval_counts"
    );
    assert_eq!(
        prom.wait_for_value(&format!("corral_prompt_tokens_total{m}"), prompt),
        Some(prompt)
    );
    assert_eq!(
        prom.wait_for_value(&format!("corral_prompt_tokens_cached_total{m}"), cached),
        Some(cached)
    );
    let requests =
        r#"corral_request_duration_seconds_count{model="smol:latest",endpoint="/api/generate"}"#;
    assert_eq!(prom.wait_for_value(requests, 8.0), Some(8.0));
    assert_eq!(
        prom.wait_for_value(&format!("corral_time_to_first_token_seconds_count{m}"), 8.0),
        Some(8.0)
    );
    // All eight waited while the model loaded, then six while two slots were busy; never
    // more ran than there are slots.
    let most = |q: &str| prom.query(&format!("max_over_time({q}{m}[10m])"));
    let waiting = most("corral_requests_waiting").unwrap();
    assert!(waiting > 0.0, "no scrape saw a waiting request");
    assert!(waiting <= 8.0, "{waiting}");
    assert_eq!(most("corral_requests_running"), Some(2.0));
    let kv = most("corral_kv_cache_usage_ratio").unwrap();
    assert!(kv > 0.0 && kv <= 1.0, "kv usage {kv}");
    // Idle again: nothing running or waiting, no cells held, one model loaded once.
    assert_eq!(
        prom.wait_for_value(&format!("corral_requests_running{m}"), 0.0),
        Some(0.0)
    );
    assert_eq!(
        prom.wait_for_value(&format!("corral_requests_waiting{m}"), 0.0),
        Some(0.0)
    );
    assert_eq!(
        prom.wait_for_value(&format!("corral_kv_cache_usage_ratio{m}"), 0.0),
        Some(0.0)
    );
    assert_eq!(prom.query("corral_models_loaded"), Some(1.0));
    assert_eq!(
        prom.query(&format!("corral_model_load_seconds_count{m}")),
        Some(1.0)
    );
    assert_eq!(prom.query(&format!("corral_gpu_layers{m}")), Some(0.0));

    // Unloading counts as an exit of its own, and the model leaves the gauges.
    assert!(s.corral(&["stop", "smol"]).status.success());
    assert_eq!(
        prom.wait_for_value(
            r#"corral_runner_exits_total{model="smol:latest",reason="unloaded"}"#,
            1.0
        ),
        Some(1.0)
    );
    assert_eq!(prom.wait_for_value("corral_models_loaded", 0.0), Some(0.0));
}

#[test]
fn runner_exits_are_counted_by_reason() {
    // The first runner aborts at its third token (a crash); the request that follows gets a
    // fresh runner, which crashes the same way.
    let s = TestServer::start_with(&[("CORRAL_RUNNER_FAULT", "crash@token:3")]);
    s.create_smol();
    let (status, _) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 8}}),
    );
    assert_eq!(status, 500);
    let text = || s.get_text("/metrics");
    let crashed = wait_for(Duration::from_secs(10), || {
        sample(
            &text(),
            "corral_runner_exits_total",
            &[r#"reason="crash""#, r#"model="smol:latest""#],
        ) == Some(1.0)
    });
    assert!(crashed, "{}", text());

    // A model that cannot load.
    let s = TestServer::start_with(&[("CORRAL_RUNNER_FAULT", "fail@load")]);
    s.create_smol();
    let (status, _) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "Hi", "stream": false}),
    );
    assert_eq!(status, 500);
    let t = s.get_text("/metrics");
    assert_eq!(
        sample(
            &t,
            "corral_runner_exits_total",
            &[r#"reason="load_failed""#]
        ),
        Some(1.0),
        "{t}"
    );

    // keep_alive running out is an idle exit.
    let s = TestServer::start();
    s.create_smol();
    let (status, _) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "Hi", "stream": false, "keep_alive": "1s", "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200);
    let idle = wait_for(Duration::from_secs(10), || {
        sample(
            &s.get_text("/metrics"),
            "corral_runner_exits_total",
            &[r#"reason="idle""#],
        ) == Some(1.0)
    });
    assert!(idle);
}

#[test]
fn metrics_follow_the_api_key_and_can_be_turned_off() {
    let s = TestServer::start_with(&[("CORRAL_API_KEY", "sekrit")]);
    let resp = s.http.get(s.url("/metrics")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth("sekrit")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert_eq!(
        sample(&resp.text().unwrap(), "corral_models_loaded", &[]),
        Some(0.0)
    );
    // A family appears once it has a sample: after one answer, all but the exits and the
    // truncations (other tests make those).
    let key = [("CORRAL_API_KEY", "sekrit")];
    let modelfile = s.dir.path().join("Modelfile");
    // A length limit: a sampled answer may otherwise run for a whole context.
    let text = format!(
        "FROM {}\nPARAMETER num_predict 32\n",
        model_file(SMOL).display()
    );
    std::fs::write(&modelfile, text).unwrap();
    let out = s.corral_env(&["create", "smol", "-f", modelfile.to_str().unwrap()], &key);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.corral_env(&["run", "smol", "Hi", "--keepalive", "1m"], &key);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth("sekrit")
        .send()
        .unwrap()
        .text()
        .unwrap();
    for family in [
        "corral_requests_running gauge",
        "corral_requests_waiting gauge",
        "corral_kv_cache_usage_ratio gauge",
        "corral_request_duration_seconds histogram",
        "corral_time_to_first_token_seconds histogram",
        "corral_prompt_tokens counter",
        "corral_prompt_tokens_cached counter",
        "corral_generation_tokens counter",
        "corral_models_loaded gauge",
        "corral_model_load_seconds histogram",
        "corral_gpu_layers gauge",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}")),
            "{family} missing:\n{text}"
        );
    }
    assert_eq!(sample(&text, "corral_models_loaded", &[]), Some(1.0));

    let s = TestServer::start_with(&[("CORRAL_METRICS", "0")]);
    let resp = s.http.get(s.url("/metrics")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(s.get("/api/version")["version"].is_string());
}
