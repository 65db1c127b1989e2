//! Pull and push against a real registry (Debian's docker-registry on loopback): the round
//! trip, resuming an interrupted pull, authentication, and refusing what a broken or hostile
//! registry sends.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::registry::{hostile_registry, manifest_for, tiny_gguf, Hostile, Proxy, Registry};
use common::*;
use serde_json::{json, Value};

/// The model's blobs (complete ones, named by digest) and manifests in a store.
fn blobs_and_manifests(s: &TestServer) -> Vec<String> {
    s.store_files()
        .into_iter()
        .filter(|f| f.contains("/manifests/") || (f.contains("/blobs/") && !f.contains("-partial")))
        .collect()
}

fn statuses(lines: &[(std::time::Instant, Value)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, v) in lines {
        let s = v["status"]
            .as_str()
            .or(v["error"].as_str())
            .unwrap_or("")
            .to_string();
        if out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

fn tags(s: &TestServer) -> Vec<(String, String)> {
    s.get("/api/tags")["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn push_remove_pull_round_trip() {
    let reg = Registry::start();
    let s = TestServer::start();
    s.create_smol();
    let name = format!("{}/me/smol:v1", reg.host());
    assert!(s.corral(&["cp", "smol", &name]).status.success());
    let id = tags(&s).into_iter().find(|(n, _)| *n == name).unwrap().1;

    // Without --insecure the registry is spoken to over HTTPS, which it does not serve.
    let out = s.corral(&["push", &name]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Error: push"), "{}", stderr(&out));
    assert!(stderr(&out).contains("use --insecure"), "{}", stderr(&out));
    // Capitals in the repository's name: told before anything is sent.
    let upper = format!("{}/Me/Up:v1", reg.host());
    assert!(s.corral(&["cp", "smol", &upper]).status.success());
    let out = s.corral(&["push", &upper, "--insecure"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("push Me/Up: registries take only lower-case repository names"),
        "{}",
        stderr(&out)
    );
    assert!(s.corral(&["rm", &upper]).status.success());

    let out = s.corral(&["push", &name, "--insecure"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for step in [
        "retrieving manifest",
        "pushing ",
        "pushing manifest",
        "success",
    ] {
        assert!(err.contains(step), "{step:?} missing from {err}");
    }

    // A second name in another repository of the same registry: its blobs are mounted, not
    // sent again.
    let other = format!("{}/other/smol:latest", reg.host());
    assert!(s.corral(&["cp", "smol", &other]).status.success());
    let out = s.corral(&["push", &other, "--insecure"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.log().contains("blob mounted"), "{}", s.log());

    let before: Vec<String> = blobs_and_manifests(&s)
        .into_iter()
        .filter(|f| f.contains("/blobs/"))
        .collect();
    for n in ["smol", name.as_str(), other.as_str()] {
        assert!(s.corral(&["rm", n]).status.success());
    }
    assert_eq!(blobs_and_manifests(&s), Vec::<String>::new());

    // Pull it back over the API and watch the statuses Ollama streams.
    let lines = s.stream("/api/pull", json!({"model": name, "insecure": true}));
    let st = statuses(&lines);
    assert_eq!(st.first().map(String::as_str), Some("pulling manifest"));
    assert_eq!(
        st[st.len() - 3..],
        ["verifying sha256 digest", "writing manifest", "success"]
    );
    let layer_lines: Vec<&Value> = lines
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["digest"].is_string())
        .collect();
    assert!(!layer_lines.is_empty());
    for v in &layer_lines {
        let d = v["digest"].as_str().unwrap();
        assert_eq!(v["status"], format!("pulling {}", &d[7..19]));
        assert!(v["completed"].as_u64().unwrap() <= v["total"].as_u64().unwrap());
    }
    // Same ID (manifest digest), same blobs.
    assert_eq!(tags(&s), vec![(name.clone(), id)]);
    let after: Vec<String> = blobs_and_manifests(&s)
        .into_iter()
        .filter(|f| f.contains("/blobs/"))
        .collect();
    assert_eq!(after, before);
    for f in &after {
        let hex = f.rsplit("sha256-").next().unwrap();
        assert_eq!(sha256_hex(&std::fs::read(f).unwrap()), hex);
    }

    // The pulled model answers.
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": name, "prompt": "Say hello.", "stream": false, "options": {"num_predict": 8, "temperature": 0}}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(!body["response"].as_str().unwrap().is_empty());

    // Pulling again sends nothing new; an unknown tag is Ollama's error, in-band and in the CLI.
    let out = s.corral(&["pull", &name, "--insecure"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = s.stream(
        "/api/pull",
        json!({"model": format!("{}/me/smol:nope", reg.host()), "insecure": true}),
    );
    assert_eq!(
        lines.last().unwrap().1,
        json!({"error": "pull model manifest: file does not exist"})
    );
    let out = s.corral(&["pull", &format!("{}/me/nope", reg.host()), "--insecure"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).ends_with("Error: pull model manifest: file does not exist\n"),
        "{}",
        stderr(&out)
    );
    // stream:false answers once.
    let (status, body) = s.post(
        "/api/pull",
        json!({"model": name, "insecure": true, "stream": false}),
    );
    assert_eq!((status, body), (200, json!({"status": "success"})));
}

/// Push the test model to `reg` from a throwaway server; returns the model layer's size.
fn seed(reg: &Registry, name: &str, env: &[(&str, &str)]) -> u64 {
    let s = TestServer::start_with(env);
    s.create_smol();
    assert!(s.corral(&["cp", "smol", name]).status.success());
    let out = s.corral(&["push", name, "--insecure"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), reg.log());
    std::fs::metadata(model_file(SMOL)).unwrap().len()
}

/// `corral pull --insecure` in the background.
fn spawn_pull(s: &TestServer, name: &str) -> std::process::Child {
    std::process::Command::new(corral_exe())
        .args(["pull", name, "--insecure"])
        .env("CORRAL_HOST", format!("127.0.0.1:{}", s.port))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn download_done(s: &TestServer) -> u64 {
    s.store_files()
        .iter()
        .filter(|f| f.ends_with("-partial.json"))
        .map(|f| {
            let v: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
            v["parts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["done"].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn interrupted_pulls_resume() {
    let reg = Registry::start();
    let size = seed(&reg, &format!("{}/me/smol", reg.host()), &[]);
    let proxy = Proxy::start(reg.port);
    let name = format!("{}/me/smol", proxy.host());
    let s = TestServer::start();

    // 1. The connection drops a third of the way in and stays down: the pull fails, keeps
    //    its download, and shows nothing as a model or blob.
    proxy.cut_after.store(size / 3, Ordering::SeqCst);
    let out = s.corral(&["pull", &name, "--insecure"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Error: pull sha256:"),
        "{}",
        stderr(&out)
    );
    assert_eq!(blobs_and_manifests(&s), Vec::<String>::new());
    let kept = download_done(&s);
    assert!(kept > size / 10, "only {kept} bytes kept");

    // 2. The client is killed mid-pull: the server stops that pull, keeping what it got.
    proxy.down.store(false, Ordering::SeqCst);
    proxy.cut_after.store(u64::MAX, Ordering::SeqCst);
    proxy.rate.store(4 << 20, Ordering::SeqCst);
    let mut cli = spawn_pull(&s, &name);
    assert!(wait_for(Duration::from_secs(30), || download_done(&s)
        > kept + (8 << 20)));
    cli.kill().unwrap();
    cli.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let stopped_at = proxy.sent.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        proxy.sent.load(Ordering::SeqCst) - stopped_at < (1 << 20),
        "the pull went on after its client left"
    );
    let kept = download_done(&s);
    assert!(kept < size);

    // 3. The server itself is killed mid-pull and started again on the same store: the
    //    download survives the crash and start-up pruning.
    let mut cli = spawn_pull(&s, &name);
    assert!(wait_for(Duration::from_secs(30), || download_done(&s)
        > kept + (8 << 20)));
    let mut s = s;
    let mut server = s.child.take().unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(!cli.wait().unwrap().success());
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    let s = TestServer::start_in(dir, &[]);
    let kept_before = kept;
    let kept = download_done(&s);
    assert!(
        kept > kept_before + (8 << 20) && kept < size,
        "{kept_before} then {kept}"
    );

    // 4. The next pull resumes: it starts where the last left off and fetches only the rest.
    proxy.rate.store(0, Ordering::SeqCst);
    proxy.sent.store(0, Ordering::SeqCst);
    let lines = s.stream("/api/pull", json!({"model": name, "insecure": true}));
    assert_eq!(
        lines.last().unwrap().1,
        json!({"status": "success"}),
        "{lines:?}"
    );
    let first_layer = lines
        .iter()
        .map(|(_, v)| v)
        .find(|v| v["total"].as_u64() == Some(size))
        .unwrap();
    assert!(
        first_layer["completed"].as_u64().unwrap() >= kept - (1 << 20),
        "{first_layer}"
    );
    let fetched = proxy.sent.load(Ordering::SeqCst);
    assert!(
        fetched < size - kept + (4 << 20),
        "fetched {fetched} of {size} after keeping {kept}"
    );
    assert!(s.store_files().iter().all(|f| !f.contains("-partial")));
    let files = blobs_and_manifests(&s);
    let model_blob = files
        .iter()
        .find(|f| std::fs::metadata(f).unwrap().len() == size)
        .unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(model_blob).unwrap()),
        sha256_hex(&std::fs::read(model_file(SMOL)).unwrap())
    );
}

#[test]
fn registry_authentication() {
    let reg = Registry::start_with_users(&[("alice", "s3cret")]);
    let name = format!("{}/alice/smol", reg.host());
    // Credentials from the environment.
    seed(
        &reg,
        &name,
        &[
            ("CORRAL_REGISTRY_USER", "alice"),
            ("CORRAL_REGISTRY_PASSWORD", "s3cret"),
        ],
    );

    // A wrong password, and none at all: clear errors, nothing written.
    for (env, want) in [
        (
            vec![("CORRAL_REGISTRY_USER", "alice"), ("CORRAL_REGISTRY_PASSWORD", "wrong")],
            "refused the credentials of user 'alice' from CORRAL_REGISTRY_USER and CORRAL_REGISTRY_PASSWORD (wrong user name or password?)",
        ),
        (vec![("CORRAL_REGISTRY_AUTH_FILE", "/nonexistent")], "requires authentication"),
    ] {
        let s = TestServer::start_with(&env);
        let out = s.corral(&["pull", &name, "--insecure"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(want), "{}", stderr(&out));
        assert!(s.store_files().is_empty(), "{:?}", s.store_files());
    }

    // Credentials from a Docker config file, as `docker login` writes it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    std::fs::write(
        &file,
        json!({"auths": {reg.host(): {"auth": "YWxpY2U6czNjcmV0"}}}).to_string(),
    )
    .unwrap();
    let s = TestServer::start_with(&[("CORRAL_REGISTRY_AUTH_FILE", file.to_str().unwrap())]);
    let out = s.corral(&["pull", &name, "--insecure"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tags(&s).len(), 1);

    // A registry that hands out bearer tokens from a realm it names (docker-registry's token
    // mode needs a signing service, so a small stand-in plays the registry here).
    let blob = tiny_gguf(&b"bytes behind a token".repeat(50));
    let port = hostile_registry(vec![("bearer", Hostile::Bearer { blob: blob.clone() })]);
    let bearer = format!("127.0.0.1:{port}/h/bearer");
    let out = s.corral(&["pull", &bearer, "--insecure"]);
    assert!(
        stderr(&out).contains("requires authentication"),
        "{}",
        stderr(&out)
    );
    let s = TestServer::start_with(&[
        ("CORRAL_REGISTRY_USER", "alice"),
        ("CORRAL_REGISTRY_PASSWORD", "s3cret"),
    ]);
    let out = s.corral(&["pull", &bearer, "--insecure"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s
        .store_files()
        .iter()
        .any(|f| f.ends_with(&sha256_hex(&blob))));
    let s = TestServer::start_with(&[
        ("CORRAL_REGISTRY_USER", "alice"),
        ("CORRAL_REGISTRY_PASSWORD", "nope"),
    ]);
    let out = s.corral(&["pull", &bearer, "--insecure"]);
    assert!(
        stderr(&out).contains("refused the credentials of user 'alice'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tampered_blobs_and_hostile_registries_leave_the_store_alone() {
    // A real registry whose stored model blob was altered after the push.
    let reg = Registry::start();
    let name = format!("{}/me/smol", reg.host());
    seed(&reg, &name, &[]);
    let model_digest = format!(
        "sha256:{}",
        sha256_hex(&std::fs::read(model_file(SMOL)).unwrap())
    );
    let data = reg.blob_data(&model_digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let s = TestServer::start_with(&[("CORRAL_REGISTRY_STALL_TIMEOUT", "1s")]);
    let out = s.corral(&["pull", &name, "--insecure"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "digest mismatch: the registry sent bytes for {model_digest} that hash to sha256:"
        )),
        "{err}"
    );
    assert_eq!(blobs_and_manifests(&s), Vec::<String>::new());
    assert!(
        s.store_files()
            .iter()
            .all(|f| !f.contains(&model_digest[7..])),
        "bad bytes kept"
    );

    // A hostile registry.
    let blob = b"not really a model, but bytes with a digest".repeat(100);
    let d = "sha256:".to_string() + &"0".repeat(64);
    let port = hostile_registry(vec![
        (
            "pathy",
            Hostile::Manifest(manifest_for(&blob).replacen(
                "sha256:",
                "sha256:../../../../tmp/",
                2,
            )),
        ),
        (
            "nodigest",
            Hostile::Manifest(
                manifest_for(&blob).replace(&format!("sha256:{}", sha256_hex(&blob)), "../../x"),
            ),
        ),
        (
            "huge",
            Hostile::Manifest(format!("{{\"pad\":\"{}\"}}", "x".repeat(5 << 20))),
        ),
        ("endless", Hostile::EndlessManifest),
        ("endlesstoken", Hostile::EndlessToken),
        ("endlesserror", Hostile::EndlessError),
        (
            "bigsize",
            Hostile::Manifest(manifest_for(&blob).replace(
                &format!("\"size\":{}", blob.len()),
                "\"size\":99999999999999",
            )),
        ),
        ("notjson", Hostile::Manifest("<html>hello</html>".into())),
        (
            "long",
            Hostile::LongBlob {
                blob: blob.clone(),
                extra: 100,
            },
        ),
        ("short", Hostile::ShortBlob { blob: blob.clone() }),
        // Bytes that are what the manifest says, but no model.
        (
            "notgguf",
            Hostile::LongBlob {
                blob: blob.clone(),
                extra: 0,
            },
        ),
        (
            "missing",
            Hostile::Manifest(manifest_for(&blob).replace(&sha256_hex(&blob), &d[7..])),
        ),
    ]);
    for (repo, want) in [
        (
            "pathy",
            "the registry sent an invalid manifest: invalid digest",
        ),
        (
            "nodigest",
            "the registry sent an invalid manifest: invalid digest",
        ),
        (
            "huge",
            "pull model manifest: the registry sent more than 4194304 bytes",
        ),
        (
            "endless",
            "pull model manifest: the registry sent more than 4194304 bytes",
        ),
        (
            "endlesstoken",
            "/endless-token: the registry sent more than 4194304 bytes",
        ),
        ("endlesserror", "500 Internal Server Error"),
        ("bigsize", "claims 99999999999999 bytes"),
        ("notjson", "the registry sent an invalid manifest"),
        (
            "long",
            "the registry sent more bytes than the manifest's size",
        ),
        ("short", "gave up after 5 tries"),
        ("notgguf", "is not a complete GGUF file"),
        ("missing", "the registry does not have this blob"),
    ] {
        let out = s.corral(&["pull", &format!("127.0.0.1:{port}/h/{repo}"), "--insecure"]);
        assert!(!out.status.success(), "{repo}");
        assert!(stderr(&out).contains(want), "{repo}: {}", stderr(&out));
        assert_eq!(blobs_and_manifests(&s), Vec::<String>::new(), "{repo}");
    }
    // The server is still fine, and a registry that stalls once is retried past the stall.
    assert_eq!(s.get("/api/tags"), json!({"models": []}));
    let blob = tiny_gguf(&b"slow bytes".repeat(1000));
    let port = hostile_registry(vec![(
        "stall",
        Hostile::StallOnce {
            blob: blob.clone(),
            stalled: Default::default(),
        },
    )]);
    let out = s.corral(&["pull", &format!("127.0.0.1:{port}/h/stall"), "--insecure"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.log().contains("nothing arrived for 1s"), "{}", s.log());
    assert!(s
        .store_files()
        .iter()
        .any(|f| f.ends_with(&sha256_hex(&blob))));
}

/// Shutting the server down ends a pull at once, as it ends answers (the download is kept
/// for the next pull): SIGTERM does not wait for a slow download to finish.
#[test]
fn shutdown_ends_a_pull_at_once() {
    let reg = Registry::start();
    let size = seed(&reg, &format!("{}/me/smol", reg.host()), &[]);
    let proxy = Proxy::start(reg.port);
    // A minute of download at this rate.
    proxy.rate.store(size / 60, Ordering::SeqCst);
    let name = format!("{}/me/smol", proxy.host());
    let mut s = TestServer::start();
    let mut cli = spawn_pull(&s, &name);
    assert!(wait_for(Duration::from_secs(30), || download_done(&s) > 0));
    let mut server = s.child.take().unwrap();
    signal(server.id(), 15);
    assert!(
        wait_for(Duration::from_secs(5), || server
            .try_wait()
            .unwrap()
            .is_some()),
        "the server waited for the pull to finish"
    );
    assert!(!cli.wait().unwrap().success());
    let kept = download_done(&s);
    assert!(kept > 0 && kept < size, "{kept} of {size}");
}

/// A push whose upload is cut off starts the blob's upload again (up to five tries) and
/// succeeds once the registry is back.
#[test]
fn an_interrupted_push_is_retried() {
    let reg = Registry::start();
    let proxy = Proxy::start(reg.port);
    let s = TestServer::start();
    s.create_smol();
    let name = format!("{}/me/smol", proxy.host());
    assert!(s.corral(&["cp", "smol", &name]).status.success());
    // The proxy counts what comes back from the registry, so cut on the first answers:
    // the upload's connection goes down; a moment later the registry is reachable again.
    proxy.cut_after.store(200, Ordering::SeqCst);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            assert!(wait_for(Duration::from_secs(30), || proxy
                .down
                .load(Ordering::SeqCst)));
            proxy.cut_after.store(u64::MAX, Ordering::SeqCst);
            proxy.down.store(false, Ordering::SeqCst);
        });
        let out = s.corral(&["push", &name, "--insecure"]);
        assert!(out.status.success(), "{}\n{}", stderr(&out), s.log());
    });
    assert!(s.log().contains("retrying"), "{}", s.log());
    // What was pushed pulls back whole.
    let other = TestServer::start();
    let out = other.corral(&["pull", &name, "--insecure"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
