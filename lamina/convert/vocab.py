"""The ``tokenizer.*`` keys of a converted model, from its Hugging Face tokenizer files.

Two kinds of tokenizer are read, as llama.cpp's converter reads them:

* ``tokenizer.json`` with a BPE model (GPT-2 style, ``tokenizer.ggml.model = gpt2``), through the
  ``tokenizers`` package (Hugging Face's own). Its pre-tokenizer cannot be read off the file in a
  form llama.cpp understands, so it is *recognised*: the check text below is tokenized and the
  sha256 of the ids is looked up in llama.cpp's table of known tokenizers
  (``bpe_pre_tokenizers.json``, extracted from the converter). An unknown hash is refused, as
  the converter refuses it.
* ``tokenizer.model`` (SentencePiece, ``tokenizer.ggml.model = llama``), through the
  ``sentencepiece`` package: pieces, scores and token types, then the added tokens of
  ``added_tokens.json`` and ``tokenizer_config.json``.

Special tokens (BOS, EOS, padding …), whether BOS/EOS are added, merges and the chat template
come from ``tokenizer.json``'s post-processor, ``tokenizer_config.json`` (or
``chat_template.jinja``/``chat_template.json``) and ``config.json`` (:class:`SpecialTokens`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from .checkpoint import ConvertError, read_json_file
from .keys import KeyValues

# llama.cpp's token types (llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_ID_KEYS = {"bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
            "unk": "tokenizer.ggml.unknown_token_id", "sep": "tokenizer.ggml.seperator_token_id",
            "pad": "tokenizer.ggml.padding_token_id", "mask": "tokenizer.ggml.mask_token_id",
            "eot": "tokenizer.ggml.eot_token_id", "eom": "tokenizer.ggml.eom_token_id"}


@functools.cache
def _known_pre_tokenizers() -> dict[str, Any]:
    with open(Path(__file__).with_name("bpe_pre_tokenizers.json"), encoding="utf-8") as f:
        return json.load(f)


def looks_special(token: str) -> bool:
    """Added tokens llama.cpp treats as control tokens even when the tokenizer does not mark them special."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<｜") and token.endswith("｜>"))
            or (token.startswith("<unused") and token.endswith(">")))


def _load_tokenizer(folder: Path):
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exceptions for every malformed file
        raise ConvertError(f"{path}: cannot be read by the tokenizers package: {e}") from None


def bpe_pre_tokenizer(tokenizer) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer, recognised by the hash of its check text's ids."""
    table = _known_pre_tokenizers()
    ids = tokenizer.encode(table["check_text"]).ids
    digest = hashlib.sha256(str(ids).encode()).hexdigest()
    known = table["hashes"].get(digest)
    if known is None:
        raise ConvertError(f"the BPE pre-tokenizer of this tokenizer.json is not one llama.cpp knows (check "
                           f"hash {digest}); llama.cpp's converter refuses it too until the model is added to "
                           "its convert_hf_to_gguf_update.py")
    return known["pre"]


def write_bpe_vocab(folder: Path, hparams: dict[str, Any], kv: KeyValues) -> None:
    """``tokenizer.json`` (BPE) -> ``tokenizer.ggml.model = gpt2``, its tokens, types and merges."""
    tokenizer = _load_tokenizer(folder)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    vocab_size = hparams.get("vocab_size", len(vocab))
    if vocab and max(vocab.values()) >= vocab_size:
        raise ConvertError(f"{folder / 'tokenizer.json'}: token id {max(vocab.values())} is outside the model's "
                           f"vocab_size {vocab_size} (config.json)")
    pre = bpe_pre_tokenizer(tokenizer)
    by_id = {i: text for text, i in vocab.items()}
    added = tokenizer.get_added_tokens_decoder()
    added_texts = {t.content for t in added.values()}
    clean_up = _tokenizer_config(folder).get("clean_up_tokenization_spaces") is True
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        token = by_id[i]
        if token in added_texts:
            if i in added and not added[i].normalized:
                # llama.cpp expects added tokens pre-normalised: the converter round-trips them
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False).ids,
                                         skip_special_tokens=False)
                if clean_up:
                    token = _clean_up_spaces(token)
            if (i in added and added[i].special) or looks_special(token):
                types.append(CONTROL)
            else:
                token = token.replace("\u2581", " ")  # user-defined SentencePiece spaces
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(token)
    kv.string("tokenizer.ggml.model", "gpt2")
    kv.string("tokenizer.ggml.pre", pre)
    kv.array("tokenizer.ggml.tokens", tokens)
    kv.array("tokenizer.ggml.token_type", types)
    SpecialTokens(folder, load_merges=True).write(kv)


def _clean_up_spaces(text: str) -> str:
    """transformers' ``clean_up_tokenization``: no space before punctuation and English contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


def write_sentencepiece_vocab(folder: Path, hparams: dict[str, Any], kv: KeyValues) -> None:
    """``tokenizer.model`` -> ``tokenizer.ggml.model = llama``: pieces, scores and token types."""
    tokens, scores, types = sentencepiece_tokens(folder, hparams)
    kv.string("tokenizer.ggml.model", "llama")
    kv.string("tokenizer.ggml.pre", "default")
    kv.array("tokenizer.ggml.tokens", tokens)
    kv.array("tokenizer.ggml.scores", scores)
    kv.array("tokenizer.ggml.token_type", types)
    SpecialTokens(folder, n_vocab=len(tokens)).write(kv)


def sentencepiece_tokens(folder: Path, hparams: dict[str, Any]) -> tuple[list[str], list[float], list[int]]:
    from sentencepiece import SentencePieceProcessor

    path = folder / "tokenizer.model"
    processor = SentencePieceProcessor()
    try:
        processor.LoadFromFile(str(path))
    except (OSError, RuntimeError) as e:
        raise ConvertError(f"{path}: not a SentencePiece model: {e}") from None
    vocab_size = hparams.get("vocab_size") or processor.vocab_size()
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [UNUSED] * vocab_size
    for i in range(min(processor.vocab_size(), vocab_size)):
        tokens[i] = processor.IdToPiece(i)
        scores[i] = processor.GetScore(i)
        types[i] = (UNKNOWN if processor.IsUnknown(i) else CONTROL if processor.IsControl(i)
                    else UNUSED if processor.IsUnused(i) else BYTE if processor.IsByte(i) else NORMAL)
    added_path = folder / "added_tokens.json"
    if added_path.is_file():
        for text, i in read_json_file(added_path).items():
            if isinstance(i, int) and 0 <= i < vocab_size:
                tokens[i], scores[i], types[i] = text, -1000.0, USER_DEFINED
    for key, data in _tokenizer_config(folder).get("added_tokens_decoder", {}).items():
        i = int(key)
        if not 0 <= i < vocab_size or not isinstance(data, dict) or not isinstance(data.get("content"), str):
            continue
        text = data["content"]
        if data.get("special") or looks_special(text):
            types[i] = CONTROL
        else:
            text = text.replace("\u2581", " ")
            types[i] = USER_DEFINED
        scores[i], tokens[i] = -1000.0, text
    return tokens, scores, types


def _tokenizer_config(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer_config.json"
    config = read_json_file(path) if path.is_file() else {}
    return config if isinstance(config, dict) else {}


class SpecialTokens:
    """Special token ids, add-BOS/EOS flags, merges and chat template (gguf-py's ``SpecialVocab``)."""

    def __init__(self, folder: Path, load_merges: bool = False, n_vocab: int | None = None,
                 types: tuple[str, ...] = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")):
        self.folder = folder
        self.load_merges = load_merges
        self.n_vocab = n_vocab
        self.types = types
        self.ids: dict[str, int] = {}
        self.add: dict[str, bool] = {}
        self.merges: list[str] = []
        self.chat_template: Any = None
        self.lowercase: bool | None = None
        self.strip_accents: bool | None = None
        self._from_tokenizer_files()
        self._from_config()

    def set_id(self, kind: str, token_id: Any) -> None:
        """Record a special token id; the first one found for a kind stays, as in llama.cpp."""
        if not isinstance(token_id, int) or isinstance(token_id, bool):
            return
        if token_id < 0:
            raise ConvertError(f"{self.folder}: special token {kind} has a negative id {token_id}")
        if (self.n_vocab is None or token_id < self.n_vocab) and kind not in self.ids:
            self.ids[kind] = token_id

    def write(self, kv: KeyValues) -> None:
        if self.merges:
            kv.array("tokenizer.ggml.merges", self.merges)
        for kind, token_id in self.ids.items():
            if kind in _ID_KEYS:  # llama.cpp's converter has no key for cls, prefix, suffix ... ids: it skips them
                kv.u32(_ID_KEYS[kind], token_id)
        for kind, value in self.add.items():
            if kind in ("bos", "eos", "sep"):
                kv.boolean(f"tokenizer.ggml.add_{kind}_token", value)
        if self.chat_template is not None:
            write_chat_template(kv, self.chat_template)
        if self.lowercase is not None:
            kv.boolean("tokenizer.ggml.normalizer.lowercase", self.lowercase)
        if self.strip_accents is not None:
            kv.boolean("tokenizer.ggml.normalizer.strip_accents", self.strip_accents)

    # -- reading -------------------------------------------------------------------------------
    def _from_tokenizer_files(self) -> None:
        tokenizer_path = self.folder / "tokenizer.json"
        tokenizer = read_json_file(tokenizer_path) if tokenizer_path.is_file() else None
        added_tokens: list = []
        if isinstance(tokenizer, dict):
            model = tokenizer.get("model") or {}
            if self.load_merges:
                self.merges = _merges(model.get("merges"), tokenizer_path)
            if isinstance(tokenizer.get("normalizer"), dict):
                self._normalizer(tokenizer["normalizer"])
            added_tokens = tokenizer.get("added_tokens") or []
        config = _tokenizer_config(self.folder) if (self.folder / "tokenizer_config.json").is_file() else None
        if isinstance(tokenizer, dict):
            self._post_processor(tokenizer.get("post_processor"), config)
        if not config:
            return
        self.chat_template = config.get("chat_template", self._template_files())
        if not (self.chat_template is None or isinstance(self.chat_template, (str, list))):
            self.chat_template = None  # llama.cpp ignores a template of another type
        for kind in self.types:
            add = config.get(f"add_{kind}_token")
            if isinstance(add, bool) and kind not in self.add:
                self.add[kind] = add
            entry = config.get(f"{kind}_token")
            content = entry.get("content") if isinstance(entry, dict) else entry
            if not isinstance(content, str):
                continue
            token_id = next((t.get("id") for t in added_tokens if isinstance(t, dict) and t.get("content") == content),
                            None)
            self.set_id(kind, token_id)

    def _template_files(self) -> Any:
        jinja, as_json = self.folder / "chat_template.jinja", self.folder / "chat_template.json"
        if jinja.is_file():
            template = jinja.read_text(encoding="utf-8")
            extra = sorted((self.folder / "additional_chat_templates").glob("*.jinja"))
            if extra:
                return [{"name": "default", "template": template}] + [
                    {"name": p.stem, "template": p.read_text(encoding="utf-8")} for p in extra]
            return template
        if as_json.is_file():
            data = read_json_file(as_json)
            return data.get("chat_template") if isinstance(data, dict) else None
        return None

    def _normalizer(self, normalizer: dict) -> None:
        kind = normalizer.get("type")
        if kind == "Lowercase":
            self.lowercase = True
        elif kind == "StripAccents":
            self.strip_accents = True
        elif kind == "BertNormalizer":
            if "lowercase" in normalizer:
                self.lowercase = normalizer["lowercase"]
            if "strip_accents" in normalizer:
                self.strip_accents = normalizer["strip_accents"]
        elif kind == "Sequence":
            for item in normalizer.get("normalizers", []):
                if isinstance(item, dict):
                    self._normalizer(item)

    def _post_processor(self, processor: Any, config: dict | None) -> None:
        """Whether BOS/EOS/SEP are added, read off the post-processor as llama.cpp reads it."""
        if not isinstance(processor, dict):
            return
        config = config if config else None
        bos = (config or {}).get("bos_token")
        cls_ = (config or {}).get("cls_token")
        eos = (config or {}).get("eos_token")
        sep = (config or {}).get("sep_token")
        if not bos and cls_ and config:
            config["bos_token"] = bos = cls_
        if not eos and sep and config:
            config["eos_token"] = eos = sep
        for step in processor.get("processors", [processor]):
            kind = step.get("type") if isinstance(step, dict) else None
            if kind == "ByteLevel":
                self.add.setdefault("bos", False)
                self.add.setdefault("eos", False)
            elif kind == "RobertaProcessing":
                self.add.update(bos=True, eos=True, sep=True)
                if not cls_ and config:
                    config["cls_token"] = cls_ = step.get("cls", [bos])[0]
                if not sep and config:
                    config["sep_token"] = sep = step.get("sep", [eos])[0]
            elif kind == "TemplateProcessing":
                bos, cls_, eos, sep = self._template_processing(step, config, bos, cls_, eos, sep)

    def _template_processing(self, step: dict, config: dict | None, bos, cls_, eos, sep):
        single = step.get("single", [])
        pair = step.get("pair", [])
        first = last = None
        if len(single) > 1:
            first = single[0].get("SpecialToken", {}).get("id")
            if first:
                if not config:
                    bos = first
                elif first not in (bos, cls_):
                    if not bos:
                        config["bos_token"] = bos = first
                    if not cls_:
                        config["cls_token"] = cls_ = first
                self.add["bos"] = first in (bos, cls_)
            last = single[-1].get("SpecialToken", {}).get("id")
            if last:
                if not config:
                    eos = last
                elif last != eos:
                    if "eot" not in self.types:
                        self.types = (*self.types, "eot")
                        config["eot_token"] = eos
                    elif "eom" not in self.types:
                        self.types = (*self.types, "eom")
                        config["eom_token"] = eos
                    config["eos_token"] = eos = last
                self.add["eos"] = last == eos
        if pair:
            start = 1 if first and pair[0].get("SpecialToken", {}).get("id") == first else 0
            stop = -1 if last and pair[-1].get("SpecialToken", {}).get("id") == last else None
            middle = pair[slice(start, stop)]
            if middle and middle[0].get("Sequence", {}).get("id") == "A" and \
                    middle[-1].get("Sequence", {}).get("id") == "B" and middle[1:-1]:
                inner = middle[1:-1]
                add_sep = False
                entry = inner[0].get("SpecialToken", {}).get("id")
                if entry and entry in (sep, eos) and not last:
                    add_sep = True
                if len(inner) == 2:
                    entry = inner[1].get("SpecialToken", {}).get("id")
                    if entry and entry in (sep, eos):
                        add_sep = True
                self.add["sep"] = add_sep
                if add_sep and not sep and config:
                    config["sep_token"] = eos
        return bos, cls_, eos, sep

    def _from_config(self) -> None:
        path = self.folder / "config.json"
        if not path.is_file():
            return
        config = read_json_file(path)
        if not isinstance(config, dict):
            return
        for kind in self.types:
            token_id = config.get(f"{kind}_token_id")
            if token_id is None and isinstance(config.get("text_config"), dict):
                token_id = config["text_config"].get(f"{kind}_token_id")
            self.set_id(kind, token_id)


def _merges(merges: Any, path: Path) -> list[str]:
    if not isinstance(merges, list) or not merges:
        return []
    if all(isinstance(m, str) for m in merges):
        return merges
    if all(isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m) for m in merges):
        # the pair form (transformers >= 4.45): a space inside a part is written as U+0120 + 256
        return [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair)
                for pair in merges]
    raise ConvertError(f"{path}: the BPE merges are neither strings nor pairs of strings")


def write_chat_template(kv: KeyValues, template: Any) -> None:
    """``tokenizer.chat_template`` (and named ``tokenizer.chat_template.<name>`` ones for a list)."""
    if isinstance(template, str):
        kv.string("tokenizer.chat_template", template)
        return
    default, names = None, []
    for choice in template:
        if not isinstance(choice, dict):
            continue
        name = "".join(c if c.isascii() and c.isalnum() else "_" for c in str(choice.get("name", "")))
        text = choice.get("template")
        if name and text is not None:
            if name == "default":
                default = text
            else:
                names.append(name)
                kv.string(f"tokenizer.chat_template.{name}", text)
    if names:
        kv.array("tokenizer.chat_templates", sorted(set(names)))
    if default is not None:
        kv.string("tokenizer.chat_template", default)
