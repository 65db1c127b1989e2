#!/usr/bin/env python3
"""Aggregate decode throughput of Corral with 1, 2, 4 and 8 concurrent streams.

Starts its own `corral serve` (CORRAL_NUM_PARALLEL=8) on a free loopback port with a throwaway
store, imports the test models, and for each model and each concurrency level sends that many
streaming /api/generate requests at once (num_predict tokens each, temperature 0, distinct
prompts). Aggregate tokens/s = all generated tokens / wall time from the first request to the
last final line. Each figure is the median of --runs runs. Prints a table, writes JSON.

Standard library only. Usage: bench/run.sh (builds first) or
  python3 bench/concurrency.py --corral PATH --models DIR [--runs 3] [--num-predict 128]
"""
import argparse, json, os, platform, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

def post(url, body, stream=False):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=600)

def one_stream(base, model, prompt, n, out, i):
    resp = post(base + "/api/generate", {"model": model, "prompt": prompt, "options": {"num_predict": n, "temperature": 0}})
    last = None
    for line in resp:
        if line.strip():
            last = json.loads(line)
    out[i] = last

def measure(base, model, streams, n):
    out = [None] * streams
    threads = [threading.Thread(target=one_stream, args=(base, model, f"Story {i}: once upon a time, a", n, out, i)) for i in range(streams)]
    t0 = time.perf_counter()
    for t in threads: t.start()
    for t in threads: t.join()
    wall = time.perf_counter() - t0
    bad = [o for o in out if not o or "eval_count" not in o]
    if bad:
        sys.exit(f"a stream ended without counts: {bad[0]}")
    tokens = sum(o["eval_count"] for o in out)
    return tokens / wall

def start_server(corral, store, log, **settings):
    """A `corral serve` on a free loopback port with its own store; (process, base URL, env)."""
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    env = dict(os.environ, CORRAL_HOST=f"127.0.0.1:{port}", CORRAL_MODELS=store, CORRAL_KEEP_ALIVE="-1", **settings)
    server = subprocess.Popen([corral, "serve"], env=env, stderr=open(log, "w"))
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/api/version"); break
        except OSError:
            time.sleep(0.1)
    return server, base, env

def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--num-predict", type=int, default=128)
    ap.add_argument("--json", default="bench/concurrency.json")
    a = ap.parse_args()

    work = tempfile.mkdtemp()
    server, base, env = start_server(a.corral, f"{work}/models", f"{work}/server.log", CORRAL_NUM_PARALLEL="8")
    try:
        models = {"smol": "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma": "gemma-3-270m-q4_k_m.gguf"}
        for name, f in models.items():
            mf = f"{work}/Modelfile.{name}"
            open(mf, "w").write(f"FROM {a.models}/{f}\n")
            subprocess.run([a.corral, "create", name, "-f", mf], env=env, check=True, stderr=subprocess.DEVNULL)
            post(base + "/api/generate", {"model": name, "prompt": ""}).read()  # load
        results = {}
        for name in models:
            one_stream(base, name, "warm up", 8, [None], 0)
            for streams in (1, 2, 4, 8):
                rates = [measure(base, name, streams, a.num_predict) for _ in range(a.runs)]
                results.setdefault(name, {})[streams] = statistics.median(rates)
        threads = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
        print(f"machine: {cpu_model()}, {threads} CPUs; CORRAL_NUM_PARALLEL=8; num_predict {a.num_predict}; median of {a.runs}")
        print(f"{'model':<8}{'streams':>9}{'tokens/s':>11}{'vs 1 stream':>13}")
        for name, by in results.items():
            for streams, rate in by.items():
                print(f"{name:<8}{streams:>9}{rate:>11.1f}{rate / by[1]:>12.2f}x")
        with open(a.json, "w") as f:
            json.dump({"machine": cpu_model(), "cpus": threads, "num_predict": a.num_predict, "runs": a.runs, "aggregate_tokens_per_s": results}, f, indent=2)
    finally:
        server.terminate(); server.wait(timeout=30)

if __name__ == "__main__":
    main()
