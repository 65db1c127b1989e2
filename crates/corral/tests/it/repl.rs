//! `corral run` on a terminal: the real CLI in a pseudo-terminal (expectrl) against the real
//! server and model, driven with keys as a user types them. What the user sees is checked on a
//! terminal emulator's screen (vt100) where layout matters.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use expectrl::{Expect, Regex, Session};
use serde_json::{json, Value};

/// `corral run` in a pseudo-terminal, with everything it printed kept.
struct Repl {
    session: expectrl::session::OsSession,
    transcript: Vec<u8>,
    home: tempfile::TempDir,
    cols: u16,
}

impl Repl {
    fn start(s: &TestServer, args: &[&str], cols: u16) -> Repl {
        Self::start_in(s, args, cols, tempfile::tempdir().unwrap(), &[])
    }

    fn start_in(
        s: &TestServer,
        args: &[&str],
        cols: u16,
        home: tempfile::TempDir,
        env: &[(&str, &str)],
    ) -> Repl {
        let mut cmd = std::process::Command::new(corral_exe());
        cmd.arg("run")
            .args(args)
            .env("CORRAL_HOST", format!("127.0.0.1:{}", s.port))
            .env("HOME", home.path())
            .env("TERM", "xterm-256color")
            .env_remove("CORRAL_NOHISTORY")
            .env_remove("OLLAMA_NOHISTORY");
        cmd.envs(env.iter().copied());
        let mut session = Session::spawn(cmd).expect("spawn corral run in a pty");
        session.get_process_mut().set_window_size(cols, 60).unwrap();
        let mut r = Repl {
            session,
            transcript: Vec::new(),
            home,
            cols,
        };
        r.prompt();
        r
    }

    /// Wait for `needle`, polling (expectrl's own `expect` spins on a core, which would
    /// starve the tests running beside this one).
    fn wait<N: expectrl::Needle>(&mut self, needle: N, what: &str) -> expectrl::Captures {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            match self.session.check(&needle) {
                Ok(c) if !c.is_empty() => {
                    self.transcript.extend_from_slice(c.as_bytes());
                    return c;
                }
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Ok(_) => panic!("timed out waiting for {what}\n{}", self.screen_text()),
                Err(e) => panic!("waiting for {what}: {e}\n{}", self.screen_text()),
            }
        }
    }

    /// Wait for `text`; returns what came before it.
    fn expect(&mut self, text: &str) -> String {
        let c = self.wait(text, &format!("{text:?}"));
        String::from_utf8_lossy(c.before()).into_owned()
    }

    fn expect_regex(&mut self, re: &str) -> String {
        let c = self.wait(Regex(re), &format!("/{re}/"));
        String::from_utf8_lossy(c.as_bytes()).into_owned()
    }

    /// Wait for the next prompt: `>>> ` with its placeholder, which shows only on a new,
    /// empty line (so keys typed after it are read by the new prompt).
    fn prompt(&mut self) -> String {
        self.expect(">>> ");
        self.expect("Send a message (/? for help)")
    }

    /// Wait for the continuation prompt of a `"""` block.
    fn continuation(&mut self) {
        self.expect("... ");
        self.expect("Use \"\"\" to end multi-line input");
    }

    fn keys(&mut self, keys: &str) {
        self.session.send(keys).unwrap();
    }

    /// Type a line and press Enter.
    fn line(&mut self, text: &str) {
        self.keys(&format!("{text}\r"));
    }

    /// Type a command, wait for `shows` after it, then for the next prompt.
    fn command(&mut self, line: &str, shows: &str) {
        self.line(line);
        self.expect(shows);
        self.prompt();
    }

    /// The session as a terminal of this width shows it (ample rows, so nothing scrolls away).
    fn screen(&self) -> Vec<String> {
        let mut p = vt100::Parser::new(2000, self.cols, 0);
        p.process(&self.transcript);
        let rows: Vec<String> = p
            .screen()
            .rows(0, self.cols)
            .map(|r| r.trim_end().to_string())
            .collect();
        let last = rows.iter().rposition(|r| !r.is_empty()).unwrap_or(0);
        rows[..=last].to_vec()
    }

    fn screen_text(&self) -> String {
        self.screen().join("\n")
    }

    /// Wait for the program to end; returns whether it exited with status 0.
    fn exited_ok(&mut self) -> bool {
        let _ = self.wait(expectrl::Eof, "the end");
        matches!(
            self.session.get_process_mut().wait(),
            Ok(expectrl::process::unix::WaitStatus::Exited(_, 0))
        )
    }
}

fn model_messages(s: &TestServer, model: &str) -> Vec<Value> {
    let (status, show) = s.post("/api/show", json!({ "model": model }));
    assert_eq!(status, 200, "{show}");
    show["messages"].as_array().cloned().unwrap_or_default()
}

#[test]
fn commands_answer_with_ollamas_texts() {
    let s = TestServer::start();
    s.create_smol();
    // Repl::start waits for the prompt and its placeholder.
    let mut r = Repl::start(&s, &["smol"], 100);

    // Help.
    r.command("/?", "Use \"\"\" to begin a multi-line message.");
    assert!(r
        .screen_text()
        .contains("  /load <model>   Load a session or model"));
    r.command("/help", "/? shortcuts    Help for keyboard shortcuts");
    r.command("/? set", "/set nothink           Disable thinking");
    r.command("/? show", "/show template     Show prompt template");
    r.command("/? shortcuts", "Ctrl + d            Exit corral (/bye)");
    r.command("/set", "/set parameter ...     Set a parameter");
    r.command("/show", "/show info         Show details for this model");
    r.command("/set parameter", "Available Parameters:");
    r.command(
        "/set parameter seed",
        "/set parameter stop <string> <string> ...   Set the stop parameters",
    );

    // Parameters, good and bad.
    r.command(
        "/set parameter temperature 0",
        "Set parameter 'temperature' to '0'",
    );
    r.command("/set parameter seed 42", "Set parameter 'seed' to '42'");
    r.command(
        "/set parameter num_predict 12",
        "Set parameter 'num_predict' to '12'",
    );
    r.command(
        "/set parameter stop <end> STOP",
        "Set parameter 'stop' to '<end>, STOP'",
    );
    r.command(
        "/set parameter num_predict lots",
        "Couldn't set parameter: \"invalid value for parameter 'num_predict': \\\"lots\\\" is not an integer\"",
    );
    r.command(
        "/set parameter colour blue",
        "Couldn't set parameter: \"unknown parameter 'colour'\"",
    );
    r.command("/show parameters", "User defined parameters:");
    let screen = r.screen_text();
    assert!(screen.contains("Model defined parameters:"), "{screen}");
    for line in [
        "  num_predict                    12",
        "  seed                           42",
        "  stop                           [<end> STOP]",
        "  temperature                    0",
    ] {
        assert!(screen.contains(line), "{line:?} missing:\n{screen}");
    }

    // Session switches.
    r.command("/set wordwrap", "Set 'wordwrap' mode.");
    r.command("/set nowordwrap", "Set 'nowordwrap' mode.");
    r.command("/set wordwrap", "Set 'wordwrap' mode.");
    r.command("/set format json", "Set format to 'json' mode.");
    r.command(
        "/set format yaml",
        "Invalid or missing format. For 'json' mode use '/set format json'",
    );
    r.command("/set noformat", "Disabled format.");
    r.command("/set verbose", "Set 'verbose' mode.");
    r.command("/set quiet", "Set 'quiet' mode.");
    r.line("/set think");
    r.expect("warning: model \"smol\" does not support thinking output");
    r.expect("Set 'think' mode.");
    r.prompt();
    r.command("/set think high", "Set 'think' mode to 'high'.");
    r.command("/set nothink", "Set 'nothink' mode.");
    r.command(
        "/set colour",
        "Unknown command '/set colour'. Type /? for help",
    );
    r.command("/colour", "Unknown command '/colour'. Type /? for help");

    // What the model says about itself.
    r.command("/show license", "No license was specified for this model.");
    r.command(
        "/show system",
        "No system message was specified for this model.",
    );
    r.command("/show modelfile", "FROM ");
    r.command("/show template", "im_start");
    r.command("/show info", "architecture");
    assert!(r.screen_text().contains("  Capabilities"));
    r.command(
        "/show colour",
        "Unknown command '/show colour'. Type /? for help",
    );
    r.command("/set system You are a pirate.", "Set system message.");
    r.command("/show system", "You are a pirate.");
    // The Modelfile of this session: its system message and parameters (as Ollama's).
    r.command("/show modelfile", "SYSTEM \"\"\"You are a pirate.\"\"\"");
    assert!(
        r.screen_text().contains("PARAMETER seed 42"),
        "{}",
        r.screen_text()
    );

    // A multi-line message: the continuation prompt, then one message with its newlines.
    r.line("\"\"\"Name three colours");
    r.continuation();
    r.line("of the sea");
    r.continuation();
    r.line("in one line.\"\"\"");
    r.prompt();
    // And one that opens and closes on the same line.
    r.line("\"\"\"Say yes.\"\"\"");
    r.prompt();
    r.command("/save pirate", "Created new model 'pirate'");
    let messages = model_messages(&s, "pirate");
    let contents: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(contents.len(), 5, "{messages:?}");
    assert_eq!(contents[0], ("system", "You are a pirate."));
    assert_eq!(
        contents[1],
        ("user", "Name three colours\nof the sea\nin one line.")
    );
    assert_eq!(contents[2].0, "assistant");
    assert!(!contents[2].1.is_empty());
    assert_eq!(contents[3], ("user", "Say yes."));
    let (_, show) = s.post("/api/show", json!({"model": "pirate"}));
    assert!(
        show["parameters"].as_str().unwrap().contains("seed"),
        "{show}"
    );
    assert_eq!(show["system"], "You are a pirate.");

    // /clear keeps the system message, drops the turns.
    r.command("/clear", "Cleared session context");
    r.command("/save cleared", "Created new model 'cleared'");
    let after_clear = model_messages(&s, "cleared");
    assert_eq!(after_clear.len(), 1, "{after_clear:?}");
    assert_eq!(after_clear[0]["role"], "system");

    // /load.
    r.command("/load", "/load <modelname>");
    r.command("/load nosuch", "Couldn't find model 'nosuch'");
    r.line("/load pirate");
    r.expect("Loading model 'pirate'");
    // The saved conversation is shown as it was.
    r.expect(">>> Name three colours");
    r.prompt();
    r.command("/save", "/save <modelname>");

    r.line("/bye");
    assert!(r.exited_ok(), "{}", r.screen_text());
}

/// Ctrl-C while the model loads (the spinner before the first prompt) leaves with status 130,
/// as a command SIGINT ended, not 0: a script can tell it from `/bye`.
#[test]
fn ctrl_c_while_the_model_loads_exits_130() {
    let s = TestServer::start_with(&[
        ("CORRAL_MAX_LOADED_MODELS", "1"),
        ("CORRAL_NUM_PARALLEL", "1"),
    ]);
    s.create_smol();
    // The same weights with another context: a runner of its own, which must wait for the
    // only place while smol answers (so the load is still going when Ctrl-C comes).
    s.create(
        "smol-wide",
        &format!(
            "FROM {}\nPARAMETER num_ctx 8192\n",
            model_file(SMOL).display()
        ),
    );
    let busy = s
        .http
        .post(s.url("/api/generate"))
        .json(&json!({"model": "smol", "prompt": "Tell a long story.",
                      "options": {"num_predict": 20000}}))
        .send()
        .unwrap();
    let mut busy = std::io::BufReader::new(busy);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut busy, &mut first).unwrap();
    assert!(first.contains("\"response\""), "{first}");

    let mut cmd = std::process::Command::new(corral_exe());
    cmd.args(["run", "smol-wide"])
        .env("CORRAL_HOST", format!("127.0.0.1:{}", s.port))
        .env("HOME", s.dir.path())
        .env("TERM", "xterm-256color");
    let mut session = Session::spawn(cmd).expect("spawn corral run in a pty");
    let deadline = Instant::now() + Duration::from_secs(60);
    while session.check(Regex("[⠋⠙⠹⠸]")).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no spinner while loading");
        std::thread::sleep(Duration::from_millis(20));
    }
    session.send("\x03").unwrap();
    let status = session.get_process_mut().wait().unwrap();
    assert!(
        matches!(status, expectrl::process::unix::WaitStatus::Exited(_, 130)),
        "{status:?}"
    );
    drop(busy);
}

#[test]
fn ctrl_c_stops_the_answer_and_keeps_the_session() {
    let s = TestServer::start_with(&[("CORRAL_NUM_PARALLEL", "1")]);
    s.create_smol();
    let home = tempfile::tempdir().unwrap();
    let mut r = Repl::start_in(&s, &["smol"], 100, home, &[]);
    // An answer that would run for minutes.
    r.command("/set parameter num_predict 20000", "Set parameter");
    r.line("Tell me a very long story about a dragon.");
    r.expect("dragon.");
    r.expect_regex(r"\n[^\n]*[A-Za-z]+\s+[A-Za-z]+\s+[A-Za-z]+\s+[A-Za-z]+");
    r.keys("\x03");
    let stopped = Instant::now();
    r.prompt();
    // The server stopped it: with one slot, another request is answered at once.
    let (status, body) = s.post(
        "/api/generate",
        json!({"model": "smol", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        stopped.elapsed() < Duration::from_secs(60),
        "the slot was not freed: {:?}",
        stopped.elapsed()
    );
    // The session goes on, with the stopped turn in it.
    r.command("/save stopped", "Created new model 'stopped'");
    let messages = model_messages(&s, "stopped");
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(
        messages[0]["content"],
        "Tell me a very long story about a dragon."
    );
    assert!(!messages[1]["content"].as_str().unwrap().is_empty());

    // Ctrl-C on an empty line says how to leave; with text typed it drops the line.
    r.keys("\x03");
    r.expect("Use Ctrl + d or /bye to exit.");
    r.prompt();
    r.keys("half a thought\x03");
    r.prompt();
    // Inside a """ block, Ctrl-C drops the block.
    r.line("\"\"\"a block");
    r.continuation();
    r.keys("\x03");
    r.prompt();
    // History: the Up key brings back the last line sent; Ctrl-U clears it again.
    r.keys("\x1b[A");
    r.expect("\"\"\"a block");
    r.keys("\x1b[A");
    r.expect("/save stopped");
    r.keys("\x1b[A");
    r.expect("Tell me a very long story about a dragon.");
    r.keys("\x15");
    // Ctrl-D on the empty line leaves.
    r.keys("\x04");
    assert!(r.exited_ok(), "{}", r.screen_text());
    let history = std::fs::read_to_string(r.home.path().join(".corral/history")).unwrap();
    assert!(
        history.contains("Tell me a very long story about a dragon."),
        "{history}"
    );
    assert!(!history.contains("half a thought"), "{history}");
    assert!(s.runner_pids().len() <= 1);

    // /set nohistory: nothing more reaches the file (the session still recalls it).
    let home = r.home;
    let mut r = Repl::start_in(&s, &["smol"], 100, home, &[]);
    r.line("/set nohistory");
    r.prompt();
    r.line("/set parameter seed 7");
    r.expect("Set parameter 'seed' to '7'");
    r.prompt();
    r.keys("\x1b[A");
    r.expect("/set parameter seed 7");
    r.keys("\x15/bye\r");
    assert!(r.exited_ok());
    let after = std::fs::read_to_string(r.home.path().join(".corral/history")).unwrap();
    assert!(!after.contains("seed 7"), "{after}");
}

/// The answer's rows between the prompt line that asked and the next prompt.
fn answer_rows(screen: &[String], question: &str) -> Vec<String> {
    let start = screen
        .iter()
        .rposition(|l| l.starts_with(">>> ") && l.contains(question))
        .expect("question on screen");
    let end = screen[start + 1..]
        .iter()
        .position(|l| l.starts_with(">>> "))
        .map(|i| start + 1 + i)
        .unwrap_or(screen.len());
    screen[start + 1..end].to_vec()
}

#[test]
fn answers_wrap_between_words_at_the_terminal_width() {
    let s = TestServer::start();
    s.create_smol();
    let mut r = Repl::start(&s, &["smol"], 40);
    r.command("/set parameter temperature 0", "Set parameter");
    r.command("/set parameter num_predict 50", "Set parameter");
    r.line("Explain what a computer is.");
    r.prompt();
    r.command("/save wrapped", "Created new model 'wrapped'");
    let messages = model_messages(&s, "wrapped");
    let answer = messages[1]["content"].as_str().unwrap().to_string();
    let rows = answer_rows(&r.screen(), "Explain what a computer is.");
    let shown: Vec<&str> = rows.iter().flat_map(|l| l.split_whitespace()).collect();
    let said: Vec<&str> = answer.split_whitespace().collect();
    assert_eq!(shown, said, "words split across rows:\n{}", rows.join("\n"));
    assert!(
        rows.iter().filter(|l| !l.is_empty()).count() >= 3,
        "the answer should need several rows:\n{}",
        rows.join("\n")
    );
    assert!(rows.iter().all(|l| l.chars().count() <= 40));

    // Without word wrap the terminal cuts lines wherever the edge falls, inside words too.
    r.command("/set nowordwrap", "Set 'nowordwrap' mode.");
    r.command("/clear", "Cleared session context");
    r.line("Explain what a computer is.");
    r.prompt();
    let rows = answer_rows(&r.screen(), "Explain what a computer is.");
    let joined: String = rows.concat();
    let full_rows = rows.iter().filter(|l| l.chars().count() == 40).count();
    assert!(full_rows >= 1, "{}", rows.join("\n"));
    assert!(joined.replace(' ', "").len() > 100, "{joined}");

    // A pasted text (bracketed paste) is one message, newlines and all.
    r.command("/clear", "Cleared session context");
    r.command("/set parameter num_predict 4", "Set parameter");
    r.keys("\x1b[200~Two lines\nof pasted text.\x1b[201~\r");
    r.prompt();
    r.command("/save pasted", "Created new model 'pasted'");
    let messages = model_messages(&s, "pasted");
    assert_eq!(
        messages[0]["content"], "Two lines\nof pasted text.",
        "{messages:?}"
    );
    r.line("/exit");
    assert!(r.exited_ok());
}

#[test]
fn thinking_is_set_apart_and_can_be_hidden() {
    let s = TestServer::start();
    s.create_smol_think();
    // A model that can think thinks by default in the REPL.
    let mut r = Repl::start(&s, &["smol-think"], 100);
    r.command("/set parameter temperature 0", "Set parameter");
    r.command("/set parameter num_predict 16", "Set parameter");
    r.line("What is 2+2?");
    r.expect("Thinking...");
    r.expect("...done thinking.");
    r.prompt();
    r.command("/set nothink", "Set 'nothink' mode.");
    r.line("What is 3+3?");
    let shown = r.prompt();
    assert!(!shown.contains("Thinking..."), "{shown}");
    r.line("/bye");
    assert!(r.exited_ok());

    // --hidethinking: the thinking is left out; --verbose: the stats after the answer.
    let mut r = Repl::start(&s, &["smol-think", "--hidethinking", "--verbose"], 100);
    r.command("/set parameter num_predict 16", "Set parameter");
    r.line("What is 2+2?");
    let shown = r.expect("eval rate:");
    assert!(!shown.contains("Thinking..."), "{shown}");
    r.prompt();
    r.line("/bye");
    assert!(r.exited_ok());

    // One answer (no terminal) thinks by default too, as Ollama's; --think=false does not.
    let out = s.corral(&["run", "smol-think", "What is 2+2?"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("Thinking...\n"),
        "{}",
        stdout(&out)
    );
    let out = s.corral(&["run", "smol-think", "--think=false", "What is 2+2?"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("Thinking..."), "{}", stdout(&out));

    // --format takes a JSON schema as well as `json`, as Ollama's does.
    let schema = r#"{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}"#;
    let out = s.corral(&[
        "run",
        "smol-think",
        "--think=false",
        "--format",
        schema,
        "Give a number",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(answer["a"].is_i64(), "{answer}");

    // A bad --think value is refused before anything starts.
    let out = s.corral(&["run", "smol-think", "--think=loud", "hi"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "invalid value for --think: \"loud\" (must be true, false, high, medium, or low)"
        ),
        "{}",
        stderr(&out)
    );
}

/// Lines that reach the terminal together (a paste without bracketed paste, `tmux send-keys`,
/// expect scripts) are each read, as Ollama's readline reads them: none is dropped.
#[test]
fn lines_that_arrive_together_are_each_read() {
    let s = TestServer::start();
    s.create_smol();
    let mut r = Repl::start(&s, &["smol"], 100);
    r.keys("/set parameter num_predict 3\r/show parameters\r");
    r.expect("Set parameter 'num_predict' to '3'");
    r.expect("User defined parameters:");
    r.expect("num_predict                    3");
    r.prompt();
    // A `"""` block whose lines come in one write, and a command after it.
    r.keys("/set system \"\"\"Be\rbrief.\"\"\"\r/show system\r");
    r.expect("Set system message.");
    r.prompt();
    r.expect("Be\r\nbrief.");
    r.prompt();
}
