//! A real browser (Debian's headless Chromium) against the real server: a page from another
//! loopback origin cannot read from Corral or change its store; a page from an allowed
//! origin gets answers.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The page's script: each attempt's outcome, posted back to the page's own origin.
fn page(corral: &str) -> String {
    format!(
        r#"<!doctype html><html><body><script>
const corral = "{corral}";
async function attempt(name, f) {{
  try {{ const r = await f(); return [name, "status " + r.status + " " + (await r.text())]; }}
  catch (e) {{ return [name, "blocked: " + e]; }}
}}
(async () => {{
  const results = await Promise.all([
    attempt("copy_simple", () => fetch(corral + "/api/copy", {{method: "POST",
      headers: {{"Content-Type": "text/plain"}},
      body: JSON.stringify({{source: "smol", destination: "stolen"}})}})),
    attempt("create_json", () => fetch(corral + "/api/create", {{method: "POST",
      headers: {{"Content-Type": "application/json"}},
      body: JSON.stringify({{model: "planted", from: "smol"}})}})),
    attempt("tags", () => fetch(corral + "/api/tags")),
  ]);
  await fetch("/report", {{method: "POST", body: JSON.stringify(Object.fromEntries(results))}});
}})();
</script></body></html>"#
    )
}

/// Serve the page on `ip` and return its URL and the channel its report arrives on.
fn page_server(ip: &str, corral: String) -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut out = conn;
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            if line.starts_with("POST /report") {
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let _ = out.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
            } else if line.starts_with("GET / ") {
                let body = page(&corral);
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            } else {
                let _ = out.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    });
    (url, rx)
}

/// Open the page in headless Chromium and wait for its report.
fn visit(url: &str, report: &mpsc::Receiver<Value>) -> Value {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is missing: scripts/test.sh installs Debian's chromium package");
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let got = report.recv_timeout(Duration::from_secs(90));
    let _ = child.kill();
    let _ = child.wait();
    got.expect("the page sent no report within 90 s")
}

#[test]
fn a_browser_page_from_another_origin_can_neither_read_nor_write() {
    let s = TestServer::start();
    s.create_smol();
    let before = s.store_files();
    let corral = format!("http://127.0.0.1:{}", s.port);

    // 127.0.0.2 is loopback too, but not an allowed origin.
    let (evil, report) = page_server("127.0.0.2", corral.clone());
    let r = visit(&evil, &report);
    for attempt in ["copy_simple", "create_json", "tags"] {
        let outcome = r[attempt].as_str().unwrap_or_default();
        assert!(outcome.starts_with("blocked: TypeError"), "{attempt}: {r}");
    }
    assert_eq!(s.store_files(), before, "the page changed the store: {r}");
    assert!(s.log().contains("refused: Origin is not allowed"));

    // http://127.0.0.1 on any port is one of Ollama's built-in origins.
    let (good, report) = page_server("127.0.0.1", corral);
    let r = visit(&good, &report);
    let tags = r["tags"].as_str().unwrap();
    assert!(tags.starts_with("status 200 "), "{r}");
    assert!(tags.contains("\"smol:latest\""), "{r}");
    assert!(
        r["copy_simple"].as_str().unwrap().starts_with("status 200"),
        "{r}"
    );
    let names = s.model_names();
    assert!(names.contains(&"stolen:latest".to_string()), "{names:?}");
}
