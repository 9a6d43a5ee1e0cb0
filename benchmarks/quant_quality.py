"""Quality of each quantization type on smollm2, measured by lamina next to llama.cpp's figures.

Reproduces ../shared/refdata/llamacpp/quantize-smollm2.json's quality columns with
lamina's own tools, exactly as llama.cpp's were made:

1. ``lamina quantize --allow-requantize smollm2(Q4_1) F16``;
2. ``lamina quantize F16 TYPE`` for Q8_0 Q6_K Q5_K_M Q4_K_M Q4_K_S Q4_0 Q3_K_M Q2_K IQ4_XS;
3. ``lamina perplexity -m F16 -f GPL-3.txt -c 512 --kl-divergence-base base.kld``;
4. ``lamina perplexity -m TYPE --kl-divergence-base base.kld --kl-divergence`` for each type;

and prints a Markdown table: type, file size, bits per weight, PPL, PPL ratio, mean
KLD and same-top-token %, lamina's value beside llama.cpp's for each. CPU-heavy (eleven
passes over 7.6k tokens): about 5 minutes with 2 threads.

    python benchmarks/quant_quality.py [-t 2] [--keep DIR] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lamina import gguf
from lamina.testing.models import model_path, shared_dir

TYPES = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_K_S", "Q4_0", "Q3_K_M", "Q2_K", "IQ4_XS"]
_STATS = {  # llama-perplexity's KL-divergence report line -> result key (value and its ± uncertainty)
    "ppl": r"^Mean PPL\(Q\)\s*:\s*(\S+)\s*±\s*(\S+)",
    "ppl_ratio": r"^Mean PPL\(Q\)/PPL\(base\)\s*:\s*(\S+)\s*±\s*(\S+)",
    "mean_kld": r"^Mean\s+KLD:\s*(\S+)\s*±\s*(\S+)",
    "same_top_p_percent": r"^Same top p:\s*(\S+)\s*±\s*(\S+)",
}
COMPARED = ("ppl_ratio", "mean_kld", "same_top_p_percent")  # the quality columns checked against llama.cpp's


def lamina(*args: str) -> str:
    """Run a lamina command, echoing its standard error; return its standard output."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lamina.cli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"lamina {' '.join(args)} failed with exit status {done.returncode}")
    print(f"  lamina {' '.join(args)}  ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    return done.stdout


def bits_per_weight(path: Path) -> float:
    """Tensor bytes × 8 / weights, as llama.cpp's model loader prints it (BPW)."""
    with gguf.read(path) as f:
        tensors = list(f)
        return 8 * sum(t.n_bytes for t in tensors) / sum(t.n_elements for t in tensors)


def parse_kld_report(text: str) -> dict[str, float]:
    found = {}
    for key, pattern in _STATS.items():
        m = re.search(pattern, text, re.MULTILINE)
        if not m:
            raise SystemExit(f"no '{key}' line in the KL-divergence report:\n{text}")
        found[key] = float(m.group(1))
        found[key + "_uncertainty"] = float(m.group(2))
    return found


def differences_in_sigmas(results: dict[str, dict], reference: dict[str, dict]) -> list[tuple[float, str, str]]:
    """|lamina - llama.cpp| over lamina's reported uncertainty, for every type and compared column, largest first.

    The uncertainty is llama-perplexity's standard error of the mean over the text's
    tokens; both tools score the same tokens, so this is a generous yardstick for
    "within noise", and a difference of several of them means a real disagreement.
    """
    found = []
    for name, r in results.items():
        ref = reference.get(name, {}).get("vs_F16")
        if not ref:
            continue
        for key in COMPARED:
            unc = r[key + "_uncertainty"]
            found.append((abs(r[key] - ref[key]) / unc if unc > 0 else float("inf"), name, key))
    return sorted(found, reverse=True)


def measure(workdir: Path, threads: int, n_ctx: int, types: list[str]) -> dict[str, dict]:
    text = shared_dir() / "refdata" / "text" / "GPL-3.txt"
    f16 = workdir / "smollm2-f16.gguf"
    base = workdir / "smollm2-f16.kld"
    t = str(threads)
    print("quantizing", file=sys.stderr)
    lamina("quantize", "--allow-requantize", str(model_path("smollm2")), str(f16), "F16", t)
    paths = {}
    for name in types:
        paths[name] = workdir / f"smollm2-{name.lower()}.gguf"
        lamina("quantize", str(f16), str(paths[name]), name, t)
    print("base pass (F16)", file=sys.stderr)
    out = lamina("perplexity", "-m", str(f16), "-f", str(text), "-c", str(n_ctx), "-t", t,
                 "--kl-divergence-base", str(base))
    ppl = float(re.search(r"Final estimate: PPL = (\S+)", out).group(1))
    results = {"F16": {"file_bytes": f16.stat().st_size, "bpw": bits_per_weight(f16), "ppl": ppl}}
    print("KL-divergence passes", file=sys.stderr)
    for name, path in paths.items():
        report = lamina("perplexity", "-m", str(path), "-t", t, "--kl-divergence-base", str(base), "--kl-divergence")
        (workdir / f"{path.stem}.kld.txt").write_text(report)  # the full report, kept with --keep
        results[name] = {"file_bytes": path.stat().st_size, "bpw": bits_per_weight(path), **parse_kld_report(report)}
    return results


def markdown_table(results: dict[str, dict], reference: dict[str, dict]) -> str:
    rows = ["| type | size (MiB) | bits/weight | PPL lamina | PPL llama.cpp | PPL ratio lamina | PPL ratio llama.cpp "
            "| mean KLD lamina | mean KLD llama.cpp | same top % lamina | same top % llama.cpp |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for name, r in results.items():
        ref = reference.get(name, {})
        ref_q = ref.get("vs_F16", {})
        size = f"{r['file_bytes'] / 2**20:.1f}"
        if ref.get("file_bytes") not in (None, r["file_bytes"]):
            size += f" (llama.cpp {ref['file_bytes'] / 2**20:.1f})"
        ref_ppl = ref_q.get("ppl", ref.get("ppl"))
        if name == "F16":
            rows.append(f"| {name} | {size} | {r['bpw']:.2f} | {r['ppl']:.4f} | {ref_ppl:.4f} | 1 | 1 | 0 | 0 "
                        f"| 100 | 100 |")
            continue
        rows.append(f"| {name} | {size} | {r['bpw']:.2f} | {r['ppl']:.4f} | {ref_ppl:.4f} | {r['ppl_ratio']:.4f} "
                    f"| {ref_q['ppl_ratio']:.4f} | {r['mean_kld']:.4f} | {ref_q['mean_kld']:.4f} "
                    f"| {r['same_top_p_percent']:.2f} | {ref_q['same_top_p_percent']:.2f} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-t", "--threads", type=int, default=2, help="threads for quantizing and evaluating (default 2)")
    p.add_argument("-c", "--ctx-size", type=int, default=512, help="context per chunk (default 512, as llama.cpp's)")
    p.add_argument("--types", default=",".join(TYPES), help="comma-separated quantization types")
    p.add_argument("--keep", metavar="DIR", default=None, help="work in DIR and keep the models and base file")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the measurements to FILE")
    p.add_argument("--check", metavar="SIGMAS", type=float, default=None,
                   help="exit with status 1 if a quality column differs from llama.cpp's by more than SIGMAS times "
                        "its reported uncertainty (e.g. 3)")
    args = p.parse_args()
    reference = json.loads((shared_dir() / "refdata" / "llamacpp" / "quantize-smollm2.json").read_text())["outputs"]
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lamina-quant-quality-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        results = measure(workdir, args.threads, args.ctx_size, [t.strip() for t in args.types.split(",") if t.strip()])
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"smollm2 on GPL-3.txt, -c {args.ctx_size}, {args.threads} threads; KL-divergence against the F16 file "
          f"(lamina vs llama.cpp build 0c1e570); total {time.perf_counter() - t0:.0f} s\n")
    print(markdown_table(results, reference))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    sigmas = differences_in_sigmas(results, reference)
    if sigmas:
        worst, name, key = sigmas[0]
        print(f"\nlargest difference from llama.cpp: {worst:.2f} x the reported uncertainty ({name}, {key})")
        if args.check is not None and worst > args.check:
            print(f"FAILED: more than {args.check} x", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
