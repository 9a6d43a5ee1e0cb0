"""Ask the reference llama-server for the embeddings and rerank scores of the tiny encoder models
(run by hand):

    python3 tests/data/make_llamacpp_encoder_embeddings.py PATH/TO/llama-server PATH/TO/llama.cpp/gguf-py \\
        | gzip -9 > tests/data/llamacpp_encoder_embeddings.json.gz

Each model of ``lamina.testing.tiny_encoders`` (random weights, the bge WordPiece vocabulary) is
written with llama.cpp's own ``gguf`` package (the reference tree's ``gguf-py``); the sha256 of
each tensor's bytes is stored so the tests can check that lamina's writer made the same model.
llama-server runs with ``--embedding --pooling P -c 512 -np 1 -t 2 -ub 512`` for each pooling P,
``POST /embedding`` with ``embd_normalize: -1`` (raw vectors) for each text, one request per text
and one request with all texts; the reranker with ``--reranking``, ``POST /rerank``. Then
``llama-embedding`` (next to llama-server) embeds BATCH_TEXTS as one batch of 40 sequences
(``--embd-normalize -1 --embd-output-format array -t 2``, pooling cls and mean): its vectors are
printed with 7 decimals.
"""
import json
import os
import subprocess
import sys
import tempfile

import httpx
import numpy as np

sys.path.insert(0, sys.argv[2])
import gguf  # noqa: E402  (llama.cpp's gguf-py, from the reference tree)

from lamina.gguf import ValueType  # noqa: E402
from lamina.testing.server_process import ServerProcess  # noqa: E402
from lamina.testing.tiny_encoders import SPECS, encoder_arrays, encoder_metadata, tensor_digests  # noqa: E402

PEER = sys.argv[1]
FLAGS = ["-c", "512", "-np", "1", "-t", "2", "-ub", "512", "-b", "512"]
TEXTS = ["Hello world", "The cat sat on the mat, and the dog slept by the fire.",
         "Embeddings map text to vectors of numbers.", "naïve café — ünïcödé, 123 x 456!"]
BATCH_TEXTS = [f"sentence number {i} about {w}" for i, w in enumerate(["cats", "dogs", "the sea", "rain", "code"] * 8)]
QUERY = "What is a panda?"
DOCUMENTS = ["hi", "The giant panda is a bear species endemic to China.",
             "Pandas is a Python library for data analysis.", "it is a bear"]

SCALARS = {ValueType.UINT32: gguf.GGUFValueType.UINT32, ValueType.INT32: gguf.GGUFValueType.INT32,
           ValueType.FLOAT32: gguf.GGUFValueType.FLOAT32, ValueType.BOOL: gguf.GGUFValueType.BOOL,
           ValueType.STRING: gguf.GGUFValueType.STRING}


def write_with_gguf_py(name: str, path: str) -> None:
    meta = encoder_metadata(name)
    w = gguf.GGUFWriter(path, meta.pop("general.architecture").value)
    for key, field in meta.items():
        if field.type == ValueType.ARRAY:
            w.add_key_value(key, [x.item() if hasattr(x, "item") else x for x in field.value], gguf.GGUFValueType.ARRAY,
                            sub_type=SCALARS[field.element_type])
        else:
            w.add_key_value(key, field.value, SCALARS[field.type])
    for tname, array, ttype in encoder_arrays(name):
        w.add_tensor(tname, array.astype(np.float16 if ttype == "F16" else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def serve(path: str, *flags: str) -> ServerProcess:
    return ServerProcess(["-m", path, *FLAGS, *flags], command=(PEER,)).wait_ready()


out = {"_about": __doc__.strip(), "server_flags": FLAGS, "texts": TEXTS, "batch_texts": BATCH_TEXTS, "query": QUERY,
       "documents": DOCUMENTS, "models": {}}
EMBEDDING = os.path.join(os.path.dirname(PEER), "llama-embedding")


def embed_batch(path: str, pooling: str) -> list:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(BATCH_TEXTS))
    try:
        run = subprocess.run([EMBEDDING, "-m", path, "-f", f.name, "--pooling", pooling, "--embd-normalize", "-1",
                              "--embd-output-format", "array", "-t", "2"], capture_output=True, text=True, check=True)
    finally:
        os.unlink(f.name)
    return json.loads(run.stdout)
with tempfile.TemporaryDirectory() as tmp:
    for name in ("bert", "nomic-bert", "jina-bert-v2", "bert-rerank"):
        path = f"{tmp}/{name}.gguf"
        write_with_gguf_py(name, path)
        entry = out["models"][name] = {"spec": SPECS[name].__dict__, "tensor_sha256": tensor_digests(name)}
        if SPECS[name].rerank:
            srv = serve(path, "--reranking")
            try:
                r = httpx.post(srv.url + "/rerank", json={"query": QUERY, "documents": DOCUMENTS}, timeout=120)
                entry["rerank"] = r.json()
            finally:
                srv.stop()
            continue
        entry["batched"] = {p: embed_batch(path, p) for p in ("cls", "mean")}
        entry["poolings"] = {}
        for pooling in ("mean", "cls", "none"):
            srv = serve(path, "--embedding", "--pooling", pooling)
            try:
                one_by_one = [httpx.post(srv.url + "/embedding", json={"content": t, "embd_normalize": -1},
                                         timeout=120).json()[0]["embedding"] for t in TEXTS]
                together = httpx.post(srv.url + "/embedding", json={"content": TEXTS, "embd_normalize": -1},
                                      timeout=120).json()
                entry["poolings"][pooling] = {"one_by_one": one_by_one,
                                              "together": [item["embedding"] for item in together]}
                print(name, pooling, "ok", file=sys.stderr)
            finally:
                srv.stop()
json.dump(out, sys.stdout)
