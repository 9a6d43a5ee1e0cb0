"""``lamina pull USER/REPO[:QUANT]``: download a model from the Hugging Face Hub into its cache (like ``ollama pull``).

The file is chosen as ``-hf`` chooses it, checked against the Hub's sha256, and its path printed;
later ``lamina -hf USER/REPO[:QUANT] ...`` runs start from the cache.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina pull", description=__doc__.split("\n\n")[0])
    p.add_argument("repo", metavar="USER/REPO[:QUANT]", help="a Hub repository, with the quantization tag to pick")
    p.add_argument("-hff", "--hf-file", dest="hf_file", default=None, help="the file to download, by its name")
    p.add_argument("-hft", "--hf-token", dest="hf_token", default=None,
                   help="Hugging Face access token (default: the HF_TOKEN environment variable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lamina.hub import HubError, resolve

    try:
        path = resolve(args.repo, args.hf_file, args.hf_token)
    except HubError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0
