#!/usr/bin/env python3
"""Corral against the engine's own limit, time to first token, and memory.

For each test model:
- engine limit: `corral-engine`'s `limit` example drives the engine in-process (same model,
  same threads, greedy): prompt tokens/s over a ~512-token prompt (prompt tokens / time to the
  first token) and decode tokens/s over 128 tokens (tokens after the first / their time);
- Corral end to end: the same prompt text as a raw `/api/generate` over HTTP to a real
  `corral serve`, timed the same way at the client, and the ratio to the engine;
- time to first token: a cold load (the server has not loaded the model), a warm model, and a
  chat with a ~1,200-token history, then its second turn (which reuses the slot's KV cache);
- peak resident memory (VmHWM) of the server and of its runner, beside the model file size.

Each figure is the median of --runs runs (after one warm-up). Prints a table, writes JSON.
Standard library only. Usage: bench/run.sh, or
  python3 bench/speed.py --corral PATH --limit PATH --models DIR [--runs 3] [--threads N]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
import urllib.request

from concurrency import cpu_model, start_server

SENTENCES = [
    "The river bent slowly around the old mill, where the miller kept his ledgers in a tin box.",
    "Every spring the villagers repaired the bridge with oak planks cut from the northern woods.",
    "A merchant from the coast arrived with salt, dyed cloth, and news of a storm at sea.",
    "The children counted the geese that crossed the valley and argued about the number.",
    "In the evening the baker sold the last loaves at half price to the carters and the monks.",
    "The schoolmaster taught arithmetic with pebbles, and geography with a map drawn on hide.",
    "When the harvest failed, the council opened the granary and shared the barley by lot.",
    "Travellers said the road to the capital was safe in summer but flooded every autumn.",
]


def text_of(chars):
    out, i = [], 0
    while sum(len(s) + 1 for s in out) < chars:
        out.append(SENTENCES[i % len(SENTENCES)])
        i += 1
    return " ".join(out)


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=900)


def timed_stream(base, path, body):
    """(seconds to the first text, seconds to the last text, final object)."""
    t0 = time.perf_counter()
    first = last = None
    final = None
    for line in post(base + path, body):
        if not line.strip():
            continue
        v = json.loads(line)
        if "error" in v:
            sys.exit(f"error from corral: {v['error']}")
        piece = v.get("response") or (v.get("message") or {}).get("content")
        now = time.perf_counter()
        if piece:
            first = first or now
            last = now
        if v.get("done"):
            final = v
    return first - t0, last - t0, final


def peak_rss_mb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None


def runner_pid(store):
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if " runner " in cmd and store in cmd:
                return int(p)


SAMPLING = {"temperature": 0, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1, "repeat_last_n": 64, "seed": 0}


# Gemma 3's GGUF has no chat template; without one only the last message would be rendered.
TEMPLATES = {
    "gemma": 'TEMPLATE """{{- range .Messages }}{{ if eq .Role "assistant" }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n'
             '{{ else }}<start_of_turn>user\n{{ .Content }}<end_of_turn>\n{{ end }}{{ end }}<start_of_turn>model\n"""\n',
}


def engine_run(a, gguf, prompt_file):
    """One in-process engine run (after its own warm-up run)."""
    lines = subprocess.run([a.limit, gguf, prompt_file, str(a.threads), str(a.gen), "1"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    return [json.loads(l) for l in lines if l.startswith("{")][0]


def bench_model(a, name, gguf, prompt_text, work):
    med = statistics.median
    out = {}
    prompt_file = f"{work}/prompt.txt"
    open(prompt_file, "w").write(prompt_text)

    # Corral over HTTP: a fresh server, so the first request is a cold load.
    store = f"{work}/{name}-models"
    server, base, env = start_server(a.corral, store, f"{work}/{name}-server.log",
                                     CORRAL_NUM_PARALLEL="1", CORRAL_NUM_THREADS=str(a.threads))
    try:
        mf = f"{work}/Modelfile.{name}"
        open(mf, "w").write(f"FROM {gguf}\n" + TEMPLATES.get(name, ""))
        subprocess.run([a.corral, "create", name, "-f", mf], env=env, check=True, stderr=subprocess.DEVNULL)
        short = {"temperature": 0, "num_predict": 4}
        cold, _, _ = timed_stream(base, "/api/chat", {"model": name, "messages": [{"role": "user", "content": "Hello!"}], "options": short})
        warm = [timed_stream(base, "/api/chat", {"model": name, "messages": [{"role": "user", "content": f"Hello number {i}!"}], "options": short})[0]
                for i in range(a.runs)]
        # The same raw prompts the engine saw, timed at the client. Engine and Corral runs take
        # turns, so a change in the machine's load touches both alike.
        e2e, eng = [], []
        for run in range(a.runs + 1):
            first, last, final = timed_stream(base, "/api/generate", {"model": name, "prompt": f"Run {run}: {prompt_text}", "raw": True,
                                                                      "options": dict(SAMPLING, num_predict=a.gen)})
            if run:
                # prompt_eval_count is the whole prompt (cached tokens too, as Ollama counts);
                # these prompts differ from the first tokens on, so it is what was evaluated.
                e2e.append((final["prompt_eval_count"] / first, (final["eval_count"] - 1) / (last - first), final["eval_count"]))
                eng.append(engine_run(a, gguf, prompt_file))
        out["engine"] = {"prompt_tokens": eng[0]["prompt_tokens"], "prompt_tps": med(e["prompt_tps"] for e in eng),
                         "decode_tps": med(e["decode_tps"] for e in eng), "gen_tokens": med(e["gen_tokens"] for e in eng)}
        out["corral"] = {"prompt_tps": med(x[0] for x in e2e), "decode_tps": med(x[1] for x in e2e), "gen_tokens": med(x[2] for x in e2e)}
        # A chat with a long history, then its second turn.
        turn1, turn2, hist_tokens = [], [], []
        for run in range(a.runs):
            history = [{"role": "system", "content": f"Conversation {run}. You are a helpful assistant."}]
            while sum(len(m["content"]) for m in history) < 4800:
                history.append({"role": "user", "content": text_of(300)})
                history.append({"role": "assistant", "content": text_of(250)})
            history.append({"role": "user", "content": "Summarize the story in one sentence."})
            t1, _, f1 = timed_stream(base, "/api/chat", {"model": name, "messages": history, "options": dict(SAMPLING, num_predict=16)})
            reply = f1 and (f1.get("message") or {}).get("content", "")
            hist_tokens.append(f1["prompt_eval_count"])
            history.append({"role": "assistant", "content": reply or "It is a village story."})
            history.append({"role": "user", "content": "Thanks. Who is in it?"})
            t2, _, f2 = timed_stream(base, "/api/chat", {"model": name, "messages": history, "options": dict(SAMPLING, num_predict=16)})
            turn1.append(t1); turn2.append(t2)
        out["ttft"] = {"cold_s": cold, "warm_s": med(warm), "chat_turn1_s": med(turn1), "chat_turn2_s": med(turn2),
                       "history_tokens": med(hist_tokens)}
        rp = runner_pid(store)
        out["memory_mb"] = {"server_peak": peak_rss_mb(server.pid), "runner_peak": rp and peak_rss_mb(rp),
                            "model_file": os.path.getsize(gguf) / 2**20}
    finally:
        server.terminate(); server.wait(timeout=30)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", required=True)
    ap.add_argument("--limit", required=True, help="the corral-engine `limit` example binary")
    ap.add_argument("--models", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", default="bench/speed.json")
    a = ap.parse_args()
    work = tempfile.mkdtemp()
    prompt_text = text_of(2300)  # about 512 tokens
    models = {"smol": "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma": "gemma-3-270m-q4_k_m.gguf"}
    results = {n: bench_model(a, n, f"{a.models}/{f}", prompt_text, work) for n, f in models.items()}
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; {a.threads} threads; {a.gen} generated tokens; median of {a.runs}")
    print(f"{'model':<7}{'figure':<34}{'engine':>10}{'corral':>10}{'ratio':>8}")
    for n, r in results.items():
        e, c, t, m = r["engine"], r["corral"], r["ttft"], r["memory_mb"]
        print(f"{n:<7}{'prompt tokens/s (%d tokens)' % e['prompt_tokens']:<34}{e['prompt_tps']:>10.1f}{c['prompt_tps']:>10.1f}{c['prompt_tps'] / e['prompt_tps']:>8.3f}")
        print(f"{n:<7}{'decode tokens/s (%d tokens)' % c['gen_tokens']:<34}{e['decode_tps']:>10.1f}{c['decode_tps']:>10.1f}{c['decode_tps'] / e['decode_tps']:>8.3f}")
        print(f"{n:<7}{'time to first token, cold load':<34}{'':>10}{t['cold_s']:>9.3f}s")
        print(f"{n:<7}{'time to first token, warm':<34}{'':>10}{t['warm_s']:>9.3f}s")
        print(f"{n:<7}{'TTFT chat, %d-token history' % t['history_tokens']:<34}{'':>10}{t['chat_turn1_s']:>9.3f}s")
        print(f"{n:<7}{'TTFT its second turn (cached)':<34}{'':>10}{t['chat_turn2_s']:>9.3f}s{t['chat_turn2_s'] / t['chat_turn1_s']:>8.3f}")
        print(f"{n:<7}{'peak RSS server / runner (MB)':<34}{m['server_peak']:>10.1f}{m['runner_peak'] or 0:>10.1f}  model file {m['model_file']:.1f} MB")
    with open(a.json, "w") as f:
        json.dump({"machine": cpu_model(), "cpus": os.cpu_count(), "threads": a.threads, "runs": a.runs, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
