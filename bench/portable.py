#!/usr/bin/env python3
"""The portable bundle against a native build, side by side in one run.

The portable build loads llama.cpp's CPU kernels from a module picked at run time (one per
instruction-set level) and compiles the Rust code for baseline x86-64; a native build compiles
everything with -march=native. Both serve the same model on their own server, with the same
threads; their runs alternate, so a change in the machine's load touches both alike.

For each test model and build: prompt tokens/s over a ~500-token raw prompt (prompt tokens over
the time to the first token, each prompt new so nothing is cached) and decode tokens/s over 128
tokens, median of --runs. Prints a table with the ratio portable/native.

  python3 bench/portable.py --portable BUNDLE/bin/corral --native PATH/corral --models DIR [--runs 5]
"""
import argparse, json, statistics, subprocess, tempfile

from concurrency import cpu_model, start_server
from speed import text_of, timed_stream

MODELS = {"smol": "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma": "gemma-3-270m-q4_k_m.gguf"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--portable", required=True)
    ap.add_argument("--native", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="bench/portable.json")
    a = ap.parse_args()
    work = tempfile.mkdtemp()
    servers = {}
    try:
        for build, exe in (("native", a.native), ("portable", a.portable)):
            server, base, env = start_server(exe, f"{work}/{build}", f"{work}/{build}.log",
                                             CORRAL_NUM_PARALLEL="1", CORRAL_NUM_THREADS=str(a.threads))
            servers[build] = (server, base)
            for name, f in MODELS.items():
                mf = f"{work}/Modelfile.{name}"
                open(mf, "w").write(f"FROM {a.models}/{f}\n")
                subprocess.run([exe, "create", name, "-f", mf], env=env, check=True, stderr=subprocess.DEVNULL)
        results = {}
        for name in MODELS:
            figures = {b: {"prompt": [], "decode": []} for b in servers}
            for run in range(a.runs + 1):
                for build, (_, base) in servers.items():
                    # A new prompt each time (a number in front): no cached prefix.
                    prompt = f"{run} {build} " + text_of(2400)
                    opts = {"temperature": 0, "num_predict": 128, "num_ctx": 2048, "seed": 0}
                    first, last, final = timed_stream(base, "/api/generate",
                                                      {"model": name, "prompt": prompt, "raw": True, "options": opts})
                    if run == 0:
                        continue  # warm-up: loads the model
                    # The whole prompt; with a new prompt each time, all of it was evaluated.
                    figures[build]["prompt"].append(final["prompt_eval_count"] / first)
                    figures[build]["decode"].append((final["eval_count"] - 1) / (last - first))
            results[name] = {b: {k: statistics.median(v) for k, v in f.items()} for b, f in figures.items()}
        print(f"CPU: {cpu_model()}, {a.threads} threads, median of {a.runs} alternating runs")
        print(f"{'model':6} {'figure':28} {'native':>9} {'portable':>9} {'ratio':>7}")
        for name, r in results.items():
            for k, label in (("prompt", "prompt tokens/s (~500)"), ("decode", "decode tokens/s (128)")):
                n, p = r["native"][k], r["portable"][k]
                print(f"{name:6} {label:28} {n:9.1f} {p:9.1f} {p / n:7.3f}")
        json.dump(results, open(a.json, "w"), indent=2)
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
