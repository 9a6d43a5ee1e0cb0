"""``lamina tokenize``: llama-tokenize's output format and options."""

from __future__ import annotations

import pytest

from lamina.cli import main as lamina_main
from lamina.cli.tokenize import main, process_escapes


def run(capsysbinary, argv) -> tuple[int, bytes, bytes]:
    code = main(argv)
    out = capsysbinary.readouterr()
    return code, out.out, out.err


def test_pieces_and_ids_like_llama_tokenize(model_paths, capsysbinary):
    model = str(model_paths["qwen2"])
    code, out, _ = run(capsysbinary, ["-m", model, "-p", "<|im_start|>user\nHello"])
    assert code == 0
    assert out == (b"151644 -> '<|im_start|>'\n"
                   b"   872 -> 'user'\n"
                   b"   198 -> '\n'\n"
                   b"  9707 -> 'Hello'\n")
    code, out, _ = run(capsysbinary, ["-m", model, "-p", "<|im_start|>Hi", "--ids", "--no-parse-special",
                                      "--show-count"])
    assert out == b"[27, 91, 318, 4906, 91, 29, 13048]\nTotal number of tokens: 7\n"


def test_bos_is_added_unless_no_bos(model_paths, capsysbinary, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_bytes(b"The capital of France is")
    model = str(model_paths["gemma3"])
    _, out, _ = run(capsysbinary, ["-m", model, "-f", str(prompt), "--ids"])
    assert out == b"[2, 818, 5279, 529, 7001, 563]\n"
    _, out, _ = run(capsysbinary, ["-m", model, "-f", str(prompt), "--ids", "--no-bos"])
    assert out == b"[818, 5279, 529, 7001, 563]\n"


def test_dispatch_through_the_lamina_command(model_paths, capsysbinary):
    assert lamina_main(["tokenize", "-m", str(model_paths["smollm2"]), "-p", "The capital of France is",
                        "--ids"]) == 0
    assert capsysbinary.readouterr().out == b"[504, 3575, 282, 4649, 314]\n"


def test_errors_are_reported_not_raised(capsysbinary, tmp_path):
    code, _, err = run(capsysbinary, ["-m", str(tmp_path / "missing.gguf"), "-p", "x"])
    assert code == 1 and b"missing.gguf" in err
    code, _, err = run(capsysbinary, ["-m", "m.gguf", "-f", str(tmp_path / "nope.txt")])
    assert code == 1 and b"nope.txt" in err
    with pytest.raises(SystemExit) as caught:
        main(["-m", "m.gguf"])
    assert caught.value.code == 2


def test_escapes_like_llamacpp():
    assert process_escapes(rb"a\nb\tc\\d\x41\q") == b"a\nb\tc\\dA\\q"
