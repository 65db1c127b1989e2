"""The real client libraries against a running Corral server.

Clients: `ollama`, `openai`, `anthropic` and `langchain-ollama`, pinned in requirements.txt.
Run by `crates/corral/tests/it/clients.rs`, which starts the server, creates the models and sets
CORRAL_TEST_URL and CORRAL_TEST_API_KEY (the server requires that key, so every test also shows
the client sends it). Models: `smol` (SmolLM2 from its GGUF), `smol-tools` (the same weights
with tests/models/smol-tools.Modelfile, whose template renders tools), `smol-think` (the same
template, able to think: a model that thinks by default) and
`minilm` (all-MiniLM-L6-v2 imported from its Hugging Face folder: an embedding model).
"""

import json
import math
import os

import anthropic
import jsonschema
import ollama
import openai
import pytest
from langchain_ollama import ChatOllama, OllamaEmbeddings

URL = os.environ["CORRAL_TEST_URL"]
KEY = os.environ["CORRAL_TEST_API_KEY"]
AUTH = {"Authorization": f"Bearer {KEY}"}
SHORT = {"temperature": 0, "num_predict": 24}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    },
}

PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "likes_cats": {"type": "boolean"},
    },
    "required": ["name", "age", "likes_cats"],
}


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.fixture(scope="module")
def native():
    return ollama.Client(host=URL, headers=AUTH)


@pytest.fixture(scope="module")
def oai():
    return openai.OpenAI(base_url=URL + "/v1", api_key=KEY)


@pytest.fixture(scope="module")
def claude():
    # The client sends its key as x-api-key.
    return anthropic.Anthropic(base_url=URL, api_key=KEY)


CLAUDE_WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}


# ---- ollama --------------------------------------------------------------------------------


def test_ollama_list_and_show(native):
    names = [m.model for m in native.list().models]
    assert "smol:latest" in names and "smol-tools:latest" in names
    show = native.show("smol")
    assert show.modelinfo["general.architecture"] == "llama"
    assert "completion" in show.capabilities
    assert "tools" in native.show("smol-tools").capabilities


def test_ollama_chat_and_stream(native):
    r = native.chat("smol", messages=[{"role": "user", "content": "Say hello."}], options=SHORT)
    assert r.message.role == "assistant" and r.message.content.strip()
    assert r.done and r.eval_count > 0
    parts = list(native.chat("smol", messages=[{"role": "user", "content": "Count to five."}], options=SHORT, stream=True))
    assert len(parts) > 2 and parts[-1].done
    assert "".join(p.message.content for p in parts).strip()


def test_ollama_generate_and_keep_alive_floats(native):
    r = native.generate("smol", "The capital of France is", options=SHORT, keep_alive=-1.0)
    assert r.response.strip() and r.done_reason in ("stop", "length")
    r = native.generate("smol", "", keep_alive=0.0)
    assert r.done_reason == "unload"


def test_ollama_json_mode_and_schema(native):
    r = native.chat(
        "smol",
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        format="json",
        options={"temperature": 0, "num_predict": 200},
    )
    assert isinstance(json.loads(r.message.content), dict)
    r = native.chat(
        "smol",
        messages=[{"role": "user", "content": "Invent a person. Answer in JSON."}],
        format=PERSON_SCHEMA,
        options={"temperature": 0, "num_predict": 200},
    )
    jsonschema.validate(json.loads(r.message.content), PERSON_SCHEMA)


def test_ollama_embeddings(native):
    r = native.embed("smol", input=["The cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell sharply after the rate rise."])
    a, b, c = r.embeddings
    assert abs(sum(x * x for x in a) - 1) < 1e-3, "vectors are L2-normalized"
    assert cosine(a, b) > cosine(a, c)
    assert len(native.embed("smol", input="one", dimensions=32).embeddings[0]) == 32
    legacy = native.embeddings("smol", prompt="The cat sits on the mat.")
    assert len(legacy.embedding) == len(a)


def test_ollama_embedding_model(native):
    assert native.show("minilm").capabilities == ["embedding"]
    r = native.embed("minilm", input=["The cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell sharply after the rate rise."])
    a, b, c = r.embeddings
    assert len(a) == 384
    assert cosine(a, b) > cosine(a, c) + 0.3
    with pytest.raises(ollama.ResponseError) as e:
        native.generate("minilm", prompt="hi")
    assert e.value.status_code == 400
    assert e.value.error == '"minilm:latest" does not support generate'
    with pytest.raises(ollama.ResponseError) as e:
        native.chat("minilm", messages=[{"role": "user", "content": "hi"}])
    assert e.value.error == '"minilm:latest" does not support chat'


def test_ollama_tools_empty_list_and_unsupported(native):
    # The client sends "tools": [] with every chat: that is no tools, not an error.
    r = native.chat("smol", messages=[{"role": "user", "content": "hi"}], tools=[], options=SHORT)
    assert r.message.content
    with pytest.raises(ollama.ResponseError) as e:
        native.chat("smol", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL])
    assert e.value.status_code == 400 and "does not support tools" in e.value.error


def test_ollama_thinking(native):
    r = native.chat("smol-think", messages=[{"role": "user", "content": "What is 2+2?"}], think=True, options={"temperature": 0, "num_predict": 40})
    assert r.message.thinking
    with pytest.raises(ollama.ResponseError) as e:
        native.chat("smol", messages=[{"role": "user", "content": "hi"}], think=True)
    assert e.value.status_code == 400 and "does not support thinking" in e.value.error


def test_ollama_unknown_model(native):
    with pytest.raises(ollama.ResponseError) as e:
        native.chat("nope", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404 and "not found" in e.value.error


# ---- openai --------------------------------------------------------------------------------


def test_openai_chat_and_stream(oai):
    r = oai.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.content.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens > 0
    chunks = list(
        oai.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": "Count to five."}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage.completion_tokens > 0 and chunks[-1].choices == []
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_openai_native_options_pass_through(oai):
    r = oai.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        extra_body={"options": {"num_ctx": 1024, "temperature": 0}},
    )
    assert r.choices[0].message.content


def test_openai_completions(oai):
    r = oai.completions.create(model="smol", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.choices[0].text.strip()


def test_openai_json_schema(oai):
    r = oai.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "Invent a person. Answer in JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}},
        max_tokens=200,
        temperature=0,
    )
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON_SCHEMA)


def test_openai_embeddings(oai):
    # The client asks for base64 unless told otherwise, and decodes it.
    r = oai.embeddings.create(model="smol", input=["The cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell sharply after the rate rise."])
    a, b, c = (d.embedding for d in r.data)
    assert cosine(a, b) > cosine(a, c)
    f = oai.embeddings.create(model="smol", input="The cat sits on the mat.", encoding_format="float")
    assert max(abs(x - y) for x, y in zip(f.data[0].embedding, a)) < 1e-5
    m = oai.embeddings.create(model="minilm", input=["The cat sits on the mat.", "A kitten rests on a rug."])
    assert len(m.data[0].embedding) == 384


def test_openai_models(oai):
    ids = [m.id for m in oai.models.list().data]
    assert "smol:latest" in ids
    assert oai.models.retrieve("smol:latest").id == "smol:latest"


def test_openai_unknown_model(oai):
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert "not found" in str(e.value)


def test_openai_tool_round_trip(oai):
    # Forced calls get a token limit: greedy decoding can differ with what the slot has cached,
    # and a 135M model may then run on inside the city string; a call needs about 35 tokens.
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = oai.chat.completions.create(model="smol-tools", messages=messages, tools=[WEATHER_TOOL], tool_choice="required", temperature=0, max_tokens=100)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str) and args["city"]
    # The result goes back; the model answers in words.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"city": args["city"], "temperature_c": 18, "sky": "sunny"})})
    r = oai.chat.completions.create(model="smol-tools", messages=messages, tools=[WEATHER_TOOL], max_tokens=40, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.choices[0].message.content.strip()
    # Streaming a forced call delivers it as a tool_calls delta.
    chunks = list(oai.chat.completions.create(model="smol-tools", messages=messages[:1], tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}, stream=True, max_tokens=100, temperature=0))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_openai_responses(oai):
    r = oai.responses.create(model="smol", input="Say hello.", instructions="Answer briefly.", max_output_tokens=24, temperature=0)
    assert r.object == "response" and r.id.startswith("resp")
    assert r.status in ("completed", "incomplete") and r.output_text.strip()
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    r = oai.responses.create(
        model="smol", input=[{"role": "user", "content": [{"type": "input_text", "text": "Count to three."}]}],
        max_output_tokens=16, temperature=0)
    assert r.output_text.strip()
    r = oai.responses.create(model="smol", input="Tell me a long story.", max_output_tokens=2)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    events = list(oai.responses.create(model="smol", input="Say hello.", max_output_tokens=16, temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.strip() and text == events[-1].response.output_text
    r = oai.responses.create(
        model="smol", input="Invent a person. Answer in JSON.", max_output_tokens=200, temperature=0,
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA, "strict": True}})
    jsonschema.validate(json.loads(r.output_text), PERSON_SCHEMA)
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model="no-such-model", input="Hi")
    with pytest.raises(openai.BadRequestError) as e:
        oai.responses.create(model="smol", input="Hi", previous_response_id="resp_1")
    assert "not stored" in str(e.value)


def test_openai_responses_tool_round_trip(oai):
    tool = {"type": "function", **WEATHER_TOOL["function"]}
    question = {"role": "user", "content": "What is the weather in Paris?"}
    r = oai.responses.create(model="smol-tools", input=[question], tools=[tool], tool_choice="required", max_output_tokens=100, temperature=0)
    call = next(o for o in r.output if o.type == "function_call")
    assert call.name == "get_weather" and call.call_id
    args = json.loads(call.arguments)
    assert isinstance(args["city"], str) and args["city"]
    followup = [
        question,
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id,
         "output": json.dumps({"city": args["city"], "temperature_c": 18, "sky": "sunny"})},
    ]
    r = oai.responses.create(model="smol-tools", input=followup, tools=[tool], max_output_tokens=40, temperature=0)
    assert r.output_text.strip()
    events = list(oai.responses.create(
        model="smol-tools", input=[question], tools=[tool], tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=100, temperature=0, stream=True))
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done and json.loads(done[0].arguments)["city"]
    assert any(o.type == "function_call" for o in events[-1].response.output)


# ---- anthropic -----------------------------------------------------------------------------


# This client version has no sampling parameters of its own; older ones sent `temperature`,
# which the server still takes.
GREEDY = {"extra_body": {"temperature": 0}}


def test_anthropic_message_and_stream(claude):
    r = claude.messages.create(
        model="smol", max_tokens=24, **GREEDY, system="Answer briefly.",
        messages=[{"role": "user", "content": "Say hello."}],
    )
    assert r.type == "message" and r.role == "assistant" and r.id.startswith("msg_")
    assert r.model == "smol"  # the name as the request gave it, as Ollama and Anthropic echo it
    assert r.content[0].type == "text" and r.content[0].text.strip()
    assert r.stop_reason in ("end_turn", "max_tokens")
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    with claude.messages.stream(
        model="smol", max_tokens=24, **GREEDY,
        messages=[{"role": "user", "content": "Count to five."}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() and final.content[0].text == text
    assert final.usage.output_tokens > 0
    raw = list(claude.messages.create(
        model="smol", max_tokens=8, messages=[{"role": "user", "content": "Hi"}], stream=True))
    events = [e.type for e in raw]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    # message_start already counts the prompt (token meters read it there), as message_delta does.
    assert raw[0].message.usage.input_tokens > 0 and raw[0].message.model == "smol"
    assert "content_block_start" in events and "content_block_delta" in events
    assert events[-2] == "message_delta"
    # A limit reached is max_tokens.
    r = claude.messages.create(
        model="smol", max_tokens=2, messages=[{"role": "user", "content": "Tell me a long story."}])
    assert r.stop_reason == "max_tokens" and r.usage.output_tokens == 2


def test_anthropic_stop_sequence(claude):
    # A word of the greedy answer, taken as a stop sequence, ends the same answer before it.
    ask = {"model": "smol", "max_tokens": 24, **GREEDY,
           "messages": [{"role": "user", "content": "Count to five."}]}
    full = claude.messages.create(**ask).content[0].text
    word = full.split()[2]
    r = claude.messages.create(**ask, stop_sequences=["no such words", word])
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == word, r
    assert full.startswith(r.content[0].text) and word not in r.content[0].text
    with claude.messages.stream(**ask, stop_sequences=[word]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == word
    # Without one, there is none.
    r = claude.messages.create(**ask, stop_sequences=["no such words"])
    assert r.stop_reason in ("end_turn", "max_tokens") and r.stop_sequence is None


def test_anthropic_tool_round_trip(claude):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = {"type": "tool", "name": "get_weather"}
    r = claude.messages.create(
        model="smol-tools", max_tokens=100, **GREEDY, messages=messages,
        tools=[CLAUDE_WEATHER_TOOL], tool_choice=forced,
    )
    assert r.stop_reason == "tool_use"
    call = next(b for b in r.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.id
    assert isinstance(call.input["city"], str) and call.input["city"]
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]})
    messages.append({"role": "user", "content": [{
        "type": "tool_result", "tool_use_id": call.id,
        "content": json.dumps({"city": call.input["city"], "temperature_c": 18, "sky": "sunny"}),
    }]})
    r = claude.messages.create(
        model="smol-tools", max_tokens=40, **GREEDY, messages=messages, tools=[CLAUDE_WEATHER_TOOL])
    assert r.stop_reason in ("end_turn", "max_tokens")
    assert any(b.type == "text" and b.text.strip() for b in r.content)
    # Streamed, the call's input arrives as input_json_delta and the client rebuilds it.
    with claude.messages.stream(
        model="smol-tools", max_tokens=100, **GREEDY, messages=messages[:1],
        tools=[CLAUDE_WEATHER_TOOL], tool_choice=forced,
    ) as stream:
        final = stream.get_final_message()
    call = next(b for b in final.content if b.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input["city"], str)
    assert final.stop_reason == "tool_use"


def test_anthropic_thinking(claude):
    r = claude.messages.create(
        model="smol-think", max_tokens=40, **GREEDY, thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "What is 2+2?"}],
    )
    assert r.content[0].type == "thinking" and r.content[0].thinking.strip()
    with claude.messages.stream(
        model="smol-think", max_tokens=40, **GREEDY, thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "What is 2+2?"}],
    ) as stream:
        kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
    assert "thinking_delta" in kinds
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(
            model="smol", max_tokens=8, thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "Hi"}])
    assert "does not support thinking" in str(e.value)
    # Adaptive thinking (what clients of current Claude models send) leaves it to the model: a
    # model that can think thinks, at the effort's level when one is given; one that cannot
    # answers.
    for extra in [{}, {"output_config": {"effort": "low"}}]:
        r = claude.messages.create(
            model="smol-think", max_tokens=40, **GREEDY, thinking={"type": "adaptive"}, **extra,
            messages=[{"role": "user", "content": "What is 2+2?"}])
        assert r.content[0].type == "thinking" and r.content[0].thinking.strip(), extra
    r = claude.messages.create(
        model="smol", max_tokens=8, thinking={"type": "adaptive"},
        messages=[{"role": "user", "content": "Hi"}])
    assert [b.type for b in r.content] == ["text"]


def test_anthropic_count_tokens_and_errors(claude):
    short = claude.messages.count_tokens(model="smol", messages=[{"role": "user", "content": "Hi"}])
    long = claude.messages.count_tokens(
        model="smol", messages=[{"role": "user", "content": "Hi " * 200}], system="Be brief.")
    assert 0 < short.input_tokens < long.input_tokens
    # Tools count; `none` leaves them out of the prompt, as /v1/messages does; a choice that
    # names no tool is refused as /v1/messages refuses it.
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    bare = claude.messages.count_tokens(model="smol-tools", messages=ask)
    tools = claude.messages.count_tokens(model="smol-tools", messages=ask, tools=[CLAUDE_WEATHER_TOOL])
    forced = claude.messages.count_tokens(model="smol-tools", messages=ask, tools=[CLAUDE_WEATHER_TOOL],
                                          tool_choice={"type": "tool", "name": "get_weather"})
    none = claude.messages.count_tokens(model="smol-tools", messages=ask, tools=[CLAUDE_WEATHER_TOOL],
                                        tool_choice={"type": "none"})
    assert bare.input_tokens + 20 < tools.input_tokens == forced.input_tokens
    assert none.input_tokens == bare.input_tokens
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.count_tokens(model="smol-tools", messages=ask, tools=[CLAUDE_WEATHER_TOOL],
                                     tool_choice={"type": "tool", "name": "nope"})
    assert "tool_choice names a function that is not among the tools: nope" in str(e.value)
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
    assert e.value.status_code == 404 and "not found" in str(e.value)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model="smol", max_tokens=8, messages=[
            {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}])
    assert "missing data required for image input" in str(e.value)
    assert e.value.body["error"]["type"] == "invalid_request_error" and e.value.body["request_id"]
    # Settings outside Anthropic's ranges are refused as Anthropic refuses them (Ollama's own
    # options are wider).
    hi = [{"role": "user", "content": "Hi"}]
    for extra, message in [
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"max_tokens": 8, "extra_body": {"temperature": 5}}, "temperature: Input should be less than or equal to 1"),
        ({"max_tokens": 8, "extra_body": {"top_p": -0.5}}, "top_p: Input should be greater than or equal to 0"),
        ({"max_tokens": 8, "extra_body": {"top_k": -1}}, "top_k: Input should be greater than or equal to 0"),
    ]:
        with pytest.raises(anthropic.BadRequestError) as e:
            claude.messages.create(model="smol", messages=hi, **extra)
        assert message in str(e.value), e.value


def test_anthropic_documents_and_blocks_it_does_not_use(claude):
    # A text document is read as text (it counts in the prompt); a block a local model has no
    # use for (a search result) is skipped rather than failing the turn, as Ollama skips it.
    question = {"type": "text", "text": "What colour is the sky?"}
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                               "data": "In this story the sky is green all day long."}}
    search = {"type": "search_result", "source": "https://example.com", "title": "Sky",
              "content": [{"type": "text", "text": "The sky is blue."}]}
    bare = claude.messages.count_tokens(model="smol", messages=[{"role": "user", "content": [question]}])
    with_doc = claude.messages.count_tokens(model="smol", messages=[{"role": "user", "content": [document, question]}])
    with_both = claude.messages.count_tokens(
        model="smol", messages=[{"role": "user", "content": [document, search, question]}])
    assert bare.input_tokens + 8 < with_doc.input_tokens == with_both.input_tokens
    r = claude.messages.create(model="smol", max_tokens=16, **GREEDY,
                               messages=[{"role": "user", "content": [document, search, question]}])
    assert r.content[0].text.strip()


# ---- langchain-ollama ----------------------------------------------------------------------


def test_langchain_chat_and_embeddings():
    llm = ChatOllama(
        model="smol", base_url=URL, temperature=0, num_predict=16, client_kwargs={"headers": AUTH}
    )
    assert llm.invoke("Say hello.").content.strip()
    assert "".join(c.content for c in llm.stream("Count to three.")).strip()
    emb = OllamaEmbeddings(model="smol", base_url=URL, client_kwargs={"headers": AUTH})
    docs = emb.embed_documents(["The cat sits on the mat.", "Stock markets fell."])
    q = emb.embed_query("A kitten rests on a rug.")
    assert cosine(q, docs[0]) > cosine(q, docs[1])
    # An embedding model, as LangChain users would pick for retrieval.
    emb = OllamaEmbeddings(model="minilm", base_url=URL, client_kwargs={"headers": AUTH})
    docs = emb.embed_documents(["The cat sits on the mat.", "Stock markets fell."])
    q = emb.embed_query("A kitten rests on a rug.")
    assert cosine(q, docs[0]) > cosine(q, docs[1]) + 0.3


# ---- API keys ------------------------------------------------------------------------------


def test_a_missing_or_wrong_key_is_refused_by_the_clients():
    for headers in [None, {"Authorization": "Bearer wrong"}]:
        with pytest.raises(ollama.ResponseError) as e:
            ollama.Client(host=URL, headers=headers).list()
        assert e.value.status_code == 401
    with pytest.raises(openai.AuthenticationError) as e:
        openai.OpenAI(base_url=URL + "/v1", api_key="wrong").models.list()
    assert e.value.status_code == 401
    assert "invalid API key" in str(e.value)
    with pytest.raises(anthropic.AuthenticationError) as e:
        anthropic.Anthropic(base_url=URL, api_key="wrong").messages.create(
            model="smol", max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
    assert e.value.body["error"]["type"] == "authentication_error"
