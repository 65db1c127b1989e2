#!/usr/bin/env python3
"""Prompt-lookup speculation against none, on an answer that copies from its prompt (issue 16).

For each test model it starts Corral (one slot, num_thread T) and asks, greedily, for a
300-token reproduction of a passage given twice in the prompt, with prompt_lookup_num_tokens
0 (off) and the values of --lookup, taking turns run by run. It prints decode tokens/s (the
server's own eval_count / eval_duration), the speed-up over no speculation, and the acceptance
rate (draft_accepted_tokens / draft_tokens), each the median of --runs runs, and checks that
every answer is the same text as the one without speculation. Standard library only. Usage:
  python3 bench/speculate.py --corral PATH --models DIR [--runs 3] [--lookup 4,8,12]
"""
import argparse, json, os, socket, statistics, subprocess, tempfile, time
import urllib.request

PASSAGE = ("In the beginning the town had one road, one well and one bell. The road ran from the "
           "river to the hills, the well stood where the market is now, and the bell hung in a "
           "wooden frame beside the mill. Every morning the miller rang it twice, once for the "
           "farmers and once for the fishermen, and every evening he rang it three times, so "
           "that the children would come home before dark. When the first school was built the "
           "bell was moved to its roof, and the miller's grandson, who was the first teacher, "
           "rang it at eight and at four. Years later, when the railway came, the station got "
           "a bell of its own, louder and higher, and the old one was taken down, cleaned, and "
           "put in the museum, where it still hangs, with a card that tells its story in three "
           "languages and a small sign that asks visitors, politely, not to ring it.")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    return p


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=900).read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corral", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--lookup", default="4,8,12")
    ap.add_argument("--json", default="bench/speculate.json")
    a = ap.parse_args()
    ks = [0] + [int(k) for k in a.lookup.split(",")]
    models = {"smol": "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma": "gemma-3-270m-q4_k_m.gguf"}
    prompt = (f"Copy the following passage exactly.\n\n{PASSAGE}\n\nOnce more, exactly:\n\n{PASSAGE}\n\n"
              f"And a third time, exactly:\n\n")
    results = {}
    for name, f in models.items():
        port = free_port()
        work = tempfile.mkdtemp()
        env = dict(os.environ, CORRAL_HOST=f"127.0.0.1:{port}", CORRAL_MODELS=f"{work}/models",
                   CORRAL_KEEP_ALIVE="-1", CORRAL_NUM_THREADS=str(a.threads))
        proc = subprocess.Popen([a.corral, "serve"], env=env, stderr=open(f"{work}/server.log", "w"))
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(base + "/api/version", timeout=2); break
                except Exception:
                    time.sleep(0.1)
            open(f"{work}/Modelfile", "w").write(f"FROM {a.models}/{f}\nPARAMETER num_ctx 2048\n")
            subprocess.run([a.corral, "create", "m", "-f", f"{work}/Modelfile"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ask = lambda k: post(base + "/api/generate", {
                "model": "m", "prompt": prompt, "stream": False,
                "options": {"temperature": 0, "num_predict": 300, "prompt_lookup_num_tokens": k}})
            ask(0)  # load and warm up
            samples = {k: [] for k in ks}
            reference = None
            for run in range(a.runs):
                for k in (ks if run % 2 == 0 else ks[::-1]):
                    r = ask(k)
                    if k == 0:
                        reference = reference or r["response"]
                    samples[k].append(r)
            for k in ks:
                for r in samples[k]:
                    if r["response"] != samples[0][0]["response"]:
                        raise SystemExit(f"{name}: lookup {k} changed the answer")
            row = {}
            for k in ks:
                tps = statistics.median(r["eval_count"] / (r["eval_duration"] / 1e9) for r in samples[k])
                acc = statistics.median((r.get("draft_accepted_tokens", 0) / r["draft_tokens"]) if r.get("draft_tokens") else 0
                                        for r in samples[k])
                row[k] = {"tok/s": tps, "acceptance": acc, "tokens": samples[k][0]["eval_count"]}
            results[name] = row
        finally:
            proc.terminate(); proc.wait(timeout=30)
    print(f"prompt-lookup speculation, {a.threads} threads, 300-token copy, greedy, median of {a.runs}")
    print(f"| model | prompt_lookup_num_tokens | decode tok/s | speed-up | acceptance |")
    print(f"|---|---|---|---|---|")
    for name, row in results.items():
        base_tps = row[0]["tok/s"]
        for k, v in row.items():
            acc = f"{v['acceptance']:.0%}" if k else "-"
            print(f"| {name} | {k or 'off'} | {v['tok/s']:.1f} | {v['tok/s'] / base_tps:.2f}x | {acc} |")
    json.dump(results, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
