#!/usr/bin/env python3
"""Corral beside llama-server, in one run, alternating, with the same model file, threads,
context per slot and slots (issue 16's reference).

For each test model it starts llama-server (`-t T -c 4*CTX -np 4`) and Corral
(CORRAL_NUM_PARALLEL=4, num_ctx CTX, num_thread T), each on a free loopback port, and measures
at the client, taking turns run by run:

- decode tokens/s with 1 stream (128 tokens after the first) and aggregate tokens/s with 4
  concurrent streams (all tokens / wall time);
- prompt tokens/s: a ~1,000-token prompt, cold (every prompt starts differently), over its
  time to first token, the median of three a run;
- first-turn time to first token with a ~1,200-token history, and the next turn, which
  extends it (a cached prefix in both), the median of three successive turns a run;
- peak resident memory (VmHWM): llama-server, and Corral's server plus its runner.

Both get greedy sampling with Ollama's default repetition penalty (1.1 over the last 64
tokens: Corral's default, given to llama-server, whose own is 1.0), so both do the same work
and give the same answers (different answers would end at different lengths), raw prompts (no
template) and streaming. Each figure is the median of --runs runs. Prints a table, writes JSON. Standard library only. Usage: bench/versus.sh, or
  python3 bench/versus.py --corral PATH --llama-server PATH --models DIR [--runs 3]
"""
import argparse, json, os, socket, statistics, subprocess, tempfile, threading, time
import urllib.request

SLOTS = 4


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    return p


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=900)


def wait_up(url, proc):
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def peak_rss(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class LlamaServer:
    name = "llama-server"

    def __init__(self, exe, gguf, threads, ctx, log):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [exe, "-m", gguf, "-t", str(threads), "-tb", str(threads), "-c", str(ctx * SLOTS), "-np", str(SLOTS),
             "--host", "127.0.0.1", "--port", str(self.port), "--no-webui"],
            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        self.base = f"http://127.0.0.1:{self.port}"
        wait_up(self.base + "/health", self.proc)

    def stream(self, prompt, n):
        """(time to first token, decode seconds after it, tokens, prompt tokens)."""
        t0 = time.perf_counter()
        resp = post(self.base + "/completion", {"prompt": prompt, "n_predict": n, "temperature": 0,
                                                 "repeat_penalty": 1.1, "repeat_last_n": 64,
                                                 "stream": True, "cache_prompt": True})
        first = last = None
        timings = {}
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            ev = json.loads(line[6:])
            if ev.get("content") and first is None:
                first = time.perf_counter()
            if ev.get("stop"):
                timings = ev.get("timings", {})
        last = time.perf_counter()
        first = first or last
        return first - t0, last - first, timings.get("predicted_n", 0), timings.get("prompt_n", 0)

    def peak(self):
        return peak_rss(self.proc.pid)

    def stop(self):
        self.proc.terminate(); self.proc.wait(timeout=30)


class Corral:
    name = "corral"

    def __init__(self, exe, gguf, threads, ctx, log):
        self.port = free_port()
        self.work = tempfile.mkdtemp()
        env = dict(os.environ, CORRAL_HOST=f"127.0.0.1:{self.port}", CORRAL_MODELS=f"{self.work}/models",
                   CORRAL_KEEP_ALIVE="-1", CORRAL_NUM_PARALLEL=str(SLOTS), CORRAL_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen([exe, "serve"], env=env, stderr=open(log, "w"))
        self.base = f"http://127.0.0.1:{self.port}"
        wait_up(self.base + "/api/version", self.proc)
        mf = f"{self.work}/Modelfile"
        open(mf, "w").write(f"FROM {gguf}\nPARAMETER num_ctx {ctx}\nPARAMETER num_thread {threads}\n")
        subprocess.run([exe, "create", "m", "-f", mf], env=env, check=True, stderr=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL)
        post(self.base + "/api/generate", {"model": "m", "prompt": ""}).read()

    def stream(self, prompt, n):
        t0 = time.perf_counter()
        resp = post(self.base + "/api/generate", {"model": "m", "prompt": prompt, "raw": True,
                                                   "options": {"num_predict": n, "temperature": 0}})
        first = None
        done = {}
        for raw in resp:
            if not raw.strip():
                continue
            ev = json.loads(raw)
            if ev.get("response") and first is None:
                first = time.perf_counter()
            if ev.get("done"):
                done = ev
        last = time.perf_counter()
        first = first or last
        # Corral counts the whole prompt, cached part included, as Ollama does.
        prompt_n = done.get("prompt_eval_count", 0)
        return first - t0, last - first, done.get("eval_count", 0), prompt_n

    def peak(self):
        runners = subprocess.run(["pgrep", "-f", f"{self.work}/models"], capture_output=True, text=True).stdout.split()
        return peak_rss(self.proc.pid) + sum(peak_rss(int(p)) for p in runners)

    def stop(self):
        self.proc.terminate(); self.proc.wait(timeout=30)


WORDS = ("the river carried small boats past the old mill while children counted the clouds "
         "and a dog slept under the bridge near the market square").split()


def text(words, seed):
    return f"Story {seed}: " + " ".join(WORDS[(i * 7 + seed) % len(WORDS)] for i in range(words))


def measures(server, run):
    out = {}
    # Decode, one stream.
    _, decode_s, tokens, _ = server.stream(text(20, 1000 + run), 129)
    out["decode 1 stream tok/s"] = (tokens - 1) / decode_s if decode_s else 0
    # Decode, four streams at once.
    results = [None] * SLOTS
    def one(i):
        results[i] = server.stream(text(20, 2000 + run * 10 + i), 128)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(SLOTS)]
    t0 = time.perf_counter()
    for t in threads: t.start()
    for t in threads: t.join()
    wall = time.perf_counter() - t0
    out["decode 4 streams tok/s"] = sum(r[2] for r in results) / wall
    # Prompt evaluation, cold: the median of three prompts (short figures are the noisiest).
    rates = []
    for k in range(3):
        ttft, _, _, prompt_n = server.stream(text(850, 3000 + run * 10 + k), 1)
        rates.append(prompt_n / ttft)
    out["prompt tok/s (~1000, cold)"] = statistics.median(rates)
    # First turn of a long history, then three more turns, each extending the one before (a
    # cached prefix): their median.
    history = text(1000, 4000 + run)
    out["TTFT first turn (~1200) s"] = server.stream(history, 16)[0]
    turns = []
    for k in range(3):
        history += f" And then the story went on, part {k}:"
        turns.append(server.stream(history, 16)[0])
    out["TTFT second turn s"] = statistics.median(turns)
    return out


def arguments():
    """The arguments of a run beside llama-server (this script's, and bench/rpc.py's)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", required=True)
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--ctx", type=int, default=2048)
    return ap


def main():
    ap = arguments()
    ap.add_argument("--json", default="bench/versus.json")
    a = ap.parse_args()
    models = {"smol": "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma": "gemma-3-270m-q4_k_m.gguf"}
    work = tempfile.mkdtemp()
    results = {}
    for name, f in models.items():
        gguf = f"{a.models}/{f}"
        servers = [LlamaServer(a.llama_server, gguf, a.threads, a.ctx, f"{work}/{name}-llama.log"),
                   Corral(a.corral, gguf, a.threads, a.ctx, f"{work}/{name}-corral.log")]
        try:
            for s in servers:
                s.stream("warm up", 8)
            samples = {s.name: [] for s in servers}
            for run in range(a.runs):
                # Alternate which goes first, so a drift in the machine's load touches both.
                for s in (servers if run % 2 == 0 else servers[::-1]):
                    samples[s.name].append(measures(s, run))
            for s in servers:
                figures = {k: statistics.median(m[k] for m in samples[s.name]) for k in samples[s.name][0]}
                figures["peak RSS MB"] = s.peak() / 1e6
                results.setdefault(name, {})[s.name] = figures
        finally:
            for s in servers:
                s.stop()
    print(f"{a.threads} threads; {SLOTS} slots of {a.ctx} tokens; greedy; median of {a.runs}, alternating")
    print(f"{'model':<7}{'figure':<30}{'llama-server':>13}{'corral':>10}{'ratio':>8}")
    for name, by in results.items():
        for k in by["corral"]:
            l, c = by["llama-server"][k], by["corral"][k]
            # Higher is better for rates; lower for times and memory: the ratio says how
            # Corral compares (above 1: Corral is better).
            better = c / l if "tok/s" in k else (l / c if c else 0)
            print(f"{name:<7}{k:<30}{l:>13.3f}{c:>10.3f}{better:>8.2f}")
    with open(a.json, "w") as f:
        json.dump({"threads": a.threads, "slots": SLOTS, "ctx": a.ctx, "runs": a.runs, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
