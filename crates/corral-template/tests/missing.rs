//! Fields of Go templates behave as in Ollama, whose template data is a Go struct: known
//! fields that are unset render empty, and an unknown field is an error that names it.

use corral_api::Message;
use corral_template::{ChatTemplate, RenderInput};

#[test]
fn unset_fields_are_empty_and_unknown_fields_are_named() {
    let msgs = [Message::new("user", "hi")];
    let input = RenderInput {
        messages: &msgs,
        add_generation_prompt: true,
        tools: None,
        think: None,
        think_level: None,
    };
    let t = ChatTemplate::go("[{{ .System }}][{{ .Response }}][{{ if .Tools }}tools{{ end }}][{{ range .Messages }}{{ .Role }}{{ if .ToolCalls }}!{{ end }}{{ end }}]").unwrap();
    assert_eq!(t.render(&input).unwrap(), "[][][][user]");
    let err = ChatTemplate::go("{{ .Missing }}")
        .unwrap()
        .render(&input)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("template error: ") && err.contains("Missing"),
        "{err}"
    );
}
