"""``general.*`` metadata of a converted model: its name, authorship, licence, lineage and sampling.

Gathered as llama.cpp's converter gathers it (gguf-py's ``Metadata.load``), in this order of
precedence: ``--model-name``; the ``--metadata`` override file (a JSON object of GGUF keys);
the model card's YAML front matter (``README.md``); ``_name_or_path`` in ``config.json``; the
folder's name. Names such as ``Mistral-7B-Instruct-v0.2`` are read for their parts (base name,
size label, fine-tune, version) by the same heuristics, and recommended sampling settings come
from ``generation_config.json``. The default output file name (``<Name>-<Size>-<Type>.gguf``)
is llama.cpp's naming convention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import ConvertError, read_json_file
from .keys import KeyValues

# (attribute, generation_config.json key, GGUF key, type) for the recommended sampling settings
_SAMPLING = [
    ("sampling_sequence", "sequence", "general.sampling.sequence", "str"),
    ("sampling_top_k", "top_k", "general.sampling.top_k", "i32"),
    ("sampling_top_p", "top_p", "general.sampling.top_p", "f32"),
    ("sampling_min_p", "min_p", "general.sampling.min_p", "f32"),
    ("sampling_xtc_probability", "xtc_probability", "general.sampling.xtc_probability", "f32"),
    ("sampling_xtc_threshold", "xtc_threshold", "general.sampling.xtc_threshold", "f32"),
    ("sampling_temp", "temperature", "general.sampling.temp", "f32"),
    ("sampling_penalty_last_n", "penalty_last_n", "general.sampling.penalty_last_n", "i32"),
    ("sampling_penalty_repeat", "penalty_repeat", "general.sampling.penalty_repeat", "f32"),
    ("sampling_mirostat", "mirostat", "general.sampling.mirostat", "i32"),
    ("sampling_mirostat_tau", "mirostat_tau", "general.sampling.mirostat_tau", "f32"),
    ("sampling_mirostat_eta", "mirostat_eta", "general.sampling.mirostat_eta", "f32"),
]
# (attribute, GGUF key) of the authorship strings, in the order they are written
_AUTHORSHIP = [
    ("name", "general.name"), ("author", "general.author"), ("version", "general.version"),
    ("organization", "general.organization"), ("finetune", "general.finetune"), ("basename", "general.basename"),
    ("description", "general.description"), ("quantized_by", "general.quantized_by"),
    ("size_label", "general.size_label"), ("license", "general.license"),
    ("license_name", "general.license.name"), ("license_link", "general.license.link"),
    ("url", "general.url"), ("doi", "general.doi"), ("uuid", "general.uuid"), ("repo_url", "general.repo_url"),
    ("source_url", "general.source.url"), ("source_doi", "general.source.doi"),
    ("source_uuid", "general.source.uuid"), ("source_repo_url", "general.source.repo_url"),
]
_LINEAGE_FIELDS = ("name", "author", "version", "organization", "description", "url", "doi", "uuid", "repo_url")


@dataclass
class ModelCard:
    """What the converted file says about the model (``general.*``)."""

    name: str | None = None
    author: str | None = None
    version: str | None = None
    organization: str | None = None
    finetune: str | None = None
    basename: str | None = None
    description: str | None = None
    quantized_by: str | None = None
    size_label: str | None = None
    license: Any = None
    license_name: str | None = None
    license_link: str | None = None
    url: str | None = None
    doi: str | None = None
    uuid: str | None = None
    repo_url: str | None = None
    source_url: str | None = None
    source_doi: str | None = None
    source_uuid: str | None = None
    source_repo_url: str | None = None
    base_models: list[dict] | None = None
    datasets: list[dict] | None = None
    tags: list[str] | None = None
    languages: list[str] | None = None
    sampling: dict[str, Any] = field(default_factory=dict)

    def write(self, kv: KeyValues) -> None:
        """Add the keys to ``kv`` in the converter's order (sampling first, then authorship, lineage, tags)."""
        for attr, _, key, kind in _SAMPLING:
            value = self.sampling.get(attr)
            if value is not None:
                {"str": kv.string, "i32": kv.i32, "f32": kv.f32}[kind](key, value)
        for attr, key in _AUTHORSHIP:
            value = getattr(self, attr)
            if value is None:
                continue
            if attr == "license" and isinstance(value, list):
                value = ",".join(str(v) for v in value)
            kv.string(key, str(value))
        for plural, singular, entries in (("base_model", "base_model", self.base_models),
                                          ("dataset", "dataset", self.datasets)):
            if entries is None:
                continue
            kv.u32(f"general.{plural}.count", len(entries))
            for i, entry in enumerate(entries):
                for name in _LINEAGE_FIELDS:
                    if name in entry:
                        kv.string(f"general.{singular}.{i}.{name}", str(entry[name]))
        if self.tags is not None:
            kv.array("general.tags", [str(t) for t in self.tags])
        if self.languages is not None:
            kv.array("general.languages", [str(t) for t in self.languages])


def load_model_card(folder: Path, total_params: int, override_path: Path | None = None,
                    model_name: str | None = None) -> ModelCard:
    """The model's ``general.*`` metadata, found as the module docstring says."""
    card = ModelCard()
    front_matter = _front_matter(folder / "README.md")
    config_path = folder / "config.json"
    config = read_json_file(config_path) if config_path.is_file() else {}
    _from_front_matter(card, front_matter, total_params)
    name_or_path = config.get("_name_or_path") if isinstance(config, dict) else None
    if isinstance(name_or_path, str) and name_or_path.count("/") <= 1:
        _fill_from_id(card, name_or_path, total_params)
    _fill_from_id(card, folder.name, total_params)
    generation_path = folder / "generation_config.json"
    if generation_path.is_file():
        try:
            generation = read_json_file(generation_path)
        except ConvertError:
            generation = {}  # llama.cpp skips an unreadable generation_config.json too
        if isinstance(generation, dict):
            for attr, source, _, _ in _SAMPLING:
                value = generation.get(source)
                if source == "penalty_repeat" and value is None:
                    value = generation.get("repetition_penalty")
                if value is not None:
                    card.sampling[attr] = value
    if override_path is not None:
        _apply_override(card, override_path)
    if model_name is not None:
        card.name = model_name
    return card


def _front_matter(path: Path) -> dict[str, Any]:
    """The YAML between the leading ``---`` lines of a model card, as llama.cpp reads it."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0] != "---":
        return {}
    yaml_lines = []
    for line in lines[1:]:
        if line == "---":
            break
        yaml_lines.append(line)
    text = "\n".join(yaml_lines) + "\n"
    # YAML reads the language code "no" (Norwegian) as false; tabs are not YAML indentation
    text = text.replace("- no\n", '- "no"\n').replace("\t", "  ")
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConvertError(f"{path}: the model card's front matter is not valid YAML: {e}") from None
    return data if isinstance(data, dict) else {}


def _from_front_matter(card: ModelCard, front: dict[str, Any], total_params: int) -> None:
    def use(attr: str, key: str) -> None:
        if key in front and getattr(card, attr) is None:
            setattr(card, attr, front.get(key))

    def extend(attr: str, key: str) -> None:
        value = front.get(key)
        if value is None:
            return
        current = getattr(card, attr) or []
        current.extend(value if isinstance(value, list) else [value] if isinstance(value, str) else [])
        setattr(card, attr, current)

    for prefix in ("", "model_"):
        for attr, key in (("name", "name"), ("author", "author"), ("version", "version"),
                          ("organization", "organization"), ("description", "description"),
                          ("finetune", "finetune"), ("basename", "basename"), ("size_label", "size_label"),
                          ("source_url", "url"), ("source_doi", "doi"), ("source_uuid", "uuid"),
                          ("source_repo_url", "repo_url")):
            use(attr, prefix + key)
    use("author", "model_creator")
    use("basename", "model_type")
    for attr, keys in (("base_models", ("base_model", "base_models", "base_model_sources")),
                       ("datasets", ("datasets", "dataset", "dataset_sources"))):
        if not any(k in front for k in keys):
            continue
        value = next((front[k] for k in keys if k in front), None)
        items = [value] if isinstance(value, str) else list(value) if isinstance(value, list) else []
        entries = getattr(card, attr) or []
        entries.extend(_lineage_entry(item, total_params) if isinstance(item, (str, dict)) else {} for item in items)
        setattr(card, attr, entries)
    use("license", "license")
    use("license_name", "license_name")
    use("license_link", "license_link")
    extend("tags", "tags")
    extend("tags", "pipeline_tag")
    extend("languages", "languages")
    extend("languages", "language")


def _lineage_entry(item: str | dict, total_params: int) -> dict:
    """A base model or data set named by a Hub id or URL, with the parts its id tells."""
    if isinstance(item, dict):
        return item
    entry: dict[str, str] = {}
    model_id = item
    if item.startswith(("http://", "https://", "ssh://")):
        entry["repo_url"] = item
        match = re.match(r"https?://huggingface.co/([^/]+/[^/]+)$", item) if "huggingface.co" in item else None
        if match is None:
            return entry
        model_id = match.group(1)
    full_name, org, _, _, version, _ = model_id_parts(model_id, total_params)
    if full_name is not None:
        entry["name"] = id_to_title(full_name)
    if org is not None:
        entry["organization"] = id_to_title(org)
    if version is not None:
        entry["version"] = version
    if not item.startswith(("http://", "https://", "ssh://")) and org is not None and full_name is not None:
        entry["repo_url"] = f"https://huggingface.co/{org}/{full_name}"
    return entry


def _fill_from_id(card: ModelCard, model_id: str, total_params: int) -> None:
    full_name, org, basename, finetune, version, size_label = model_id_parts(model_id, total_params)
    for attr, value in (("name", id_to_title(full_name) if full_name is not None else None),
                        ("organization", id_to_title(org) if org is not None else None),
                        ("basename", basename), ("finetune", finetune), ("version", version),
                        ("size_label", size_label)):
        if getattr(card, attr) is None and value is not None:
            setattr(card, attr, value)


def id_to_title(text: str) -> str:
    """``hf-qwen3`` -> ``Hf Qwen3``: words title-cased unless they are acronyms or version numbers."""
    return " ".join(w.title() if w.islower() and not re.match(r"^(v\d+(?:\.\d+)*|\d.*)$", w) else w
                    for w in text.strip().replace("-", " ").split())


def model_id_parts(model_id: str | None, total_params: int = 0):
    """(full name, organisation, base name, fine-tune, version, size label) read from ``org/Name-7B-Instruct-v0.2``."""
    if model_id is None:
        return None, None, None, None, None, None
    if " " in model_id:
        return model_id, None, None, None, None, None
    org, full_name = model_id.split("/", 1) if "/" in model_id else (None, model_id)
    if org is not None and org.startswith("."):
        org = None
    parts = [p for p in full_name.split("-") if p]
    kinds: list[set[str]] = [set() for _ in parts]
    for i, part in enumerate(parts):
        if re.fullmatch(r"(v|iter)?\d+([.]\d+)*", part, re.IGNORECASE):
            kinds[i].add("version")
        elif re.fullmatch(r"i?q\d(_\w)*|b?fp?(16|32)", part, re.IGNORECASE):
            kinds[i].add("type")
            parts[i] = part.upper()
        elif i > 0 and re.fullmatch(r"(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)", part,
                                    re.IGNORECASE):
            parts[i] = _size_part(part, kinds[i], total_params)
            if not kinds[i]:
                kinds[i].add("size_label")
        elif i > 0 and re.fullmatch(r"chat|instruct|vision|lora", part, re.IGNORECASE):
            kinds[i].add("type" if total_params < 0 and part.lower() == "lora" else "finetune")
    if any(c.isdecimal() for p, k in zip(parts, kinds) if "size_label" in k for c in p):
        for p, k in zip(parts, kinds):
            if "size_label" in k and all(c.isalpha() for c in p):
                k.remove("size_label")
    at_start = True
    for part, k in zip(parts, kinds):
        if at_start and ((not k and part[0].isalpha()) or "version" in k):
            k.add("basename")
        else:
            at_start = False
            if not k:
                k.add("finetune")
    for part, k in zip(reversed(parts), reversed(kinds)):
        if "basename" in k and len(k) > 1:
            k.remove("basename")
        else:
            break
    basename = "-".join(p for p, k in zip(parts, kinds) if "basename" in k) or None
    size_label = "-".join(dict.fromkeys(p for p, k in zip(parts, kinds) if "size_label" in k)) or None
    finetune = "-".join(p for p, k in zip(parts, kinds) if "finetune" in k) or None
    version = "-".join(p for p, k in zip(parts, kinds) if "version" in k and "basename" not in k) or None
    if size_label is None and finetune is None and version is None:
        basename = None
    return full_name, org, basename, finetune, version, size_label


def _size_part(part: str, kind: set[str], total_params: int) -> str:
    """A size such as ``7b`` normalised (``7B``), or marked a fine-tune when it cannot be the model's size."""
    part = part.replace("_", ".")
    if part[-1].isdecimal():  # bloom-7b1 -> 7.1B
        part = part[:-2] + "." + part[-1] + part[-2]
    if len(part) > 1 and part[-2].isdecimal() and part[-1] in "kmbt":
        part = part[:-1] + part[-1].upper()
    if total_params != 0:
        try:
            label_params = float(part[:-1]) * pow(1000, " KMBT".find(part[-1]))
        except ValueError:
            return part
        if ((total_params < 0 and label_params < abs(total_params) // 8)
                or (total_params > 0 and abs(label_params - total_params) > 7 * total_params // 8)):
            kind.add("finetune")  # most likely a context length, such as 32k
            part = part[:-1] + part[-1].lower()
    return part


def _apply_override(card: ModelCard, path: Path) -> None:
    if not path.is_file():
        raise ConvertError(f"--metadata {path}: no such file")
    override = read_json_file(path)
    if not isinstance(override, dict):
        raise ConvertError(f"--metadata {path}: expected a JSON object of GGUF keys, got {type(override).__name__}")
    known = {key: attr for attr, key in _AUTHORSHIP}
    known.update({key: attr for attr, _, key, _ in _SAMPLING})
    known.update({"general.base_models": "base_models", "general.datasets": "datasets",
                  "general.tags": "tags", "general.languages": "languages"})
    for key, value in override.items():
        attr = known.get(key)
        if attr is None:
            continue  # llama.cpp's converter ignores keys it does not know, too
        if attr.startswith("sampling_"):
            card.sampling[attr] = value
        else:
            setattr(card, attr, value)


def size_label(total_params: int, shared_params: int, expert_params: int, expert_count: int) -> str:
    """``3.2M``, ``7.2B`` or ``8x7.0B``: the parameter count as llama.cpp labels it."""
    if expert_count > 0:
        return f"{expert_count}x{_rounded(abs(shared_params) + abs(expert_params))}"
    return _rounded(abs(total_params))


def _rounded(count: int, min_digits: int = 2) -> str:
    for limit, scale, suffix in ((1e12, 1e-12, "T"), (1e9, 1e-9, "B"), (1e6, 1e-6, "M")):
        if count > limit:
            scaled = count * scale
            break
    else:
        scaled, suffix = count * 1e-3, "K"
    decimals = max(min_digits - len(str(round(scaled)).lstrip("0")), 0)
    return f"{scaled:.{decimals}f}{suffix}"


def default_file_name(card: ModelCard, output_type: str, vocab_only: bool = False) -> str:
    """llama.cpp's naming convention: ``<BaseName>-<SizeLabel>-<FineTune>-<Version>-<Type>.gguf``."""
    def dashed(text: str) -> str:
        return text.strip().replace(" ", "-")

    base = card.basename if card.basename is not None else card.name
    parts = [dashed(base).replace("/", "-") if base is not None else "ggml-model"]
    if not vocab_only and card.size_label is not None:
        parts.append(card.size_label)
    if card.finetune is not None:
        parts.append(dashed(card.finetune))
    if card.version is not None:
        parts.append(dashed(card.version))
    parts.append(output_type.upper() if not vocab_only else "vocab")
    return "-".join(parts) + ".gguf"
