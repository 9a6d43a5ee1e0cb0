"""The Ray Serve application: an ingress deployment bound to a deployment of lamina replicas.

:func:`build_app` lays it out from ``lamina serve``'s parsed flags; :func:`app_builder` is the
same for Ray Serve's own tools (``serve run lamina.server.ray:app_builder model=M.gguf
replicas=2``, or ``import_path`` in a ``serve deploy`` / KubeRay RayService config), taking
the flags as a mapping.

Each replica reserves ``--replica-cpus`` CPUs and ``--replica-memory`` bytes, so Ray places
no more replicas on a node than it can run; the ingress reserves no CPU (it only forwards).
A replica accepts ``-np`` requests into slots plus ``--queue-max`` waiting (``lamina serve``
answers 503 past that); with ``--autoscale`` Ray Serve aims at ``-np`` requests per replica.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve.config import RequestRouterConfig

from .ingress import REPLICA_DEPLOYMENT, LaminaIngress, settings_from
from .options import RayPlan, ray_plan, replica_args
from .replica import LaminaReplica
from .router import LaminaRequestRouter

#: Ray Serve asks each replica's /health this often; a replica failing it this long is replaced
HEALTH_CHECK_PERIOD_S = 2.0
HEALTH_CHECK_TIMEOUT_S = 30.0


def build_app(args: argparse.Namespace, plan: RayPlan):
    """The bound application (what ``serve.run`` takes)."""
    scale: dict[str, Any] = {"num_replicas": plan.replicas}
    if plan.autoscale is not None:
        lo, hi = plan.autoscale
        scale = {"autoscaling_config": {"min_replicas": lo, "max_replicas": hi, "initial_replicas": lo,
                                        "target_ongoing_requests": plan.n_parallel}}
    replica = serve.deployment(LaminaReplica, name=REPLICA_DEPLOYMENT).options(
        **scale, max_ongoing_requests=plan.max_ongoing_requests,
        ray_actor_options={"num_cpus": plan.cpus, "memory": plan.memory},
        health_check_period_s=HEALTH_CHECK_PERIOD_S, health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
        graceful_shutdown_timeout_s=5,
        request_router_config=RequestRouterConfig(
            request_router_class=LaminaRequestRouter,
            request_router_kwargs={"policy": plan.routing, "slots": plan.n_parallel}))
    most = plan.autoscale[1] if plan.autoscale else plan.replicas
    ingress = serve.deployment(serve.ingress()(LaminaIngress), name="LaminaIngress").options(
        num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=most * plan.max_ongoing_requests)
    return ingress.bind(replica.bind(replica_args(args, plan)), settings_from(args, plan.app_name))


def app_builder(options: Mapping[str, Any]):
    """Ray Serve's application builder: ``lamina serve`` flags as a mapping, e.g. ``{"model": "m.gguf",
    "replicas": 2, "ctx_size": 4096, "parallel": 4, "api_key": "K", "metrics": True}``; ``args`` may also
    hold a command line (``args: "-m m.gguf -c 4096 -np 4"``). ``host`` and ``port`` belong to Ray Serve's
    HTTP options there, not here."""
    from lamina.cli.options import resolve_model
    from lamina.server.cli import argv_with_environment, build_parser, config_from

    args = build_parser().parse_args(argv_with_environment(argv_from_options(options)))
    args.ray = True
    resolve_model(args)
    config_from(args)  # a clear error now (a missing model, a bad flag), not in every replica
    return build_app(args, ray_plan(args))


def argv_from_options(options: Mapping[str, Any]) -> list[str]:
    """``{"ctx_size": 4096, "metrics": True, "webui": False, "api_key": ["a", "b"]}`` as command-line flags."""
    argv: list[str] = []
    for key, value in options.items():
        if key == "args":
            argv += shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
            continue
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            for item in value:
                argv += [flag, str(item)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv
