//! The official `ollama` and `openai` Python clients and LangChain's `langchain-ollama`, pinned
//! in `tests/clients/requirements.txt`, against the real server (`tests/clients/test_clients.py`).
//! `scripts/test.sh` makes their virtual environment; `CORRAL_CLIENT_VENV` names another.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn python_clients() {
    let python = client_python();
    let key = "client-suite-key";
    let s = TestServer::start_with(&[("CORRAL_API_KEY", key)]);
    for (name, text) in [
        ("smol", format!("FROM {}\n", model_file(SMOL).display())),
        ("smol-tools", tools_modelfile()),
        ("smol-think", think_modelfile()),
        ("minilm", format!("FROM {}\n", model_dir(MINILM).display())),
    ] {
        let path = s.dir.path().join(format!("Modelfile.{name}"));
        std::fs::write(&path, text).unwrap();
        let out = s.corral_env(
            &["create", name, "-f", path.to_str().unwrap()],
            &[("CORRAL_API_KEY", key)],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = Command::new(python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/clients/test_clients.py",
        ])
        .current_dir(repo_root())
        .env("CORRAL_TEST_URL", format!("http://127.0.0.1:{}", s.port))
        .env("CORRAL_TEST_API_KEY", key)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .unwrap();
    let report = format!("{}{}", stdout(&out), stderr(&out));
    println!("{report}");
    assert!(
        out.status.success(),
        "the client suite failed:\n{report}\nserver log:\n{}",
        s.log()
    );
    assert!(report.contains(" passed"), "{report}");
}
