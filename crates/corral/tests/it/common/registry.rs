//! Real registry parts for pull/push tests: Debian's `docker-registry` (an OCI distribution
//! registry) on a loopback port, a loopback TCP proxy that can throttle and cut connections,
//! and a hostile registry that sends what a broken or malicious one would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::wait_for;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `docker-registry serve` with its own storage, optionally behind htpasswd auth.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with_users(&[])
    }

    /// With users, every request needs basic auth (docker-registry's htpasswd backend).
    pub fn start_with_users(users: &[(&str, &str)]) -> Registry {
        let exe = ["/usr/bin/docker-registry", "/usr/sbin/docker-registry"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("docker-registry is missing: scripts/setup.sh installs it (apt-get install docker-registry)");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut auth = String::new();
        if !users.is_empty() {
            let lines: String = users
                .iter()
                .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
                .collect();
            std::fs::write(dir.path().join("htpasswd"), lines).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: corral-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: corral-test\n{auth}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(exe)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let r = Registry { child, port, dir };
        assert!(
            wait_for(Duration::from_secs(20), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "docker-registry did not start: {}",
            r.log()
        );
        r
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps a blob's bytes.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy on loopback in front of `upstream`: counts the bytes it passes back, can
/// slow them down, and can cut every connection (and refuse new ones) after some bytes.
pub struct Proxy {
    pub port: u16,
    /// Bytes sent from upstream to clients.
    pub sent: Arc<AtomicU64>,
    /// Cut everything once `sent` passes this.
    pub cut_after: Arc<AtomicU64>,
    /// While true, connections are closed at once.
    pub down: Arc<AtomicBool>,
    /// Bytes per second per connection (0: no limit).
    pub rate: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Proxy {
            port,
            sent: Default::default(),
            cut_after: Arc::new(AtomicU64::new(u64::MAX)),
            down: Default::default(),
            rate: Default::default(),
        };
        let (sent, cut, down, rate) = (
            p.sent.clone(),
            p.cut_after.clone(),
            p.down.clone(),
            p.rate.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if down.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(c2, s2, None));
                let (sent, cut, down, rate) =
                    (sent.clone(), cut.clone(), down.clone(), rate.clone());
                std::thread::spawn(move || pipe(server, client, Some((sent, cut, down, rate))));
            }
        });
        p
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

type Meter = (
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Arc<AtomicBool>,
    Arc<AtomicU64>,
);

fn pipe(mut from: TcpStream, mut to: TcpStream, meter: Option<Meter>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((sent, cut, down, rate)) = &meter {
            if down.load(Ordering::SeqCst) {
                break;
            }
            let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if total > cut.load(Ordering::SeqCst) {
                down.store(true, Ordering::SeqCst);
                break;
            }
            let r = rate.load(Ordering::SeqCst);
            if r > 0 {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / r as f64));
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// What the hostile registry answers for one repository.
#[derive(Clone)]
pub enum Hostile {
    /// This manifest text.
    Manifest(String),
    /// A manifest body that never ends.
    EndlessManifest,
    /// A valid manifest for `blob` whose blob answers carry `extra` bytes too many.
    LongBlob { blob: Vec<u8>, extra: usize },
    /// A valid manifest for `blob` whose blob answers stop halfway.
    ShortBlob { blob: Vec<u8> },
    /// A well-behaved repository that wants a bearer token, which `/token` gives for basic
    /// auth as alice:s3cret.
    Bearer { blob: Vec<u8> },
    /// Wants a bearer token from a token server whose answer never ends.
    EndlessToken,
    /// Every answer is a 500 whose body never ends.
    EndlessError,
    /// A valid manifest for `blob`; the first blob answer sends half and then nothing more.
    StallOnce {
        blob: Vec<u8>,
        stalled: Arc<AtomicBool>,
    },
}

/// A manifest naming one config (`{}`) and one model layer with these bytes.
/// A GGUF header with no tensors followed by `tail`: the least a pull takes as a model layer.
pub fn tiny_gguf(tail: &[u8]) -> Vec<u8> {
    let mut blob = b"GGUF".to_vec();
    blob.extend(3u32.to_le_bytes());
    blob.extend([0u8; 16]);
    blob.extend(tail);
    blob
}

pub fn manifest_for(blob: &[u8]) -> String {
    let config = b"{}";
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{}","size":{}}}]}}"#,
        super::sha256_hex(config),
        config.len(),
        super::sha256_hex(blob),
        blob.len()
    )
}

/// An HTTP/1.1 server that plays a broken or malicious registry: `/v2/<ns>/<repo>/...`
/// answers by `cases[repo]`.
pub fn hostile_registry(cases: Vec<(&'static str, Hostile)>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cases = Arc::new(cases);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let cases = cases.clone();
            std::thread::spawn(move || {
                let _ = answer(conn, &cases);
            });
        }
    });
    port
}

fn answer(conn: TcpStream, cases: &[(&str, Hostile)]) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range: Option<(u64, u64)> = None;
    let mut authorization = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = v.trim().to_string();
            }
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let (a, b) = v.trim().split_once('-').unwrap();
            range = Some((a.parse().unwrap(), b.parse().unwrap()));
        }
    }
    if path.starts_with("/endless-token?") {
        out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"token\":\"")?;
        let chunk = "t".repeat(1 << 16);
        loop {
            out.write_all(chunk.as_bytes())?;
        }
    }
    if path.starts_with("/token?") {
        // base64 of alice:s3cret
        if authorization == "Basic YWxpY2U6czNjcmV0"
            && path.contains("scope=repository%3Ah%2Fbearer%3Apull")
        {
            let body = r#"{"token":"t0ken"}"#;
            return write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        return out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let parts: Vec<&str> = path.trim_start_matches("/v2/").split('/').collect();
    let case = parts
        .get(1)
        .and_then(|repo| cases.iter().find(|(n, _)| n == repo))
        .map(|(_, c)| c.clone());
    let Some(case) = case else {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    match case {
        Hostile::EndlessToken => {
            let port = out.local_addr()?.port();
            return write!(
                out,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/endless-token\",service=\"hostile\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Hostile::EndlessError => {
            out.write_all(b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n")?;
            let chunk = "error ".repeat(1 << 14);
            loop {
                out.write_all(chunk.as_bytes())?;
            }
        }
        _ => {}
    }
    if matches!(case, Hostile::Bearer { .. }) && authorization != "Bearer t0ken" {
        let port = out.local_addr()?.port();
        return write!(
            out,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"hostile\",scope=\"repository:h/bearer:pull\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
    let is_manifest = parts.get(2) == Some(&"manifests");
    let manifest_text = match &case {
        Hostile::Manifest(m) => m.clone(),
        Hostile::LongBlob { blob, .. }
        | Hostile::ShortBlob { blob }
        | Hostile::Bearer { blob }
        | Hostile::StallOnce { blob, .. } => manifest_for(blob),
        Hostile::EndlessManifest | Hostile::EndlessToken | Hostile::EndlessError => String::new(),
    };
    if is_manifest {
        if let Hostile::EndlessManifest = case {
            out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.distribution.manifest.v2+json\r\nConnection: close\r\n\r\n{\"layers\":[")?;
            let chunk = "{\"a\":1},".repeat(4096);
            loop {
                out.write_all(chunk.as_bytes())?;
            }
        }
        return write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.distribution.manifest.v2+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            manifest_text.len(),
            manifest_text
        );
    }
    // A blob: the config, or the model layer.
    let digest = parts.get(3).copied().unwrap_or("");
    let (body, extra, short) = match &case {
        _ if digest == format!("sha256:{}", super::sha256_hex(b"{}")) => (b"{}".to_vec(), 0, false),
        Hostile::LongBlob { blob, extra } => (blob.clone(), *extra, false),
        Hostile::ShortBlob { blob } => (blob.clone(), 0, true),
        Hostile::Bearer { blob } => (blob.clone(), 0, false),
        Hostile::StallOnce { blob, stalled } => {
            if !stalled.swap(true, Ordering::SeqCst) {
                let half = &blob[..blob.len() / 2];
                write!(
                    out,
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-{}/{}\r\nContent-Length: {}\r\n\r\n",
                    blob.len() - 1,
                    blob.len(),
                    blob.len()
                )?;
                out.write_all(half)?;
                out.flush()?;
                std::thread::sleep(Duration::from_secs(120));
                return Ok(());
            }
            (blob.clone(), 0, false)
        }
        _ => {
            return out.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
        }
    };
    let (start, end) = range.unwrap_or((0, body.len() as u64 - 1));
    let mut slice = body[start as usize..=end as usize].to_vec();
    write!(
        out,
        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{end}/{}\r\n",
        body.len()
    )?;
    if short {
        // Promise the whole range, send half, hang up.
        write!(
            out,
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            slice.len()
        )?;
        slice.truncate(slice.len() / 2);
        out.write_all(&slice)?;
        return out.shutdown(Shutdown::Both);
    }
    slice.extend(std::iter::repeat_n(b'!', extra));
    // No length: the body runs until the connection closes, so the extra bytes arrive.
    write!(out, "Connection: close\r\n\r\n")?;
    out.write_all(&slice)?;
    out.shutdown(Shutdown::Both)
}
