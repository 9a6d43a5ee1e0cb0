"""``lamina serve --ray``: the flags that put the server on a Ray cluster, and what each replica is given.

This module only parses and checks; it never imports Ray, so ``lamina serve --help`` and a
plain ``lamina serve`` work where Ray is not installed.

A replica may start on another machine of the cluster, so it is handed the parsed flags
(an ``argparse.Namespace``) rather than anything read from this machine: files named by
flags (API keys, grammars, JSON schemas, chat templates) are read here and travel as text,
and only the model file itself must exist at the same path on every node that runs a
replica (each replica memory-maps it there; the weights never pass through Ray's object
store).
"""

from __future__ import annotations

import argparse
import copy
import os
import re
from dataclasses import dataclass

#: routing policies the replicas' request router knows (see ``lamina.server.ray.routing``)
ROUTING_POLICIES = ("prefix", "round-robin")
#: what a replica needs besides the model and its KV cache: Python, NumPy, Numba's compiled kernels, Ray's worker
REPLICA_OVERHEAD_BYTES = 512 << 20
_RAY_ONLY = ("replicas", "autoscale", "ray_address", "replica_cpus", "replica_memory", "ray_routing", "ray_app")


def add_ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Ray Serve (several replicas, on one machine or many)")
    g.add_argument("--ray", action="store_true",
                   help="serve through Ray Serve: an ingress at --host/--port in front of --replicas copies of the "
                        "model, each with its own -np slots (needs pip install 'lamina[ray]')")
    g.add_argument("--replicas", type=int, default=None, help="number of replicas (default: 1)")
    g.add_argument("--autoscale", default=None, metavar="MIN:MAX",
                   help="let Ray Serve keep between MIN and MAX replicas, adding one when the replicas hold more "
                        "requests than they have slots (-np)")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="the Ray cluster to join (default: $RAY_ADDRESS, else the cluster `ray start` runs on this "
                        "machine, else a new one that lives as long as this command)")
    g.add_argument("--replica-cpus", type=float, default=None,
                   help="CPUs each replica reserves in Ray and computes with (default: -t, else 1)")
    g.add_argument("--replica-memory", default=None, metavar="SIZE",
                   help="memory each replica reserves in Ray, e.g. 2G or 800M (default: the model file, its whole "
                        "KV cache and 512 MiB)")
    g.add_argument("--ray-routing", default=None, choices=ROUTING_POLICIES,
                   help="how requests pick a replica: prefix (the replica whose slots hold the longest prefix of "
                        "the prompt, balanced against load; default) or round-robin")
    g.add_argument("--ray-app", default=None, help="Ray Serve application name (default: lamina)")


@dataclass(frozen=True)
class RayPlan:
    """How the application is laid out on the cluster."""

    replicas: int                           # the fixed count, or the autoscaler's starting point
    autoscale: tuple[int, int] | None       # (min, max) replicas, or None for a fixed count
    address: str | None
    cpus: float                             # per replica
    memory: int                             # bytes per replica, as Ray's logical "memory" resource
    routing: str
    app_name: str
    n_parallel: int                         # slots per replica (-np)
    queue_max: int                          # requests waiting per replica (--queue-max)

    @property
    def max_ongoing_requests(self) -> int:
        """What one replica accepts at once: its slots and its own queue (past that lamina answers 503)."""
        return self.n_parallel + self.queue_max


def ray_plan(args: argparse.Namespace) -> RayPlan | None:
    """The plan the flags ask for; None without ``--ray``. ValueError for flags that contradict each other."""
    if not args.ray:
        given = [f"--{name.replace('_', '-')}" for name in _RAY_ONLY if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --ray")
        return None
    if args.replicas is not None and args.autoscale is not None:
        raise ValueError("give --replicas N or --autoscale MIN:MAX, not both")
    if args.slot_save_path:
        raise ValueError("--slot-save-path is not supported with --ray: a slot file would live on one replica's node")
    if args.replicas is not None and args.replicas < 1:
        raise ValueError(f"--replicas must be at least 1, got {args.replicas}")
    autoscale = parse_autoscale(args.autoscale) if args.autoscale is not None else None
    cpus = args.replica_cpus if args.replica_cpus is not None else float(args.threads or 1)
    if not cpus > 0:
        raise ValueError(f"--replica-cpus must be positive, got {args.replica_cpus}")
    if args.replica_memory is not None:
        memory = parse_size(args.replica_memory)
    else:
        memory = estimate_replica_memory(args.model, args.ctx_size)
    replicas = autoscale[0] if autoscale else (args.replicas or 1)
    return RayPlan(replicas=replicas, autoscale=autoscale, address=args.ray_address, cpus=cpus, memory=memory,
                   routing=args.ray_routing or "prefix", app_name=args.ray_app or "lamina", n_parallel=args.parallel,
                   queue_max=args.queue_max)


def parse_autoscale(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"--autoscale takes MIN:MAX replicas, e.g. 1:4; got {text!r}")
    lo, hi = int(m.group(1)), int(m.group(2))
    if lo < 1:
        raise ValueError("--autoscale needs at least 1 replica at all times (MIN >= 1): with none running, "
                         "requests would have nowhere to wait")
    if hi < lo:
        raise ValueError(f"--autoscale MIN:MAX needs MIN <= MAX, got {lo}:{hi}")
    return lo, hi


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``2G``, ``800M``, ``1.5G``, ``1073741824`` (binary units, an optional ``iB``/``B``) in bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"--replica-memory takes a size such as 2G or 800M; got {text!r}")
    size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if size <= 0:
        raise ValueError(f"--replica-memory must be positive, got {text!r}")
    return size


def estimate_replica_memory(model: str, ctx_size: int) -> int:
    """What a replica may come to hold: the mapped model file, a full F16 KV cache of ``-c`` tokens
    (all slots together, as llama-server's ``-c``), and :data:`REPLICA_OVERHEAD_BYTES`."""
    from lamina import gguf

    f = gguf.read(model)
    arch = f.get_str("general.architecture", "")
    n_ctx = ctx_size if ctx_size > 0 else f.get_int(f"{arch}.context_length", 4096)
    n_layer = f.get_int(f"{arch}.block_count", 0)
    n_head = max(1, f.get_int(f"{arch}.attention.head_count", 1))
    n_head_kv = f.get_int(f"{arch}.attention.head_count_kv", n_head)
    head_dim = f.get_int(f"{arch}.embedding_length", 0) // n_head
    k_dim = f.get_int(f"{arch}.attention.key_length", head_dim)
    v_dim = f.get_int(f"{arch}.attention.value_length", head_dim)
    kv_bytes = n_layer * n_head_kv * (k_dim + v_dim) * n_ctx * 2
    return os.path.getsize(model) + kv_bytes + REPLICA_OVERHEAD_BYTES


def replica_args(args: argparse.Namespace, plan: RayPlan) -> argparse.Namespace:
    """The flags a replica parses into its server configuration, whichever node it lands on.

    Files named by flags are read here and passed as text; the replica computes with as many
    threads as the CPUs it reserves (``-t`` is set from ``--replica-cpus``).
    """
    from lamina.chat.templates import read_chat_template_file
    from lamina.server.auth import read_key_file

    out = copy.deepcopy(args)
    if out.api_key_file:
        out.api_key = list(out.api_key) + [",".join(read_key_file(out.api_key_file))]
        out.api_key_file = None
    if out.grammar_file is not None:
        out.grammar, out.grammar_file = _read_text(out.grammar_file, "--grammar-file"), None
    if out.json_schema_file is not None:
        out.json_schema, out.json_schema_file = _read_text(out.json_schema_file, "--json-schema-file"), None
    if out.chat_template_file is not None:
        out.chat_template, out.chat_template_file = read_chat_template_file(out.chat_template_file), None
    out.threads = max(1, int(plan.cpus))
    out.hf_repo = None  # the model path was resolved (downloaded) on this machine
    return out


def _read_text(path: str, flag: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read {flag} {path!r}: {e.strerror}") from None
