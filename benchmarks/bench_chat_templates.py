"""Time to load and render the real models' chat templates in the bounded sandbox.

    python benchmarks/bench_chat_templates.py

For smollm2's and qwen2's ``tokenizer.chat_template``: the time to load (parse,
compile and probe the template) and the median time to render conversations of
2, 20 and 200 messages, plus llama.cpp's built-in chatml for comparison.
"""

from __future__ import annotations

import statistics
import time

import lamina.gguf
from lamina.chat import builtin_chat_template, load_chat_template, read_model_chat_template
from lamina.testing.models import model_path


def median_ms(fn, repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def main() -> None:
    conversations = {n: [{"role": ("user", "assistant")[i % 2], "content": f"message number {i}, some words"}
                         for i in range(n)] for n in (2, 20, 200)}
    print(f"{'template':22s} {'load':>9s} " + " ".join(f"{f'{n} msgs':>10s}" for n in conversations))
    for name in ("smollm2", "qwen2"):
        source = read_model_chat_template(lamina.gguf.read(model_path(name)))
        load = median_ms(lambda: load_chat_template(model_template=source).render(conversations[2]), 20)
        template = load_chat_template(model_template=source)
        cells = [median_ms(lambda c=c: template.render(c), 50) for c in conversations.values()]
        print(f"{name + ' (jinja)':22s} {load:7.2f}ms " + " ".join(f"{ms:8.3f}ms" for ms in cells))
    chatml = builtin_chat_template("chatml")
    cells = [median_ms(lambda c=c: chatml.render(c), 50) for c in conversations.values()]
    print(f"{'chatml (built-in)':22s} {'-':>9s} " + " ".join(f"{ms:8.3f}ms" for ms in cells))


if __name__ == "__main__":
    main()
