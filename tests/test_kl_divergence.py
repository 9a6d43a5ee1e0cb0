"""KL-divergence against a base model, as llama-perplexity's --kl-divergence-base / --kl-divergence compute it.

Most real-model checks use smollm2 with -c 128 and two chunks (126 scored tokens); the
quantized model compared with it is a Q4_0 requantization made once per module. One check
repeats a row of llama-quantize's table in full (all of GPL-3.txt at -c 512, about 1.5 minutes).
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lamina.kl_divergence import (Estimate, KLDivergence, check_base_fits, kl_divergence, mean_and_uncertainty,
                                  median, open_base_log_probs, percentile, save_base_log_probs)
from lamina.llama import Llama
from lamina.log_prob_file import (MAGIC, LogProbFileError, LogProbReader, LogProbWriter, compress_log_probs,
                                  decompress_log_probs, file_bytes, row_width, scored_per_chunk)
from lamina.perplexity import chunk_count, evaluate_chunks, perplexity

N_CTX = 128
N_CHUNKS = 2
SMOLLM2_VOCAB = 49152


def _log_softmax64(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lamina.cli", "perplexity", *args],
                          capture_output=True, text=True, timeout=600)


# -- the 16-bit encoding -------------------------------------------------------------------------

def test_codes_follow_llamacpp_encoding_on_a_hand_worked_row():
    # max 2, min clamped to 2 - 16 = -14, scale 16/65535: a logit x gets rint((x + 14) * 65535 / 16)
    rows = compress_log_probs(np.array([[0.0, 1.0, 2.0, -20.0, -14.0]], dtype=np.float32))
    assert rows.shape == (1, row_width(5)) == (1, 10)
    scale, min_log_prob = rows[:, :4].copy().view(np.float32)[0]
    assert scale == np.float32(16) / np.float32(65535)
    log_norm = 2 + math.log(1 + math.exp(-1) + math.exp(-2) + math.exp(-22) + math.exp(-16))
    assert min_log_prob == pytest.approx(-14 - log_norm, abs=1e-5)
    # 0 -> 14 * 4095.9375 = 57343.125, 1 -> 61439.0625, 2 -> 65535; -20 and -14 (not above the minimum) -> 0
    assert list(rows[0, 4:9]) == [57343, 61439, 65535, 0, 0]
    assert rows[0, 9] == 0  # padding to an even count


def test_round_trip_is_within_half_a_quantization_step():
    rng = np.random.default_rng(3)
    n_vocab = 1001  # odd: the row is padded with one zero code
    logits = np.concatenate([rng.normal(0, 4, (6, n_vocab)), rng.normal(0, 0.5, (2, n_vocab)),
                             rng.uniform(-40, 20, (2, n_vocab))]).astype(np.float32)
    rows = compress_log_probs(logits)
    assert rows.shape == (10, row_width(n_vocab)) and np.all(rows[:, -1] == 0)
    decoded = decompress_log_probs(rows, n_vocab)
    exact = _log_softmax64(logits)
    scale = rows[:, :4].copy().view(np.float32)[:, 0].astype(np.float64)
    resolved = logits > (logits.max(axis=1) - 16)[:, None]
    err = np.abs(decoded - exact)
    # half a step, plus float32 rounding of values up to ~40 in magnitude
    assert np.all(err[resolved] <= (scale[:, None] / 2 + 2e-5).repeat(n_vocab, 1)[resolved])
    assert np.all(scale <= 16 / 65535 * (1 + 1e-6))
    # everything 16 nats or more below the top decodes to the floor, which is above the truth
    floor = decoded[~resolved]
    assert np.all(floor >= exact[~resolved] - 1e-5)
    assert np.all(rows[:, 4:4 + n_vocab][~resolved] == 0)
    assert np.all(rows[np.arange(10), 4 + logits.argmax(axis=1)] == 65535)


def test_a_flat_distribution_has_scale_zero_and_decodes_exactly():
    rows = compress_log_probs(np.full((2, 7), 3.5, dtype=np.float32))
    assert np.all(rows[:, :2] == 0) and np.all(rows[:, 4:] == 0)  # scale 0.0
    assert np.allclose(decompress_log_probs(rows, 7), -math.log(7), atol=1e-6)


# -- the file ------------------------------------------------------------------------------------

def _write_file(path: Path, n_ctx=8, n_vocab=11, n_chunk=2, seed=0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, n_vocab, n_chunk * n_ctx).astype(np.int32)
    chunks = [rng.normal(0, 3, (scored_per_chunk(n_ctx), n_vocab)).astype(np.float32) for _ in range(n_chunk)]
    with open(path, "wb") as f:
        writer = LogProbWriter(f, n_ctx, n_vocab, tokens)
        for c in chunks:
            writer.write_chunk(c)
    return tokens, chunks


def test_file_round_trip(tmp_path):
    path = tmp_path / "base.kld"
    tokens, chunks = _write_file(path, n_ctx=8, n_vocab=11, n_chunk=3)
    # header, tokens, 3 chunks of 3 rows of 16 uint16
    assert path.stat().st_size == file_bytes(8, 11, 3) == 20 + 4 * 24 + 3 * 3 * 16 * 2
    assert path.read_bytes()[:8] == MAGIC == b"_logits_"
    with LogProbReader(str(path)) as r:
        assert (r.header.n_ctx, r.header.n_vocab, r.header.n_chunk) == (8, 11, 3)
        assert np.array_equal(r.header.tokens, tokens)
        for c in chunks:
            assert np.array_equal(r.read_chunk(), compress_log_probs(c))
        with pytest.raises(LogProbFileError, match="all 3 chunks have been read"):
            r.read_chunk()


def _damaged(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    header = np.frombuffer(bytes(raw[8:20]), dtype="<i4").copy()
    if how == "empty":
        raw = bytearray()
    elif how == "magic":
        raw[:8] = b"GGUF\x03\x00\x00\x00"
    elif how == "short header":
        raw = raw[:14]
    elif how == "truncated":
        raw = raw[:-1]
    elif how == "trailing":
        raw += b"\0\0"
    elif how in ("n_ctx", "n_vocab", "n_chunk"):
        header[("n_ctx", "n_vocab", "n_chunk").index(how)] = 0 if how != "n_vocab" else -5
        raw[8:20] = header.tobytes()
    elif how == "huge n_chunk":
        header[2] = 2**31 - 1
        raw[8:20] = header.tobytes()
    elif how == "token":
        raw[20:24] = np.array([11], dtype="<i4").tobytes()
    elif how == "scale":
        start = 20 + 4 * 16
        raw[start:start + 4] = np.array([np.nan], dtype="<f4").tobytes()
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how, message", [
    ("empty", "truncated: 0 bytes"),
    ("magic", "does not look like a file of log-probabilities"),
    ("short header", "truncated: 14 bytes"),
    ("truncated", "truncated: .* need"),
    ("trailing", "2 unexpected bytes"),
    ("n_ctx", "n_ctx 0 .* not a usable context size"),
    ("n_vocab", "n_vocab -5"),
    ("n_chunk", "holds no chunks"),
    ("huge n_chunk", "truncated"),
    ("token", "token 0 is 11, outside the vocabulary of 11"),
    ("scale", "chunk 1, row 0: .* not a valid encoding"),
])
def test_damaged_files_are_refused_clearly(tmp_path, how, message):
    path = tmp_path / "base.kld"
    _write_file(path, n_ctx=8, n_vocab=11, n_chunk=2)
    _damaged(path, how)
    with pytest.raises(LogProbFileError, match=message) as info:
        with LogProbReader(str(path)) as r:
            r.read_chunk()
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(LogProbFileError, match="cannot open"):
        LogProbReader(str(tmp_path / "nope.kld"))


def test_vocabulary_and_context_must_match(tmp_path):
    path = tmp_path / "base.kld"
    _write_file(path, n_ctx=8, n_vocab=11, n_chunk=1)
    with pytest.raises(LogProbFileError, match="inconsistent vocabulary: the file was made with 11 tokens, "
                                               "this model has 12"):
        open_base_log_probs(str(path), n_vocab=12)
    with pytest.raises(LogProbFileError, match="context of 8, but -c 16 was given"):
        open_base_log_probs(str(path), n_vocab=11, n_ctx=16)
    with open_base_log_probs(str(path), n_vocab=11, n_ctx=8) as r:
        check_base_fits(r, 11, None)


# -- the statistics ------------------------------------------------------------------------------

def test_kld_of_a_two_token_distribution_is_kl_base_to_model():
    base = compress_log_probs(np.log(np.array([[0.5, 0.5]], dtype=np.float32)))
    s = KLDivergence()
    s.add(np.log(np.array([[0.9, 0.1]], dtype=np.float32)), base, np.array([1]))
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # KL(base || model), not the reverse
    assert s.kld().value == pytest.approx(expected, abs=1e-4)
    assert s.same_top().value == 1.0  # both put token 0 first (a tie in the base goes to the first index)
    assert s.ppl().value == pytest.approx(10.0, rel=1e-5)
    assert s.ppl_base().value == pytest.approx(2.0, rel=1e-4)
    assert s.p_diff().value == pytest.approx(0.1 - 0.5, abs=1e-4)


def test_base_entries_at_or_below_minus_16_do_not_count():
    logits = np.array([[0.0, -30.0]], dtype=np.float32)  # base: token 1 ~ e^-30, coded as the floor (-16)
    s = KLDivergence()
    s.add(np.array([[0.0, 0.0]], dtype=np.float32), compress_log_probs(logits), np.array([0]))
    assert s.kld().value == pytest.approx(math.log(2), abs=1e-4)  # only token 0's term: 1 * (0 - log 1/2)


def test_helpers_match_llamacpp_definitions():
    assert mean_and_uncertainty(10.0, 30.0, 5) == (2.0, 0.0)  # ten values or fewer: no uncertainty
    values = np.arange(20, dtype=np.float64)
    mean, unc = mean_and_uncertainty(values.sum(), (values ** 2).sum(), 20)
    assert mean == 9.5 and unc == pytest.approx(values.std() / math.sqrt(19))
    v = np.sort(np.random.default_rng(1).normal(size=101))
    for fraction in (0.001, 0.01, 0.1, 0.5, 0.95, 0.999):
        assert percentile(v, fraction) == pytest.approx(np.percentile(v, 100 * fraction))
    assert median(np.array([1.0, 2.0, 4.0, 8.0])) == 3.0 and median(np.array([1.0, 2.0, 4.0])) == 2.0


# -- real models ---------------------------------------------------------------------------------

def _llama(path) -> Llama:
    n_seq = 2048 // N_CTX
    return Llama(str(path), n_ctx=N_CTX, n_batch=n_seq * N_CTX, n_seq_max=n_seq, verbose=False)


@pytest.fixture(scope="module")
def smollm2(model_paths) -> Path:
    return model_paths["smollm2"]


@pytest.fixture(scope="module")
def smollm2_q4_0(smollm2, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kld") / "smollm2-q4_0.gguf"
    done = subprocess.run([sys.executable, "-m", "lamina.cli", "quantize", "--allow-requantize", str(smollm2),
                           str(out), "Q4_0", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def gpl3_tokens(smollm2, refdata) -> list[int]:
    return _llama(smollm2).tokenize((refdata / "text" / "GPL-3.txt").read_bytes(), add_bos=True, special=False)


@pytest.fixture(scope="module")
def base_file(smollm2, gpl3_tokens, tmp_path_factory) -> tuple[Path, float]:
    path = tmp_path_factory.mktemp("kld") / "smollm2.kld"
    llm = _llama(smollm2)
    result = save_base_log_probs(llm._ctx, gpl3_tokens, N_CTX, llm.token_bos(), llm.n_vocab(), str(path), N_CHUNKS)
    return path, result.ppl


def _all_logits(model: Path, tokens) -> tuple[np.ndarray, np.ndarray]:
    llm = _llama(model)
    got = [(c.logits.copy(), c.targets) for c in evaluate_chunks(llm._ctx, np.asarray(tokens), N_CTX,
                                                                 llm.token_bos(), N_CHUNKS)]
    return np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])


def test_base_file_holds_the_evaluated_tokens_and_its_ppl_is_plain_perplexity(base_file, smollm2, gpl3_tokens):
    path, ppl = base_file
    assert path.stat().st_size == file_bytes(N_CTX, SMOLLM2_VOCAB, N_CHUNKS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    llm = _llama(smollm2)
    plain = perplexity(llm._ctx, gpl3_tokens, N_CTX, llm.token_bos(), N_CHUNKS)
    assert ppl == plain.ppl
    with LogProbReader(str(path)) as r:
        assert (r.header.n_ctx, r.header.n_vocab, r.header.n_chunk) == (N_CTX, SMOLLM2_VOCAB, N_CHUNKS)
        assert np.array_equal(r.header.tokens, gpl3_tokens[:N_CHUNKS * N_CTX])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_model_against_itself_diverges_by_nothing(base_file, smollm2):
    path, base_ppl = base_file
    llm = _llama(smollm2)
    with open_base_log_probs(str(path), llm.n_vocab()) as r:
        s = kl_divergence(llm._ctx, r, llm.token_bos())
    assert s.count == N_CHUNKS * scored_per_chunk(N_CTX) == 126
    assert abs(s.kld().value) < 1e-4 and np.abs(s.kld_values()).max() < 1e-3  # only the 16-bit rounding
    assert s.same_top().value == 1.0
    assert s.ppl().value == pytest.approx(base_ppl, rel=1e-6)  # float32 nll, as llama-perplexity
    assert s.ppl_base().value == pytest.approx(base_ppl, rel=2e-4)
    assert s.ppl_ratio().value == pytest.approx(1.0, abs=2e-4)
    assert s.p_diff_rms().value < 1e-4


def test_another_quantization_diverges_as_an_exact_computation_says(base_file, smollm2, smollm2_q4_0, gpl3_tokens):
    path, base_ppl = base_file
    llm = _llama(smollm2_q4_0)
    with open_base_log_probs(str(path), llm.n_vocab()) as r:
        s = kl_divergence(llm._ctx, r, llm.token_bos())
    # an independent float64 computation from both models' full logits
    base_logits, targets = _all_logits(smollm2, gpl3_tokens)
    q_logits, _ = _all_logits(smollm2_q4_0, gpl3_tokens)
    base_lp, q_lp = _log_softmax64(base_logits), _log_softmax64(q_logits)
    counted = base_lp > -16
    exact_kld = (np.where(counted, np.exp(base_lp) * (base_lp - q_lp), 0)).sum(axis=1)
    rows = np.arange(len(targets))
    assert s.kld().value > 0.05
    assert s.kld().value == pytest.approx(exact_kld.mean(), rel=1e-3, abs=2e-4)
    assert np.allclose(np.sort(exact_kld), s.kld_values(), atol=2e-3)
    exact_same_top = (base_logits.argmax(axis=1) == q_logits.argmax(axis=1)).mean()
    assert abs(s.same_top().value - exact_same_top) <= 1 / len(targets)
    assert s.same_top().value < 0.95
    assert s.ppl().value == pytest.approx(math.exp(-q_lp[rows, targets].mean()), rel=1e-5)
    assert s.ppl_base().value == pytest.approx(base_ppl, rel=2e-4)
    assert s.ppl_ratio().value == pytest.approx(s.ppl().value / s.ppl_base().value, rel=1e-9)
    p_diff = np.exp(q_lp[rows, targets]) - np.exp(base_lp[rows, targets])
    assert s.p_diff().value == pytest.approx(p_diff.mean(), abs=1e-4)


def test_a_failed_base_pass_leaves_no_file(smollm2, gpl3_tokens, tmp_path):
    llm = _llama(smollm2)

    def interrupt(chunk, ppl):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_base_log_probs(llm._ctx, gpl3_tokens, N_CTX, llm.token_bos(), llm.n_vocab(), str(tmp_path / "b.kld"),
                            N_CHUNKS, interrupt)
    assert list(tmp_path.iterdir()) == []


def test_commands_print_llamacpp_statistics(smollm2, smollm2_q4_0, refdata, tmp_path):
    base = tmp_path / "base.kld"
    done = _cli("-m", str(smollm2), "-f", str(refdata / "text" / "GPL-3.txt"), "-c", str(N_CTX),
                "--chunks", str(N_CHUNKS), "--kl-divergence-base", str(base))
    assert done.returncode == 0, done.stderr
    assert "Final estimate: PPL = " in done.stdout and base.stat().st_size == file_bytes(N_CTX, SMOLLM2_VOCAB, 2)
    done = _cli("-m", str(smollm2_q4_0), "--kl-divergence-base", str(base), "--kl-divergence")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "chunk             PPL               ln(PPL(Q)/PPL(base))" in out
    assert [line.split()[0] for line in out.splitlines() if line[:4].strip().isdigit()] == ["1", "2"]
    for label in ("Mean PPL(Q)                   :", "Mean PPL(base)                :",
                  "Cor(ln(PPL(Q)), ln(PPL(base))):",
                  "Mean ln(PPL(Q)/PPL(base))     :", "Mean PPL(Q)/PPL(base)         :", "Mean    KLD:",
                  "Maximum KLD:", "99.9%   KLD:", "Median  KLD:", " 0.1%   KLD:", "Minimum KLD:", "Mean    Δp:",
                  "RMS Δp    :", "Same top p:"):
        assert sum(line.startswith(label) for line in out.splitlines()) == 1, label
    kld = float(next(line for line in out.splitlines() if line.startswith("Mean    KLD:")).split()[2])
    assert kld > 0.05


def test_command_errors_are_clear(smollm2, tmp_path):
    done = _cli("-m", str(smollm2), "--kl-divergence")
    assert done.returncode == 1 and "--kl-divergence needs --kl-divergence-base FILE" in done.stderr
    done = _cli("-m", str(smollm2), "--kl-divergence-base", str(tmp_path / "x.kld"))
    assert done.returncode == 1 and "give -f FILE" in done.stderr
    bad = tmp_path / "bad.kld"
    bad.write_bytes(b"GGUF" + bytes(100))
    done = _cli("-m", str(smollm2), "--kl-divergence-base", str(bad), "--kl-divergence")
    assert done.returncode == 1 and "does not look like a file of log-probabilities" in done.stderr
    assert "Traceback" not in done.stderr
    other_vocab = tmp_path / "other.kld"
    _write_file(other_vocab, n_ctx=8, n_vocab=11, n_chunk=1)
    done = _cli("-m", str(smollm2), "--kl-divergence-base", str(other_vocab), "--kl-divergence")
    assert done.returncode == 1 and "inconsistent vocabulary: the file was made with 11 tokens" in done.stderr
    same_vocab = tmp_path / "same.kld"
    _write_file(same_vocab, n_ctx=8, n_vocab=SMOLLM2_VOCAB, n_chunk=1)
    done = _cli("-m", str(smollm2), "-c", "512", "--kl-divergence-base", str(same_vocab), "--kl-divergence")
    assert done.returncode == 1 and "computed with a context of 8, but -c 512 was given" in done.stderr
    assert "Traceback" not in done.stderr


def test_chunk_count_follows_llamacpp():
    assert chunk_count(7639, 512) == 14 and chunk_count(7639, 512, 3) == 3 and chunk_count(7639, 512, 99) == 14


def test_a_chunk_limit_of_zero_is_a_clear_error(smollm2, refdata, tmp_path):
    done = _cli("-m", str(smollm2), "-f", str(refdata / "text" / "GPL-3.txt"), "-c", str(N_CTX), "--chunks", "0",
                "--kl-divergence-base", str(tmp_path / "b.kld"))
    assert done.returncode == 1 and "no chunks to evaluate" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def _quantize(src: Path, dst: Path, type_name: str, *options: str) -> Path:
    command = [sys.executable, "-m", "lamina.cli", "quantize", *options, str(src), str(dst), type_name, "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return dst


def test_quality_columns_reproduce_llamacpp_quantize_table(smollm2, gpl3_tokens, refdata, tmp_path):
    """quantize-smollm2.json's Q4_0 row, made as llama.cpp made it: Q4_1 -> F16 -> Q4_0, then the
    KL-divergence of Q4_0 against F16 over all of GPL-3.txt at -c 512. Each quality column must lie
    within the uncertainty lamina reports for it (Q4_0's kernel is ggml's to the bit; F16's is not)."""
    expected = json.loads((refdata / "llamacpp" / "quantize-smollm2.json").read_text())["outputs"]["Q4_0"]["vs_F16"]
    f16 = _quantize(smollm2, tmp_path / "f16.gguf", "F16", "--allow-requantize")
    q4_0 = _quantize(f16, tmp_path / "q4_0.gguf", "Q4_0")
    n_ctx = 512
    base_path = str(tmp_path / "f16.kld")
    base = Llama(str(f16), n_ctx=n_ctx, n_batch=2048, n_seq_max=4, verbose=False)
    save_base_log_probs(base._ctx, gpl3_tokens, n_ctx, base.token_bos(), base.n_vocab(), base_path)
    del base
    quant = Llama(str(q4_0), n_ctx=n_ctx, n_batch=2048, n_seq_max=4, verbose=False)
    with open_base_log_probs(base_path, quant.n_vocab(), n_ctx) as reader:
        s = kl_divergence(quant._ctx, reader, quant.token_bos())
    assert s.count == 14 * scored_per_chunk(n_ctx)
    measured = {"ppl": s.ppl(), "ppl_ratio": s.ppl_ratio(), "mean_kld": s.kld(),
                "same_top_p_percent": Estimate(100 * s.same_top().value, 100 * s.same_top().uncertainty)}
    for column, estimate in measured.items():
        assert abs(estimate.value - expected[column]) <= estimate.uncertainty, (column, estimate, expected[column])
