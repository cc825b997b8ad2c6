"""How long a person waits for `POST /explain` over real HTTP (loopback): p50 and p99 latency of one-record
requests at 1 and 8 concurrent clients, per domain, beside `POST /predict` of the same records on the same
service; and one explained held-out record per domain, its figure written to docs/explanations/<domain>.png
(the page docs/explanations.md shows them).

Explanations are not batched: each takes one backward pass per path step and modality (integrated
gradients), 2^k forward passes for the Shapley values over k modalities, and one forward pass per token for
text, so 8 clients wait in line (p50 near 8x one client's on a machine with one model worker). Each domain's
model is trained for one epoch with the default architecture, as bench_serve.py does. Run:
`.venv/bin/python benchmarks/bench_explain.py [--domain industrial security] [--clients 1 8]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import PACKS, prepare, serve, stop  # noqa: E402
from loadgen import load  # noqa: E402
from record import save  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT = ["industrial", "security", "medical", "surveillance", "cardiac", "inspection", "watch"]
FIGURES = REPO / "docs" / "explanations"


def example(domain: str, url: str, payloads: list[dict[str, Any]], values: list[dict[str, Any]]) -> dict[str, Any]:
    """One held-out record explained over HTTP, its figure saved for the docs; the explanation's summary."""
    import httpx

    from mmops.domains import load_domain
    from mmops.explain.report import figure

    resp = httpx.post(f"{url}/explain", json={"records": payloads[:1]}, timeout=600)
    resp.raise_for_status()
    (e,) = resp.json()
    FIGURES.mkdir(parents=True, exist_ok=True)
    title = f"{domain}, held-out record {e['id']}: {e['explained']} {e['value']:.3f}"
    figure(load_domain(domain), values[0], e, FIGURES / f"{domain}.png", title)
    errors = [d["completeness_error"] for d in e["modalities"].values() if d.get("completeness_error") is not None]
    return {"domain": domain, "record": e["id"], "explained": e["explained"], "value": e["value"],
            "base": e["base"], "shapley": ", ".join(f"{m} {d['shapley']:+.3f}" for m, d in e["modalities"].items()),
            "maps": ", ".join(f"{m}: {d.get('method')}" for m, d in e["modalities"].items()),
            "completeness_error": max(errors) if errors else None, "figure": f"docs/explanations/{domain}.png"}


def write_examples(examples: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """docs/explanations.md's block of examples: each domain's figure and Shapley values, and the run. A run
    of some domains replaces theirs and keeps the others' (each section names the run it came from)."""
    page = REPO / "docs" / "explanations.md"
    start, end = "<!-- examples: rewritten by benchmarks/bench_explain.py -->", "<!-- /examples -->"
    text = page.read_text(encoding="utf-8")
    head, _, rest = text.partition(start)
    block, _, tail = rest.partition(end)
    sections = _sections(block)
    m = record["machine"]
    run = (f"`{record['command']}` on {record['at']}: {m['cpus']} CPUs{', ' + m['cuda'] if m.get('cuda') else ', no GPU'}"
           "; model trained for one epoch.")
    for e in examples:
        sections[e["domain"]] = [
            f"### {e['domain']}", "", run, "",
            f"Held-out record `{e['record']}`: {e['explained']} {e['value']:.3f} (with no modality: "
            f"{e['base']:.3f}). Shapley values: {e['shapley']}. Maps: {e['maps']}"
            + (f"; largest completeness error {e['completeness_error']:.4f}." if e["completeness_error"]
               is not None else "."), "", f"![{e['domain']}](explanations/{e['domain']}.png)", ""]
    order = [d for d in DEFAULT if d in sections] + sorted(set(sections) - set(DEFAULT))
    lines = [start, "", *(line for d in order for line in sections[d])]
    page.write_text(head + "\n".join(lines) + end + tail, encoding="utf-8")


def _sections(block: str) -> dict[str, list[str]]:
    """The block's per-domain sections, from a `### <domain>` line to the next, each ending in one blank line."""
    out: dict[str, list[str]] = {}
    for part in ("\n" + block.strip("\n")).split("\n### ")[1:]:
        domain, *body = part.splitlines()
        out[domain.strip()] = [f"### {domain.strip()}", *"\n".join(body).rstrip("\n").splitlines(), ""]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", nargs="+", default=DEFAULT, choices=list(PACKS))
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--requests", type=int, default=24, help="request budget per level (at least 2x clients)")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="time budget per level")
    parser.add_argument("--port", type=int, default=3957)
    args = parser.parse_args()
    table: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mmops-bench-explain-") as tmp:
        prepare(Path(tmp), args.domain)
        from mmops import pipeline
        from mmops.config import get_settings
        from mmops.datasets.tensors import load_split
        from mmops.domains import load_domain
        from mmops.serving.client import record_payload, service_env

        settings = get_settings()
        for d in args.domain:
            pack = load_domain(d)
            rows = pipeline.load_manifest(d).split("test")
            payloads = [record_payload(pack, settings.data_dir, r) for r in rows]
            proc = serve(d, args.port, service_env(d), Path(tmp) / f"serve-{d}.log")
            try:
                url = f"http://127.0.0.1:{args.port}"
                examples.append(example(d, url, payloads, load_split(pack, settings.data_dir, rows[:1])))
                for n in args.clients:
                    for route in ("/explain", "/predict"):
                        row = asyncio.run(load(url, payloads, n, max(args.requests, 2 * n), args.max_seconds, route))
                        table.append({"domain": d, **row})
                        print(json.dumps(table[-1]), flush=True)
            finally:
                stop(proc)
    return report(table, examples, args.domain)


def report(table: list[dict[str, Any]], examples: list[dict[str, Any]], domains: list[str]) -> int:
    print(f"\n{'domain':<13} {'route':<9} {'clients':>7} {'p50 ms':>9} {'p99 ms':>9} {'ok':>4} {'errors':>6}")
    for r in table:
        print(f"{r['domain']:<13} {r['route']:<9} {r['clients']:>7} {r['p50_ms']:>9.1f} {r['p99_ms']:>9.1f} "
              f"{r['ok']:>4} {r['errors']:>6}")
    for e in examples:
        print(json.dumps(e))
    verdicts = {"zero errors everywhere": all(r["errors"] == 0 for r in table),
                "every map complete within 1 %": all(e["completeness_error"] is None or e["completeness_error"] <= 0.01
                                                     for e in examples)}
    name = "explain" if domains == DEFAULT else "explain-" + "-".join(domains)
    saved = save(name, {"runs": table, "examples": examples}, verdicts)
    write_examples(examples, json.loads(saved.read_text()))
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
