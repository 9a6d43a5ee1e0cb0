"""``lamina quantize``: llama-quantize's command line.

    lamina quantize [options] model-f32.gguf [model-quant.gguf] type [nthreads]

Options come first, as llama-quantize reads them; ``type`` is a target name
(``Q4_K_M``, ``IQ4_XS``, ``F16``...) or its file-type number. Without an output
name the result is ``ggml-model-TYPE.gguf`` beside the input. Any failure (bad
type, input already quantized without ``--allow-requantize``, disk full) prints one
``error:`` line, exits with status 1 and leaves no output file.
"""

from __future__ import annotations

import os
import sys
import time

from lamina.gguf import MetadataValue, ValueType

USAGE = """\
usage: lamina quantize [--help] [--allow-requantize] [--leave-output-tensor] [--pure] [--imatrix FILE]
       [--include-weights NAME] [--exclude-weights NAME] [--output-tensor-type TYPE]
       [--token-embedding-type TYPE] [--tensor-type NAME=TYPE] [--tensor-type-file FILE]
       [--override-kv KEY=TYPE:VALUE] [--dry-run]
       model-f32.gguf [model-quant.gguf] type [nthreads]

  --allow-requantize          allow requantizing tensors that have already been quantized
                              WARNING: this can severely reduce quality compared to quantizing
                                       from 16bit or 32bit!
  --leave-output-tensor       leave output.weight un(re)quantized
                              increases model size but may also increase quality, especially when requantizing
  --pure                      disable k-quant mixtures and quantize all tensors to the same type
  --imatrix FILE              use data in FILE (llama-imatrix's GGUF or legacy .dat format) as importance
                              matrix for quant optimizations
  --include-weights NAME      use importance matrix for this/these tensor(s)
  --exclude-weights NAME      do not use importance matrix for this/these tensor(s)
  --output-tensor-type TYPE   use this ggml type for the output.weight tensor
  --token-embedding-type TYPE use this ggml type for the token embeddings tensor
  --tensor-type NAME=TYPE     quantize the tensors whose name matches the regex NAME to this ggml type
                              (may be given several times), e.g. --tensor-type attn_q=q8_0
  --tensor-type-file FILE     NAME=TYPE pairs separated by spaces or newlines
  --override-kv KEY=TYPE:VALUE
                              set this metadata key in the quantized model (TYPE: int, float, bool, str);
                              may be given several times
  --dry-run                   calculate and show the final quantization size without quantizing
  nthreads                    threads to quantize with (default: all cores)

note: --include-weights and --exclude-weights cannot be used together
"""


class UsageError(Exception):
    """Bad command line: print the message (and a hint) and exit 1."""


def targets_table() -> str:
    from lamina.quants.mix import TARGETS, ggml_name

    lines = ["-----------------------------------------------------------------------------",
             " allowed quantization types (bits per weight of the type most tensors get)",
             "-----------------------------------------------------------------------------", ""]
    for t in TARGETS:
        head = f"  {t.ftype:2d}  or  " if t.name != "COPY" else "          "
        if t.bits_per_weight is None:
            bpw = " " * 23
        else:
            mix = t.name not in ("F16", "BF16", "F32") and t.name != t.default_type
            bpw = f"{t.bits_per_weight:5.2f} bpw" + (f" ({ggml_name(t.default_type)} mix)" if mix else "")
            bpw = f"{bpw:<23s}"
        lines.append(f"{head}{t.name:<9s} : {bpw} {t.description.strip()}")
    return "\n".join(lines)


def _need(argv: list[str], i: int, option: str) -> str:
    if i + 1 >= len(argv):
        raise UsageError(f"option {option} needs a value")
    return argv[i + 1]


def _parse_tensor_type(text: str) -> tuple[str, str]:
    from lamina.quants.mix import parse_ggml_type

    if "=" not in text:
        raise UsageError(f"malformed tensor type '{text}' (expected NAME=TYPE)")
    name, _, qtype = text.partition("=")
    if not name:
        raise UsageError("missing tensor name in --tensor-type")
    if not qtype:
        raise UsageError("missing quantization type in --tensor-type")
    return name.lower(), parse_ggml_type(qtype).name


def _parse_override(text: str) -> tuple[str, MetadataValue]:
    """llama.cpp's KEY=TYPE:VALUE (int values are stored as UINT32 of their magnitude, floats as FLOAT32)."""
    key, sep, rest = text.partition("=")
    if not sep or not key or len(key) > 127:
        raise UsageError(f"malformed KV override '{text}' (expected KEY=TYPE:VALUE)")
    kind, sep, value = rest.partition(":")
    if not sep:
        raise UsageError(f"malformed KV override '{text}' (expected KEY=TYPE:VALUE)")
    try:
        if kind == "int":
            return key, MetadataValue(abs(int(value)) & 0xFFFFFFFF, ValueType.UINT32)
        if kind == "float":
            return key, MetadataValue(float(value), ValueType.FLOAT32)
        if kind == "bool":
            if value not in ("true", "false"):
                raise ValueError("bool must be true or false")
            return key, MetadataValue(value == "true", ValueType.BOOL)
        if kind == "str":
            if len(value) > 127:
                raise ValueError("string values are limited to 127 characters")
            return key, MetadataValue(value, ValueType.STRING)
    except ValueError as e:
        raise UsageError(f"invalid KV override '{text}': {e}") from None
    raise UsageError(f"invalid type for KV override '{text}' (use int, float, bool or str)")


def parse_args(argv: list[str]):
    """llama-quantize's argument parsing; returns (QuantizeRequest, include, exclude, imatrix path)."""
    from lamina.quants.mix import RecipeError, parse_ggml_type, parse_target
    from lamina.quants.model_quantize import QuantizeRequest

    opts = dict(allow_requantize=False, leave_output_tensor=False, pure=False, dry_run=False,
                output_tensor_type=None, token_embedding_type=None)
    overrides, kv, include, exclude = [], [], [], []
    imatrix_path = None
    i = 0
    try:
        while i < len(argv) and argv[i].startswith("--"):
            a = argv[i]
            if a == "--leave-output-tensor":
                opts["leave_output_tensor"] = True
            elif a == "--allow-requantize":
                opts["allow_requantize"] = True
            elif a == "--pure":
                opts["pure"] = True
            elif a == "--dry-run":
                opts["dry_run"] = True
            elif a in ("--output-tensor-type", "--token-embedding-type"):
                key = a[2:].replace("-", "_")
                opts[key] = parse_ggml_type(_need(argv, i, a)).name
                i += 1
            elif a == "--tensor-type":
                overrides.append(_parse_tensor_type(_need(argv, i, a)))
                i += 1
            elif a == "--tensor-type-file":
                path = _need(argv, i, a)
                try:
                    with open(path, encoding="utf-8") as fh:
                        words = fh.read().split()
                except OSError as e:
                    raise UsageError(f"failed to open file '{path}': {e.strerror or e}") from None
                overrides.extend(_parse_tensor_type(w) for w in words)
                i += 1
            elif a == "--override-kv":
                kv.append(_parse_override(_need(argv, i, a)))
                i += 1
            elif a == "--imatrix":
                imatrix_path = _need(argv, i, a)
                i += 1
            elif a == "--include-weights":
                include.append(_need(argv, i, a))
                i += 1
            elif a == "--exclude-weights":
                exclude.append(_need(argv, i, a))
                i += 1
            elif a == "--max-buffer-size":
                value = _need(argv, i, a)
                if not value.isdigit() or int(value) <= 0:
                    raise UsageError(f"invalid --max-buffer-size '{value}'")
                i += 1  # lamina always streams in small slabs; accepted for compatibility
            elif a in ("--keep-split", "--prune-layers"):
                raise UsageError(f"{a} is not supported by lamina quantize")
            else:
                raise UsageError(f"unknown option {a}")
            i += 1
        if include and exclude:
            raise UsageError("--include-weights and --exclude-weights cannot be used together")
        rest = argv[i:]
        if len(rest) < 2:
            raise UsageError("bad arguments: need an input model and a quantization type")
        fname_inp = rest[0]
        target = parse_target(rest[1])
        if target is not None:
            fname_out = None if opts["dry_run"] else os.path.join(
                os.path.dirname(fname_inp), f"ggml-model-{target.name}.gguf")
            rest = rest[2:]
        else:
            fname_out = rest[1]
            if len(rest) < 3:
                raise UsageError("missing ftype (the quantization type)")
            target = parse_target(rest[2])
            if target is None:
                raise UsageError(f"invalid ftype '{rest[2]}' (see lamina quantize --help for the allowed types)")
            rest = rest[3:]
        nthreads = 0
        if rest:
            try:
                nthreads = int(rest[0])
            except ValueError:
                raise UsageError(f"invalid nthread '{rest[0]}'") from None
            if len(rest) > 1:
                raise UsageError(f"unexpected arguments after nthreads: {' '.join(rest[1:])}")
    except RecipeError as e:
        raise UsageError(str(e)) from None
    request = QuantizeRequest(
        input_path=fname_inp, output_path=fname_out, target=target, nthreads=nthreads,
        tensor_type_overrides=overrides, kv_overrides=kv, imatrix_path=imatrix_path, **opts)
    return request, include, exclude


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n" + targets_table())
        return 0 if argv else 1
    t_start = time.perf_counter()
    try:
        request, include, exclude = parse_args(argv)
    except UsageError as e:
        print(f"error: {e}\n(run 'lamina quantize --help' for usage and the allowed types)", file=sys.stderr)
        return 1

    from lamina.gguf import GGUFError
    from lamina.quants.imatrix import ImatrixError, read_imatrix
    from lamina.quants.model_quantize import QuantizeError, describe_file_type, quantize_model

    if request.output_path is not None:
        try:
            same = os.path.exists(request.output_path) and os.path.samefile(request.input_path, request.output_path)
        except OSError:
            same = False
        if same:
            print(f"error: input and output files are the same: '{request.input_path}'", file=sys.stderr)
            return 1
    if request.imatrix_path:
        try:
            matrix = read_imatrix(request.imatrix_path)
        except ImatrixError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if matrix.datasets:
            print(f"load_imatrix: imatrix datasets={matrix.datasets}")
        print(f"load_imatrix: loaded {len(matrix.weights)} importance matrix entries from {request.imatrix_path} "
              f"computed on {matrix.chunk_count} chunks")
        matrix = matrix.select(include, exclude)
        if matrix.weights:
            print(f"prepare_imatrix: have {len(matrix.weights)} importance matrix entries")
            request.imatrix = matrix

    action = "calculating quantization size for" if request.dry_run else "quantizing"
    where = "" if request.dry_run else f" to '{request.output_path}'"
    threads = f" using {request.nthreads} threads" if request.nthreads > 0 else ""
    print(f"main: {action} '{request.input_path}'{where} as {request.target.name}{threads}", file=sys.stderr)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        report = quantize_model(request, log=log)
    except (QuantizeError, GGUFError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        target = request.output_path or request.input_path
        print(f"error: failed to write '{target}': {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; no output file was written", file=sys.stderr)
        return 130

    mib = 1024.0 * 1024.0
    print(f"model size  = {report.size_in / mib:8.2f} MiB ({report.size_in * 8.0 / report.n_elements:.2f} BPW)",
          file=sys.stderr)
    print(f"quant size  = {report.size_out / mib:8.2f} MiB ({report.size_out * 8.0 / report.n_elements:.2f} BPW)",
          file=sys.stderr)
    print(f"file type   = {describe_file_type(report.file_type)} ({report.file_type})", file=sys.stderr)
    if report.n_fallback:
        print(f"WARNING: {report.n_fallback} of {len(report.tensors)} tensor(s) required fallback quantization",
              file=sys.stderr)
    print()
    print(f"main: quantize time = {report.seconds * 1000:8.2f} ms")
    print(f"main:    total time = {(time.perf_counter() - t_start) * 1000:8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
