//! Go templates render as Go's `text/template` renders them in Ollama: the language, the
//! functions, how Ollama's tool types print, and whole chat templates of the kinds models ship.

use corral_api::Message;
use serde_json::{json, Value};

use crate::go::{render_messages, Think};
use crate::{ChatTemplate, RenderInput};

fn conv() -> Vec<Message> {
    vec![
        Message::new("system", "S"),
        Message::new("user", "Hi"),
        Message::new("assistant", "Hello!"),
        Message::new("user", "Capital of France?"),
    ]
}

/// `src` over `conv()`, with `.Messages` data.
fn go(src: &str) -> String {
    render_messages(src, &conv(), None, Think::default()).unwrap()
}

fn go_err(src: &str) -> String {
    render_messages(src, &conv(), None, Think::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn the_go_language_renders_as_go_does() {
    // Ollama's standard way of finding the last message.
    assert_eq!(
        go("{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}{{ if $last }}{{ .Content }}{{ end }}{{ end }}"),
        "Capital of France?"
    );
    assert_eq!(
        go(r#"{{ slice "abcdef" 1 3 }}|{{ slice "abc" 1 }}"#),
        "bc|bc"
    );
    // Reassignment reaches the variable declared outside (qwen3's `$lastUserIdx`).
    assert_eq!(
        go(r#"{{- $lastUserIdx := -1 -}}
{{- range $idx, $msg := .Messages -}}
{{- if eq $msg.Role "user" }}{{ $lastUserIdx = $idx }}{{ end -}}
{{- end -}}
{{ $lastUserIdx }}"#),
        "3"
    );
    assert_eq!(
        go("{{ range $i, $m := .Messages }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ if eq $i 3 }}{{ break }}{{ end }}{{ $m.Role }};{{ end }}"),
        "system;assistant;"
    );
    assert_eq!(
        go(r#"{{ with "" }}a{{ else with .System }}S={{ . }}{{ else }}none{{ end }}"#),
        "S=S"
    );
    assert_eq!(
        go(r#"{{ html "<a href=\"x\">&'</a>" }}"#),
        "&lt;a href=&#34;x&#34;&gt;&amp;&#39;&lt;/a&gt;"
    );
    assert_eq!(
        go(r#"{{ js "it's <b>\"x\"</b> & \\" }}"#),
        r#"it\'s \u003Cb\u003E\"x\"\u003C/b\u003E \u0026 \\"#
    );
    assert_eq!(go(r#"{{ urlquery "a b&c" }}"#), "a+b%26c");
    assert_eq!(
        go(
            r#"{{ printf "%q %5.1f %d" "a" 3.14159 7 }}|{{ print 1 2 "a" "b" 3 }}|{{ println "a" 1 }}"#
        ),
        "\"a\"   3.1 7|1 2ab3|a 1\n"
    );
    assert_eq!(go("{{ range 3 }}{{ . }}{{ end }}"), "012");
    assert_eq!(
        go(
            r#"{{ and 1 0 }} {{ or 0 "x" }} {{ not true }} {{ eq "b" "a" "b" }} {{ lt 1 2 }} {{ len .Messages }} {{ (index .Messages 1).Content }}"#
        ),
        "0 x false true true 4 Hi"
    );
    assert_eq!(
        go(
            r#"{{- /* a comment */ -}} {{ block "b" . }}B{{ .Prompt }}{{ end }}{{ define "t" }}[{{ . }}]{{ end }}{{ template "t" "x" }}"#
        ),
        "BCapital of France?[x]"
    );
    assert_eq!(
        go("{{ with $m := index .Messages 0 }}{{ $m.Role }}{{ end }}"),
        "system"
    );
    // Go's errors for what it refuses.
    assert!(go_err("{{ slice .Messages 5 }}").contains("out of range"));
    assert!(go_err("{{ break }}").contains("break"));
    assert!(go_err("{{ index .Messages 9 }}").contains("index out of range"));
}

#[test]
fn ollamas_functions() {
    let today = chrono::Local::now();
    let yesterday = today - chrono::Duration::days(1);
    assert_eq!(
        go(r#"{{ currentDate }} {{ currentDate "2006" }} {{ yesterdayDate }}"#),
        format!(
            "{} {} {}",
            today.format("%Y-%m-%d"),
            today.format("%Y-%m-%d"),
            yesterday.format("%Y-%m-%d")
        )
    );
    assert!(go_err("{{ currentDate 1 }}").contains("expected string"));
    assert_eq!(
        go(
            r#"{{ json .System }} {{ json "<&>" }} {{ json (index .Messages 1).Role }} {{ json 1.5 }}"#
        ),
        r#""S" "\u003c\u0026\u003e" "user" 1.5"#
    );
    assert!(go_err("{{ json }}").contains("json"));
    assert_eq!(go(r#"{{ toTypeScriptType "x" }}"#), "any");
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather", "description": "Weather <now>",
        "parameters": {"type": "object", "required": ["city"], "properties": {
            "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
            "city": {"type": "string", "description": "City"}}}}})
}

fn call_conversation() -> Vec<Message> {
    let mut call = Message::new("assistant", "");
    call.tool_calls = Some(vec![json!(
        {"id": "c1", "function": {"name": "get_weather", "arguments": {"unit": "c", "city": "Paris", "n": 1.0}}}
    )]);
    vec![Message::new("user", "hi"), call]
}

fn render_tools(src: &str) -> String {
    render_messages(
        src,
        &call_conversation(),
        Some(&[weather_tool()]),
        Think::default(),
    )
    .unwrap()
}

#[test]
fn bare_tool_values_print_as_ollamas_string_methods() {
    let tool = r#"{"type":"function","function":{"name":"get_weather","description":"Weather \u003cnow\u003e","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string","description":"City"},"unit":{"type":["string","null"],"enum":["c","f"]}}}}}"#;
    let function = tool
        .strip_prefix(r#"{"type":"function","function":"#)
        .and_then(|t| t.strip_suffix('}'))
        .unwrap();
    let args = r#"{"city":"Paris","n":1,"unit":"c"}"#;
    let cases = [
        ("{{ .Tools }}", format!("[{tool}]")),
        ("{{ range .Tools }}{{ . }}{{ end }}", tool.to_string()),
        ("{{ range .Tools }}{{ .Function }}{{ end }}", function.to_string()),
        (
            "{{ range .Tools }}{{ .Function.Parameters.Properties.unit }}{{ end }}",
            r#"{"type":["string","null"],"enum":["c","f"]}"#.to_string(),
        ),
        (
            "{{ range .Tools }}{{ .Function.Parameters.Properties.unit.Type }}|{{ range .Function.Parameters.Properties.unit.Type }}{{ . }};{{ end }}{{ end }}",
            "[string null]|string;null;".to_string(),
        ),
        ("{{ json .Tools }}", format!("[{tool}]")),
        (
            "{{ range .Messages }}{{ range .ToolCalls }}{{ .Function.Arguments }}|{{ json .Function.Arguments }}|{{ printf \"%v %s\" .Function.Arguments .Function.Arguments }}{{ end }}{{ end }}",
            format!("{args}|{args}|{args} {args}"),
        ),
        // A call and its function have no `String()` in Ollama: Go prints the structs.
        (
            "{{ range .Messages }}{{ range .ToolCalls }}{{ . }}|{{ .Function }}{{ end }}{{ end }}",
            format!("{{c1 {{0 get_weather {args}}}}}|{{0 get_weather {args}}}"),
        ),
    ];
    for (src, want) in cases {
        let got = render_tools(src);
        assert_eq!(got, want, "{src}");
        // The same text on every call: nothing depends on hash order.
        for _ in 0..5 {
            assert_eq!(render_tools(src), got, "{src}");
        }
    }
    // Fields, ranges and functions still see the structs and maps inside.
    assert_eq!(
        render_tools(
            "{{ range .Tools }}{{ .Function.Name }} {{ .Type }} {{ len .Function.Parameters.Properties }} \
             {{ range $k, $v := .Function.Parameters.Properties }}{{ $k }}:{{ toTypeScriptType $v }}{{ with $v.Description }}({{ . }}){{ end }};{{ end }}\
             {{ index .Function.Parameters.Required 0 }}{{ end }}\
             {{ range .Messages }}{{ range .ToolCalls }} {{ .ID }} {{ .Function.Index }} {{ eq .Function.Name \"get_weather\" }} \
             {{ range $k, $v := .Function.Arguments }}{{ $k }}={{ $v }};{{ end }} {{ index .Function.Arguments \"city\" }} \
             {{ len .Function.Arguments }} {{ if .Function.Arguments }}args{{ end }}{{ end }}{{ end }}"
        ),
        "get_weather function 2 city:string(City);unit:string | null;city c1 0 true city=Paris;n=1;unit=c; Paris 3 args"
    );
    // No tools: `.Tools` is empty and prints as Go prints a nil list.
    assert_eq!(
        go("{{ if .Tools }}tools{{ else }}none{{ end }} {{ .Tools }} {{ len .Tools }}"),
        "none null 0"
    );
}

#[test]
fn tool_calls_with_odd_arguments() {
    let mut call = Message::new("assistant", "");
    call.tool_calls = Some(vec![
        json!({"function": {"name": "a", "arguments": "{\"x\": 1}"}}),
        json!({"function": {"name": "b"}}),
        json!({"function": {"name": "c", "arguments": "not json"}}),
    ]);
    let got = render_messages(
        "{{ range .Messages }}{{ range .ToolCalls }}{{ .Function.Name }}={{ .Function.Arguments }};{{ end }}{{ end }}",
        &[call],
        None,
        Think::default(),
    )
    .unwrap();
    assert_eq!(got, r#"a={"x":1};b={};c=not json;"#);
    // A tool that is not a tool is refused, as Ollama refuses the request.
    let e = render_messages(
        "{{ .Tools }}",
        &conv(),
        Some(&[json!({"function": {"name": 3}})]),
        Think::default(),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("template error: tools: "), "{e}");
}

/// Templates written for these tests, with what library templates rely on: ChatML with tools,
/// thinking after the last question and fill-in-the-middle (`$lastUser` found by reassignment),
/// and role headers with the tools before the last question (`$last` from `slice`, `break`,
/// `continue`, `else with`, `range ... else`).
const CHATML: &str = include_str!("../tests/templates/chatml-tools.gotmpl");
const HEADERS: &str = include_str!("../tests/templates/header-tools.gotmpl");

/// Two tools: one with a required parameter, one without (`required` is left out, as Go's
/// `omitempty` leaves it), with `<` and `&` in their text.
fn tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {
            "name": "get_weather", "description": "Current weather for a city",
            "parameters": {"type": "object", "required": ["city"], "properties": {
                "unit": {"type": "string", "enum": ["c", "f"], "description": "c or f"},
                "city": {"type": "string", "description": "A city, e.g. <Paris>"}}}}}),
        json!({"type": "function", "function": {
            "name": "get_time", "description": "Local time & date",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}),
    ]
}

/// A system message, a first exchange (with thinking), a question answered by two tool calls
/// (with thinking) and their results: one names its tool, the other only its call.
fn tool_conversation() -> Vec<Message> {
    let mut hello = Message::new("assistant", "Hello!");
    hello.thinking = Some("A greeting.".into());
    let mut calls = Message::new("assistant", "");
    calls.thinking = Some("I need both tools.".into());
    calls.tool_calls = Some(vec![
        json!({"id": "call_1", "function": {"name": "get_weather", "arguments": {"unit": "c", "city": "Paris"}}}),
        json!({"id": "call_2", "function": {"name": "get_time", "arguments": {"tz": "Europe/Paris"}}}),
    ]);
    let mut weather = Message::new("tool", "18 degrees");
    weather.tool_name = Some("get_weather".into());
    weather.tool_call_id = Some("call_1".into());
    let mut time = Message::new("tool", "14:05");
    time.tool_call_id = Some("call_2".into());
    vec![
        Message::new("system", "You are terse."),
        Message::new("user", "Hi"),
        hello,
        Message::new("user", "Weather and time in Paris?"),
        calls,
        weather,
        time,
    ]
}

fn render(src: &str, messages: &[Message], tools: &[Value]) -> String {
    ChatTemplate::go(src)
        .unwrap()
        .render(&RenderInput {
            messages,
            add_generation_prompt: true,
            tools: Some(tools),
            think: Some(true),
            think_level: None,
        })
        .unwrap()
}

#[test]
fn a_chatml_template_renders_tools_calls_results_and_thinking() {
    // Each tool printed bare is its JSON as Go writes Ollama's `api.Tool`: fields in
    // declaration order, empty ones left out, map keys sorted, `<` `>` `&` escaped. Only the
    // thinking after the last question is shown.
    assert_eq!(
        render(CHATML, &tool_conversation(), &tools()),
        r#"<|im_start|>system
You are terse.

Functions you can call, one JSON object per line:
{"type":"function","function":{"name":"get_weather","description":"Current weather for a city","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string","description":"A city, e.g. \u003cParis\u003e"},"unit":{"type":"string","description":"c or f","enum":["c","f"]}}}}}
{"type":"function","function":{"name":"get_time","description":"Local time \u0026 date","parameters":{"type":"object","properties":{"tz":{"type":"string"}}}}}
To call one, write <call>{"name": "...", "arguments": {...}}</call>.<|im_end|>
<|im_start|>user
Hi<|im_end|>
<|im_start|>assistant
Hello!<|im_end|>
<|im_start|>user
Weather and time in Paris?<|im_end|>
<|im_start|>assistant
<think>I need both tools.</think>
<call>{"name": "get_weather", "arguments": {"city":"Paris","unit":"c"}}</call>
<call>{"name": "get_time", "arguments": {"tz":"Europe/Paris"}}</call><|im_end|>
<|im_start|>tool
<result>18 degrees</result><|im_end|>
<|im_start|>tool
<result>14:05</result><|im_end|>
<|im_start|>assistant
"#
    );
    // Without a system message or tools there is no system turn.
    assert_eq!(
        render(CHATML, &[Message::new("user", "Hi")], &[]),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn a_chatml_template_fills_in_the_middle() {
    let got = crate::render_go_infill(CHATML, None, "def f(", "    return x").unwrap();
    assert_eq!(got, "<|pre|>def f(<|suf|>    return x<|mid|>");
    let got = crate::render_go_infill(CHATML, Some("S"), "a", "b").unwrap();
    assert_eq!(got, "<|pre|>a<|suf|>b<|mid|>");
}

#[test]
fn a_header_template_renders_tools_before_the_last_question() {
    // `{{ .Function }}` is the function's JSON, inside the template's own wrapper; a result
    // without a tool name is labelled with its call's id (`else with`).
    assert_eq!(
        render(HEADERS, &tool_conversation(), &tools()),
        r#"<|turn|>system
You are terse.<|/turn|>
<|turn|>user
Hi<|/turn|>
<|turn|>assistant
Hello!<|/turn|>
<|turn|>tools
{"type": "function", "function": {"name":"get_weather","description":"Current weather for a city","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string","description":"A city, e.g. \u003cParis\u003e"},"unit":{"type":"string","description":"c or f","enum":["c","f"]}}}}}
{"type": "function", "function": {"name":"get_time","description":"Local time \u0026 date","parameters":{"type":"object","properties":{"tz":{"type":"string"}}}}}
<|/turn|>
<|turn|>user
Weather and time in Paris?<|/turn|>
<|turn|>assistant
<call>{"name": "get_weather", "arguments": {"city":"Paris","unit":"c"}}</call>
<call>{"name": "get_time", "arguments": {"tz":"Europe/Paris"}}</call>
<|/turn|>
<|turn|>tool
get_weather: 18 degrees<|/turn|>
<|turn|>tool
call_2: 14:05<|/turn|>
<|turn|>assistant
"#
    );
    // A last assistant message is left open, to be continued; without tools none are listed.
    let msgs = [Message::new("user", "Hi"), Message::new("assistant", "Hel")];
    assert_eq!(
        render(HEADERS, &msgs, &[]),
        "<|turn|>user\nHi<|/turn|>\n<|turn|>assistant\nHel"
    );
}

#[test]
fn consecutive_messages_of_one_role_are_one_turn() {
    let call = |city: &str| {
        let mut m = Message::new("assistant", "");
        m.tool_calls = Some(vec![
            json!({"function": {"name": "w", "arguments": {"city": city}}}),
        ]);
        m
    };
    let msgs = vec![
        Message::new("system", "S1"),
        Message::new("system", "S2"),
        Message::new("user", "a"),
        Message::new("user", "b"),
        call("Paris"),
        call("Rome"),
        Message::new("tool", "1"),
        Message::new("tool", "2"),
    ];
    let collated = crate::go::collate(&msgs);
    let roles: Vec<&str> = collated.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "tool"]);
    assert_eq!(collated[0].content, "S1\n\nS2");
    assert_eq!(collated[1].content, "a\n\nb");
    assert_eq!(collated[2].tool_calls.as_ref().unwrap().len(), 2);
    // Through a template, as a request reaches it.
    let t = ChatTemplate::go(
        "{{ range .Messages }}[{{ .Role }}:{{ .Content }}{{ range .ToolCalls }} {{ .Function.Arguments.city }}{{ end }}]{{ end }}",
    )
    .unwrap();
    let got = t
        .render(&RenderInput {
            messages: &msgs,
            add_generation_prompt: true,
            tools: None,
            think: None,
            think_level: None,
        })
        .unwrap();
    assert_eq!(
        got,
        "[system:S1\n\nS2][user:a\n\nb][assistant:\n\n Paris Rome][tool:1][tool:2]"
    );
    // A template of `.Prompt` and `.Response` gets one turn for the two user messages.
    let pairs = ChatTemplate::go("<{{ .Prompt }}|{{ .Response }}>").unwrap();
    let got = pairs
        .render(&RenderInput {
            messages: &msgs[..4],
            add_generation_prompt: true,
            tools: None,
            think: None,
            think_level: None,
        })
        .unwrap();
    assert_eq!(got, "<a\n\nb|>");
}
