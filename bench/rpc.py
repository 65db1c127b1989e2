#!/usr/bin/env python3
"""What splitting a model over RPC workers costs (issue 17), on loopback, in one run.

For SmolLM2 it measures, at the client, local runs and runs with 20 of the model's 31 layers
on two workers on this machine's loopback ports, taking turns run by run:

- corral: `corral serve` with num_gpu 0, and with CORRAL_RPC_SERVERS naming two
  `corral rpc-worker`s and num_gpu 20;
- llama-server: `llama-server`, and `llama-server --rpc ... -ngl 20` with two of llama.cpp's
  own `rpc-server`s (built beside it by bench/llama-server.sh; the two trees' protocol
  versions may differ, so each side uses its own workers).

Figures: decode tokens/s of one stream (128 tokens after the first), and prompt tokens/s of a
~1,000-token cold prompt over its time to first token. Greedy, one slot, T threads for the
server and for each worker. Loopback has no network cost: what it shows is the protocol's own
(each step sends the activations through every worker and waits for them), and the workers
sharing this machine's cores with the server. Standard library only. Usage:
  python3 bench/rpc.py --corral PATH --llama-server PATH --models DIR [--runs 3]
"""
import json, os, statistics, subprocess, sys, tempfile, time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import versus  # noqa: E402

GPU_LAYERS = 20
MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"


def listening(port, proc, what):
    import socket
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port}")


class Workers:
    """Two RPC workers on loopback: `cmd(port)` is the command line of one."""

    def __init__(self, cmd, log):
        self.ports = [versus.free_port(), versus.free_port()]
        self.logs = [f"{log}.{p}" for p in self.ports]
        self.procs = [subprocess.Popen(cmd(p), stdout=open(f, "w"), stderr=subprocess.STDOUT)
                      for p, f in zip(self.ports, self.logs)]
        for p, proc in zip(self.ports, self.procs):
            listening(p, proc, f"the worker on {p}")

    def all_used(self):
        """Whether every worker has had a client (ggml's rpc-server says so on stdout)."""
        return all("Accepted client connection" in open(f).read() for f in self.logs)

    def endpoints(self):
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def stop(self):
        for p in self.procs:
            p.terminate()
            p.wait(timeout=30)


class Corral(versus.Corral):
    def __init__(self, name, exe, gguf, threads, ctx, log, rpc=None):
        self.name = name
        self.port = versus.free_port()
        self.work = tempfile.mkdtemp()
        env = dict(os.environ, CORRAL_HOST=f"127.0.0.1:{self.port}", CORRAL_MODELS=f"{self.work}/models",
                   CORRAL_KEEP_ALIVE="-1", CORRAL_NUM_PARALLEL="1", CORRAL_NUM_THREADS=str(threads))
        if rpc:
            env["CORRAL_RPC_SERVERS"] = rpc
        self.proc = subprocess.Popen([exe, "serve"], env=env, stderr=open(log, "w"))
        self.base = f"http://127.0.0.1:{self.port}"
        versus.wait_up(self.base + "/api/version", self.proc)
        mf = f"{self.work}/Modelfile"
        layers = GPU_LAYERS if rpc else 0
        open(mf, "w").write(f"FROM {gguf}\nPARAMETER num_ctx {ctx}\nPARAMETER num_thread {threads}\n"
                            f"PARAMETER num_gpu {layers}\n")
        subprocess.run([exe, "create", "m", "-f", mf], env=env, check=True, stderr=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL)
        versus.post(self.base + "/api/generate", {"model": "m", "prompt": ""}).read()
        if rpc:
            # A worker left out would make this a local run under the split's name.
            ps = json.load(urllib.request.urlopen(self.base + "/api/ps"))["models"][0]
            if not ps.get("size_remote") or ps.get("warning"):
                raise SystemExit(f"corral did not split the model: {ps}")


class LlamaServer(versus.LlamaServer):
    def __init__(self, name, exe, gguf, threads, ctx, log, workers=None):
        self.name = name
        self.port = versus.free_port()
        extra = ["--rpc", workers.endpoints(), "-ngl", str(GPU_LAYERS)] if workers else ["-ngl", "0"]
        self.proc = subprocess.Popen(
            [exe, "-m", gguf, "-t", str(threads), "-tb", str(threads), "-c", str(ctx), "-np", "1",
             "--host", "127.0.0.1", "--port", str(self.port), "--no-webui", *extra],
            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        self.base = f"http://127.0.0.1:{self.port}"
        versus.wait_up(self.base + "/health", self.proc)
        if workers and not workers.all_used():
            raise SystemExit("llama-server did not split the model: a worker had no client")


def measures(server, run):
    _, decode_s, tokens, _ = server.stream(versus.text(20, 1000 + run), 129)
    rates = []
    for k in range(3):
        ttft, _, _, prompt_n = server.stream(versus.text(850, 3000 + run * 10 + k), 1)
        rates.append(prompt_n / ttft)
    return {"decode tok/s": (tokens - 1) / decode_s if decode_s else 0,
            "prompt tok/s (~1000, cold)": statistics.median(rates)}


def main():
    ap = versus.arguments()
    a = ap.parse_args()
    gguf = f"{a.models}/{MODEL}"
    rpc_server = os.path.join(os.path.dirname(a.llama_server), "ggml-rpc-server")
    work = tempfile.mkdtemp()
    t = str(a.threads)
    workers = []
    try:
        corral_workers = Workers(lambda p: [a.corral, "rpc-worker", "--listen", f"127.0.0.1:{p}", "--threads", t],
                                 f"{work}/corral-worker")
        workers.append(corral_workers)
        llama_workers = Workers(lambda p: [rpc_server, "-H", "127.0.0.1", "-p", str(p), "-t", t],
                                f"{work}/rpc-server")
        workers.append(llama_workers)
        # One at a time: a worker serves one client, and each setup gets the machine alone.
        setups = [
            lambda: Corral("corral local", a.corral, gguf, a.threads, a.ctx, f"{work}/c.log"),
            lambda: Corral("corral split", a.corral, gguf, a.threads, a.ctx, f"{work}/cs.log",
                           corral_workers.endpoints()),
            lambda: LlamaServer("llama-server local", a.llama_server, gguf, a.threads, a.ctx, f"{work}/l.log"),
            lambda: LlamaServer("llama-server split", a.llama_server, gguf, a.threads, a.ctx, f"{work}/ls.log",
                                llama_workers),
        ]
        samples = {}
        for run in range(a.runs):
            order = setups if run % 2 == 0 else setups[::-1]
            for make in order:
                s = make()
                try:
                    s.stream("warm up", 8)
                    samples.setdefault(s.name, []).append(measures(s, run))
                finally:
                    s.stop()
        print(f"SmolLM2 Q4_1; split: {GPU_LAYERS} of 31 layers on two loopback workers; {a.threads} threads "
              f"for the server and each worker; greedy; median of {a.runs}, alternating")
        keys = list(next(iter(samples.values()))[0])
        print(f"{'setup':<20}" + "".join(f"{k:>30}" for k in keys))
        med = {n: {k: statistics.median(m[k] for m in ms) for k in keys} for n, ms in samples.items()}
        for n, figs in med.items():
            print(f"{n:<20}" + "".join(f"{figs[k]:>30.1f}" for k in keys))
        for who in ("corral", "llama-server"):
            split, local = med[f"{who} split"], med[f"{who} local"]
            print(f"{who} split/local: " + ", ".join(
                f"{k} {split[k] / local[k]:.2f}x" if local[k] else f"{k} -" for k in keys))
    finally:
        for w in workers:
            w.stop()


if __name__ == "__main__":
    main()
