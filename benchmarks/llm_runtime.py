"""The embedded LLM before and after issue 14, on the same SciFact passages, in one run.

    python benchmarks/llm_runtime.py --data /work/shared/data/scifact --n 100 --n-large 30

Configurations, run one after the other on the same seeded sample (same passages, same few-shot examples, same
sampling seeds, no LLM cache, fresh work folders):

- `before`: llama-cpp-python's server (compiled; a child process) with the document-first few-shot template
  (`query_few_shot_doc_first`), one request at a time: what `qkrag generate` did before;
- `after`: xllamacpp (prebuilt wheel, in-process) with `query_few_shot`, whose examples are a system-part prefix every
  passage shares, so llama.cpp evaluates it once (prompt caching is on in both; only the order differs);
- `after-slots2`: the same with two slots and two requests at a time (llama.cpp batches them);
- `large` (on `--n-large` passages): `after` with Qwen2.5-Coder-1.5B (`--llm-model qwen2.5-coder-1.5b-instruct-q4_k_m`).

Per configuration: LLM calls per second of the LLM stage, pairs kept and pairs per second of the whole generation
(LLM stage + round trip + negatives), CPU seconds the model used per call (less sensitive than wall time to other
people's jobs on a shared machine), and the load average around it. `--configs` picks some of them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _common import markdown_table, save

from qkrag.data import load_beir
from qkrag.embed.encoders import make_encoder
from qkrag.llm.client import LLM, LLMConfig
from qkrag.llm.local import LocalLLMServer, model_file
from qkrag.pairs.generate import GenerateConfig, draw_examples, generate_pairs

ROOT = Path(__file__).resolve().parents[1]
SMALL, LARGE = "qwen2.5-coder-0.5b-instruct-q4_k_m", "qwen2.5-coder-1.5b-instruct-q4_k_m"
CONFIGS = {  # name: (runtime, template, model, slots)
    "before": ("llama-cpp-python", "query_few_shot_doc_first", SMALL, 1),
    "after": ("xllamacpp", "query_few_shot", SMALL, 1),
    "after-slots2": ("xllamacpp", "query_few_shot", SMALL, 2),
    "large": ("xllamacpp", "query_few_shot", LARGE, 1),
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def llama_cpp_python_server(model: str, threads: int):
    """The pre-issue-14 runtime: `python -m llama_cpp.server` as a child process. Yields (base URL, pid)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_file(model)), "--model_alias", model,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads),
           "--chat_format", "chatml"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).close()
                break
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/v1", proc.pid
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def serving(runtime: str, model: str, slots: int, threads: int):
    """(LLM without a cache, pid whose CPU time is the model's, seconds to start) for one configuration."""
    t0 = time.perf_counter()
    if runtime == "llama-cpp-python":
        with llama_cpp_python_server(model, threads) as (url, pid):
            config = LLMConfig(model=model, base_url=url, concurrency=1, timeout=600, cache_scope="")
            yield LLM(config, cache=False), pid, time.perf_counter() - t0
        return
    with LocalLLMServer(model, n_threads=threads, slots=slots) as server:
        yield LLM(server.config(timeout=600), cache=False), os.getpid(), time.perf_counter() - t0


def run_config(name: str, collection, encoder, examples: tuple[str, ...], n: int, threads: int) -> dict:
    runtime, template, model, slots = CONFIGS[name]
    work = ROOT / ".qkrag" / "bench" / f"llm-runtime-{name}"
    shutil.rmtree(work, ignore_errors=True)  # a fresh run: nothing from the journal
    config = GenerateConfig(sample=n, seed=0, examples=examples, candidates=2, per_call=2, template=template)
    load_before = os.getloadavg()[0]
    with serving(runtime, model, slots, threads) as (llm, pid, start_seconds):
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        result = generate_pairs(collection.corpus, encoder, llm, config, work)
        seconds = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - cpu0
        usage = llm.usage
    stats = result.stats
    llm_seconds, calls = stats["seconds"]["llm_stage"], llm.calls_made
    return {
        "config": name, "runtime": runtime, "template": template, "model": model, "slots": slots,
        "threads": threads, "passages": stats["counts"]["passages"], "calls": calls,
        "start_s": round(start_seconds, 1), "llm_s": round(llm_seconds, 1),
        "s_per_call": round(llm_seconds / calls, 2) if calls else None,
        "calls_per_s": round(calls / llm_seconds, 3) if llm_seconds else None,
        # CPU seconds of the process that ran the model (for xllamacpp that is this process, so it also counts the
        # round trip's encoder: an upper bound for the model)
        "cpu_s_per_call": round(cpu / calls, 2) if calls else None,
        "pairs": len(result), "pairs_per_s": round(len(result) / seconds, 4), "total_s": round(seconds, 1),
        "pairs_per_passage": round(len(result) / max(1, stats["counts"]["passages"]), 3),
        "failed_calls": stats["counts"].get("failed_calls", 0),
        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "kept_fraction": round(stats["kept_fraction"], 3), "pair_ranks": stats["pair_ranks"],
        "form": stats["form"], "sample_queries": list(result.dataset["query"][:5]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--n", type=int, default=100, help="passages for the 0.5B configurations")
    parser.add_argument("--n-large", type=int, default=30, help="passages for the 1.5B configuration")
    parser.add_argument("--threads", type=int, default=None, help="model threads (default: the library's default)")
    parser.add_argument("--configs", default="before,after,after-slots2,large")
    parser.add_argument("--name", default="llm_runtime")
    args = parser.parse_args()
    threads = args.threads or LocalLLMServer().n_threads
    collection = load_beir(args.data, split="train")
    examples = draw_examples(collection.queries.values(), 4, 0)  # what `qkrag bench` uses: 4 seeded train queries
    encoder = make_encoder(None)
    rows = []
    for name in args.configs.split(","):  # saved after each configuration: a long run killed midway keeps its rows
        n = args.n_large if name == "large" else args.n
        rows.append(run_config(name, collection, encoder, examples, n, threads))
        print(rows[-1], flush=True)
        report(args, rows, threads)


def report(args: argparse.Namespace, rows: list[dict], threads: int) -> None:
    columns = ["config", "runtime", "model", "slots", "passages", "calls", "start_s", "s_per_call", "calls_per_s",
               "cpu_s_per_call", "pairs", "pairs_per_passage", "pairs_per_s", "total_s", "load_before",
               "load_after"]
    body = (f"SciFact (`{args.data}`), seeded sample, 4 few-shot examples from the train queries, one call per passage "
            f"(2 candidates), {threads} model thread(s), no LLM cache. The machine is shared: see the load columns.\n\n"
            + markdown_table(rows, columns))
    save(args.name, {"rows": rows, "threads": threads, "data": args.data}, body)

if __name__ == "__main__":
    main()
