"""Ask the reference llama-server for embeddings (run by hand):

    python3 tests/data/make_llamacpp_embeddings.py PATH/TO/llama-server > tests/data/llamacpp_embeddings.json

llama-server started with ``-m smollm2 --embedding --pooling P -c 512 -np 1 -t 2`` for each pooling P;
``POST /embedding`` with ``embd_normalize: -1`` (the raw pooled vectors) for each text.
"""
import json
import sys

import httpx

from lamina.testing.models import model_path
from lamina.testing.server_process import ServerProcess

TEXTS = ["Hello world", "The cat sat on the mat, and the dog slept by the fire.",
         "Embeddings map text to vectors of numbers."]
out = {"_about": __doc__.strip(), "model": "smollm2", "texts": TEXTS, "poolings": {}}
for pooling in ("mean", "last", "cls"):
    srv = ServerProcess(["-m", str(model_path("smollm2")), "--embedding", "--pooling", pooling, "-c", "512",
                         "-np", "1", "-t", "2"], command=(sys.argv[1],)).wait_ready()
    try:
        vectors = []
        for text in TEXTS:
            r = httpx.post(srv.url + "/embedding", json={"content": text, "embd_normalize": -1}, timeout=120).json()
            vectors.append(r[0]["embedding"][0] if isinstance(r[0]["embedding"][0], list) else r[0]["embedding"])
        out["poolings"][pooling] = vectors
    finally:
        srv.stop()
json.dump(out, sys.stdout)
