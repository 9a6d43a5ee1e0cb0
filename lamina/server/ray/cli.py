"""``lamina serve --ray``: join (or start) a Ray cluster, run the application, stop it on Ctrl-C or SIGTERM.

Ray Serve's HTTP proxy takes ``--host``/``--port``. On a cluster that already runs Ray Serve
its proxy keeps the address it has (Ray Serve has one per cluster); the application is
added to it under ``--ray-app``. On exit only this application is deleted; a Ray instance
this command started itself ends with it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .options import RayPlan


def serve_on_ray(args: argparse.Namespace, plan: RayPlan) -> int:
    try:
        import ray
        from ray import serve
    except ImportError:
        print("lamina serve: error: --ray needs Ray Serve: pip install 'lamina[ray]'", file=sys.stderr)
        return 1
    from .app import build_app

    application = build_app(args, plan)  # reads the key, grammar and template files before anything starts
    ray.init(address=plan.address, log_to_driver=args.verbose)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        count = f"{plan.autoscale[0]}-{plan.autoscale[1]}" if plan.autoscale else str(plan.replicas)
        print(f"lamina serve: starting {count} replica(s) of {args.model} on Ray "
              f"({plan.cpus:g} CPU and {plan.memory / 2**30:.2f} GiB reserved each, {plan.n_parallel} slots each)",
              file=sys.stderr, flush=True)
        serve.run(application, name=plan.app_name, route_prefix="/")
        host, port = listening_address(args.host, args.port)
        if (host, port) != (args.host, args.port):
            print(f"lamina serve: note: Ray Serve already ran on this cluster, at {host}:{port}; --host and --port "
                  "only apply when this command starts it (a cluster has one Ray Serve HTTP address)",
                  file=sys.stderr)
        print(f"lamina serve: listening on http://{host}:{port} (Ray Serve application "
              f"{plan.app_name!r}, {plan.routing} routing; Ctrl-C stops it)", file=sys.stderr, flush=True)
        stop.wait()
    finally:
        try:
            serve.delete(plan.app_name)
        finally:
            ray.shutdown()
    return 0


def listening_address(host: str, port: int) -> tuple[str, int]:
    """Where Ray Serve's HTTP proxy listens (what ``serve.start`` was given first on this cluster)."""
    try:
        from ray.serve.context import _get_global_client  # Ray Serve has no public getter for it

        http = _get_global_client().http_config
        return http.host, http.port
    except Exception:  # noqa: BLE001 (another Ray version: say what was asked for)
        return host, port
