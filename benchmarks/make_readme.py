"""Regenerate the README's results section from the committed results (results/*.json), so the README never states
a number the benchmarks did not produce.

    python benchmarks/make_readme.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from _common import RESULTS, load_result

ROOT = Path(__file__).resolve().parents[1]


EXAMPLE = "loaf stayed dense and flat, the dough never puffed up"
MAIN_JOBS = ("homeqa_llm", "squad-mix_ict", "squad-mix_llm", "scifact_ict", "scifact_llm", "scifact_llm-ict", "cranfield_ict",
             "cranfield_llm")


def _rows(main: dict) -> dict[str, dict]:
    return {r["method"]: r for r in main["rows"]}


def _f(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _delta(r: dict) -> str:
    """Δ nDCG@10 against the row's own base: hybrid for the hybrid rows, cosine for the rest."""
    key = "vs_hybrid" if "vs_hybrid_delta" in r else "vs_cosine"
    if f"{key}_delta" not in r:
        return "—"
    return f"{r[f'{key}_delta']:+.3f} ({r[f'{key}_p_value']:.2g}) vs {key[3:]}"


def _part(r: dict, part: str) -> str:
    if r.get(f"ndcg@10_{part}") is None:
        return "—" if f"n_{part}" not in r else f"none (n={r[f'n_{part}']})"
    return f"{r[f'ndcg@10_{part}']:.3f} ({r[f'delta_ndcg@10_{part}']:+.3f}, n={r[f'n_{part}']})"


def summary() -> str:
    """The lead: figures that are not a prior over documents first, then what the SciFact human-pairs gain is."""
    out = []
    squad = load_result("main_job_squad-mix_llm")
    if squad:
        r = _rows(squad)
        cos, syn, bm, hyb = r.get("cosine"), r.get("qk_synthetic"), r.get("bm25"), r.get("hybrid_qk_synthetic")
        if cos and syn:
            out.append(
                f"**Where cosine is the wrong similarity** (squad-mix: SQuAD paragraphs mixed with question posts; test "
                f"articles disjoint from anything a human judged for training): raw cosine scores {cos['ndcg@10']:.3f} "
                f"nDCG@10 with {cos.get('question_share@5', float('nan')):.0%} of a question's top 5 being other "
                f"questions. A Q/K projection trained only on pairs the embedded 0.5B model wrote from the corpus "
                f"scores {syn['ndcg@10']:.3f} ({syn['vs_cosine_delta']:+.3f}, p = {syn['vs_cosine_p_value']:.2g}; "
                f"questions in the top 5: {syn.get('question_share@5', float('nan')):.0%}); on test queries whose "
                f"paragraph was never a synthetic positive it scores {_f(syn.get('ndcg@10_novel'))} against cosine's "
                f"{_f(syn.get('base_ndcg@10_novel'))}."
                + (f" BM25 alone scores {bm['ndcg@10']:.3f}; fused with BM25 the projection scores "
                   f"{hyb['ndcg@10']:.3f}, {_delta(hyb)}." if bm and hyb else ""))
    ict = load_result("main_job_squad-mix_ict")
    if ict and (r := _rows(ict)).get("qk_synthetic") and r.get("hybrid_qk_synthetic"):
        syn, hyb = r["qk_synthetic"], r["hybrid_qk_synthetic"]
        out.append(f"**The same corpus without an LLM** (ICT pairs cut from {ict['config']['sample']} sampled "
                   f"passages; the recipe and epoch chosen on the judged train questions): the projection scores "
                   f"{syn['ndcg@10']:.3f} ({syn['vs_cosine_delta']:+.3f}; novel queries "
                   f"{_f(syn.get('base_ndcg@10_novel'))} -> {_f(syn.get('ndcg@10_novel'))}; questions in the top 5: "
                   f"{syn.get('question_share@5', float('nan')):.0%}), and fused with BM25 {hyb['ndcg@10']:.3f}, "
                   f"{_delta(hyb)} (novel queries {_f(hyb.get('base_ndcg@10_novel'))} -> "
                   f"{_f(hyb.get('ndcg@10_novel'))}).")
    sci = load_result("main_job_scifact_llm")
    if sci:
        r = _rows(sci)
        cos, hyb, human, hsyn = r.get("cosine"), r.get("hybrid"), r.get("qk_human"), r.get("hybrid_qk_synthetic")
        if cos and hyb:
            out.append(f"**What users pick first** (SciFact): hybrid BM25 + cosine fusion, no training, scores "
                       f"{hyb['ndcg@10']:.3f} against cosine's {cos['ndcg@10']:.3f}"
                       + (f"; adding the synthetic-pairs projection to it gives {hsyn['ndcg@10']:.3f}, "
                          f"{_delta(hsyn)}" if hsyn else "") + ".")
        if cos and human and human.get("ndcg@10_seen") is not None:
            out.append(
                f"**What the SciFact human-pairs gain is:** a prior over which abstracts get judged, not relevance. "
                f"Selected on validation claims split by query, a Q/K trained on the human train claims reached 0.793 "
                f"(earlier results); selected on validation abstracts no training claim cites (split by document, as "
                f"now), it stops early at {human['ndcg@10']:.3f} (cosine {cos['ndcg@10']:.3f}). Either way the gain "
                f"is on the {human['n_seen']} test claims whose abstracts a train claim also judges "
                f"({human['base_ndcg@10_seen']:.3f} -> {human['ndcg@10_seen']:.3f}); on the {human['n_novel']} claims "
                f"whose abstracts no train claim judges it is {human['base_ndcg@10_novel']:.3f} -> "
                f"{human['ndcg@10_novel']:.3f} ({human['delta_ndcg@10_novel']:+.3f}, p = "
                f"{human['p_ndcg@10_novel']:.2g}). Only novel figures say whether a map learned relevance.")
    out += demo_paragraphs(load_result("main_job_homeqa_llm"))
    return "\n\n".join(out)


def demo_paragraphs(demo: dict | None) -> list[str]:
    """The shipped demo (`bash scripts/demo.sh`, data/homeqa): what the projection did there, goal met or not, and
    the README's example query, chosen on cosine before any training."""
    if not demo:
        return []
    rows = _rows(demo)
    cos, syn = rows.get("cosine", {}), rows.get("qk_synthetic", {})
    if not syn:
        return []
    met = syn.get("vs_cosine_delta", 0) >= 0.10 and syn.get("vs_cosine_p_value", 1) < 0.01
    halved = syn.get("question_share@5", 1.0) <= cos.get("question_share@5", 0.0) / 2
    share = demo.get("answer_above_every_post", {})
    out = [f"**The demo** (`bash scripts/demo.sh`: data/homeqa, answers mixed with question posts; "
           f"{demo['documents']} documents, {demo['queries']} test queries): cosine {cos['ndcg@10']:.3f}, the "
           f"projection trained on pairs the embedded 0.5B model wrote from {demo['config']['sample']} sampled "
           f"passages {syn['ndcg@10']:.3f} ({syn['vs_cosine_delta']:+.3f}, p = {syn['vs_cosine_p_value']:.2g}; "
           f"novel queries {_f(syn.get('base_ndcg@10_novel'))} -> {_f(syn.get('ndcg@10_novel'))}); question posts "
           f"in the top 5 {cos.get('question_share@5', float('nan')):.3f} -> {syn.get('question_share@5', float('nan')):.3f}. "
           f"The training recipe and its epoch were chosen on the train split's judged queries (validation data; "
           f"train and test share no document), never on test. "
           + (f"Against the hybrid users would pick (BM25 + cosine, {hyb['ndcg@10']:.3f}), the fused projection scores "
              f"{hq['ndcg@10']:.3f} ({hq['vs_hybrid_delta']:+.3f}, p = {hq['vs_hybrid_p_value']:.2g}; novel queries "
              f"{_f(hq.get('base_ndcg@10_novel'))} -> {_f(hq.get('ndcg@10_novel'))}). "
              if (hyb := rows.get("hybrid")) and (hq := rows.get("hybrid_qk_synthetic")) else "")
           + ("The demo's goal (+0.10, p < 0.01) is met" + ("." if halved else
              f"; halving the question share (at most {cos['question_share@5'] / 2:.3f}) is **not**, narrowly: "
              "across draws of the LLM's outputs it lands on either side of that line "
              "(`benchmarks/results/demo_sample.md`).")
              if met else
              "**Below the demo's goal of +0.10**: in the minutes a demo may take, the embedded model writes about a "
              "hundred pairs, and the gain grows with pairs (squad-mix, above, used 500 passages).")
           + (f" The share of test queries whose answer ranks above every post: {share['cosine']:.3f} with cosine, "
              f"{share['qk_synthetic']:.3f} with the projection." if share else "")]
    example = demo.get("readme_example")
    if example:
        answer = next((k for k in example["cosine"] if not k.startswith("post") and k != "first_post"), None)
        if answer:
            out.append(f"**The demo's example query** (chosen on cosine before any training, `{EXAMPLE}`): the answer "
                       f"({answer}) ranks {example['cosine'][answer]} with cosine and "
                       f"{example['qk_synthetic'][answer]} with the projection; "
                       + ("it now ranks above every post." if example.get("answer_above_post_with_projection") else
                          "a post still ranks first, so this example is not one the projection fixes."))
    return out


def main_job_table(name: str, main: dict) -> str:
    qs = any("question_share@5" in r for r in main["rows"])
    head = "| method | nDCG@10 [95% CI] | Recall@100 | Δ vs its base (p) | seen (Δ, n) | novel (Δ, n) | " + \
        ("questions in top 5 | " if qs else "") + "ECE | train s |"
    lines = [head, "|---|" + "---:|" * (head.count("|") - 2)]
    for r in main["rows"]:
        lo, hi = r["ndcg@10_ci"]
        cells = [r["method"], f"{r['ndcg@10']:.3f} [{lo:.3f}, {hi:.3f}]", f"{r['recall@100']:.3f}", _delta(r),
                 _part(r, "seen"), _part(r, "novel")]
        if qs:
            cells.append(_f(r.get("question_share@5")))
        cells += [_f(r.get("ece")), f"{r['train_seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return (f"**The main job on {name}** (`{main['bench_command']}`; {main['documents']} documents, "
            f"{main['queries']} test queries):\n\n" + "\n".join(lines))


def llm_baselines_table(result: dict | None) -> str:
    """HyDE beside cosine, the hybrid and the map on every collection: who wins where, and what HyDE costs."""
    if not result:
        return ""
    lines = ["| collection (test queries) | cosine | hybrid | HyDE (Δ vs cosine, p) | qk_synthetic (Δ vs HyDE, p) | "
             "hybrid_qk_synthetic | HyDE LLM s/query (2 shared cores) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, entry in result["collections"].items():
        rows = {r["method"]: r for r in entry["rows"]}
        hyde, qk = rows.get("hyde"), rows.get("qk_synthetic")
        if not hyde or not qk:
            continue
        rate = (hyde.get("hyde") or {}).get("seconds_per_sent")
        vs = qk.get("vs_hyde") or {}
        lines.append(f"| {name} ({entry['queries']}) | {rows['cosine']['ndcg@10']:.3f} | "
                     f"{_f((rows.get('hybrid') or {}).get('ndcg@10'))} | {hyde['ndcg@10']:.3f} "
                     f"({hyde['vs_cosine_delta']:+.3f}, {hyde['vs_cosine_p_value']:.2g}) | {qk['ndcg@10']:.3f} "
                     f"({vs.get('delta', float('nan')):+.3f}, {vs.get('p', float('nan')):.2g}) | "
                     f"{_f((rows.get('hybrid_qk_synthetic') or {}).get('ndcg@10'))} | {_f(rate, 1)} |")
    return ("**The LLM baseline users pick instead** (HyDE: the embedded 0.5B model writes a hypothetical answer per "
            "query, one LLM call per query; `benchmarks/results/llm_baselines.md`, where doc2query is beside them "
            "on the demo's corpus). The map calls no LLM at search time:\n\n" + "\n".join(lines))


def section() -> str:
    parts = [p for p in [summary(), llm_baselines_table(load_result("llm_baselines"))] if p]
    for name in MAIN_JOBS:
        main = load_result(f"main_job_{name}")
        if main and "vs_cosine_delta" in json.dumps(main["rows"]):
            parts.append(main_job_table(name, main))
    proj = load_result("projection_bench")
    if proj:
        parts.append("**Projection on SciFact's human train pairs**: see "
                     "[benchmarks/results/projection_bench.md](benchmarks/results/projection_bench.md).")
    ev = load_result("eval_cli")
    if ev:
        lines = ["| collection | retriever | nDCG@10 | goal | met |", "|---|---|---:|---|---|"]
        lines += [f"| {r['collection']} | {r['retriever']} | {r['ndcg@10']:.4f} | {r['goal']} | {r['met']} |"
                  for r in ev["rows"]]
        parts.append("**Reproducing published numbers** through `qkrag eval` (all-MiniLM-L6-v2; MTEB reports 0.645 "
                     "on SciFact, the BEIR paper 0.665 for BM25):\n\n" + "\n".join(lines))
    others = [f"[{p.stem}](benchmarks/results/{p.name})" for p in sorted(RESULTS.glob("*.md"))]
    parts.append("All results: " + ", ".join(others) + ".")
    return "\n\n".join(parts)


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = re.sub(r"(<!-- results:start -->\n).*?(\n<!-- results:end -->)",
                 lambda m: m.group(1) + section() + m.group(2), text, flags=re.S)
    readme.write_text(new)
    print(section())


if __name__ == "__main__":
    main()
