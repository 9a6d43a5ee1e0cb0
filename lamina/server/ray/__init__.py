"""lamina on Ray Serve: one OpenAI/llama-server-compatible endpoint in front of many ``lamina serve`` replicas.

* ``options``: the ``--ray`` flags and what a replica is handed (no Ray import);
* ``routing``: which replica a request goes to (prefix-aware or round-robin; no Ray import);
* ``router``: that policy as Ray Serve's request router;
* ``forwarding``: a request carried to a replica and run through ``lamina serve``'s own app;
* ``replica``: the replica deployment (model, slots, engine);
* ``ingress``: keys, body limits, forwarding, streaming, and the service-wide routes;
* ``aggregate``: ``/metrics`` and ``/slots`` merged over the replicas;
* ``app``: the application, and ``app_builder`` for ``serve run`` / ``serve deploy`` configs;
* ``cli``: ``lamina serve --ray``.

``app_builder`` is imported on first use, so this package can be imported where Ray is not.
"""


def __getattr__(name: str):
    if name in ("app_builder", "build_app"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
