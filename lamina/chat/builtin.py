"""llama.cpp's built-in chat formats (src/llama-chat.cpp) and its template detection.

These are the formats ``--chat-template NAME`` selects when llama.cpp runs
without Jinja, and the ones ``llm_chat_detect_template`` recognises in a model's
Jinja source by the markers it contains. Each format writes exactly what
llama.cpp writes for a list of (role, content) messages, including its quirks:
some trim the content (C ``isspace`` set), some merge the system message into
the first user turn, some have no generation prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .errors import ChatTemplateError

Message = tuple[str, str]  # (role, content)

_C_SPACE = " \t\n\v\f\r"


def _trim(text: str) -> str:
    return text.strip(_C_SPACE)


def _chatml(chat: Sequence[Message], add_ass: bool) -> str:
    out = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in chat)
    return out + ("<|im_start|>assistant\n" if add_ass else "")


def _mistral_v7(tekken: bool) -> Callable[[Sequence[Message], bool], str]:
    space = "" if tekken else " "

    def render(chat: Sequence[Message], add_ass: bool) -> str:
        out = []
        for role, content in chat:
            if role == "system":
                out.append(f"[SYSTEM_PROMPT]{space}{content}[/SYSTEM_PROMPT]")
            elif role == "user":
                out.append(f"[INST]{space}{content}[/INST]")
            else:
                out.append(f"{space}{content}</s>")
        return "".join(out)

    return render


def _mistral_v1_v3(leading: str, trailing: str, trim_assistant: bool) -> Callable[[Sequence[Message], bool], str]:
    def render(chat: Sequence[Message], add_ass: bool) -> str:
        out, inside_turn = [], False
        for role, content in chat:
            if not inside_turn:
                out.append(f"{leading}[INST]{trailing}")
                inside_turn = True
            if role == "system":
                out.append(f"{content}\n\n")
            elif role == "user":
                out.append(f"{content}{leading}[/INST]")
            else:
                out.append(f"{trailing}{_trim(content) if trim_assistant else content}</s>")
                inside_turn = False
        return "".join(out)

    return render


def _llama2(system: bool, bos_inside: bool, strip: bool) -> Callable[[Sequence[Message], bool], str]:
    def render(chat: Sequence[Message], add_ass: bool) -> str:
        out, inside_turn = ["[INST] "], True  # the first BOS is the tokenizer's
        for role, content in chat:
            if strip:
                content = _trim(content)
            if not inside_turn:
                inside_turn = True
                out.append("<s>[INST] " if bos_inside else "[INST] ")
            if role == "system":
                out.append(f"<<SYS>>\n{content}\n<</SYS>>\n\n" if system else f"{content}\n")
            elif role == "user":
                out.append(f"{content} [/INST]")
            else:
                out.append(f"{content}</s>")
                inside_turn = False
        return "".join(out)

    return render


def _role_blocks(prefix: str, middle: str, suffix: str, generation: str, trim: bool = False):
    """Formats of the shape prefix + role + middle + content + suffix, then a generation prompt."""
    def render(chat: Sequence[Message], add_ass: bool) -> str:
        out = "".join(f"{prefix}{role}{middle}{_trim(content) if trim else content}{suffix}" for role, content in chat)
        return out + (generation if add_ass else "")

    return render


def _monarch(chat: Sequence[Message], add_ass: bool) -> str:
    out = "".join(("" if i == 0 else "<s>") + f"{role}\n{content}</s>\n" for i, (role, content) in enumerate(chat))
    return out + ("<s>assistant\n" if add_ass else "")


def _gemma(chat: Sequence[Message], add_ass: bool) -> str:
    out, system = [], ""
    for role, content in chat:
        if role == "system":
            system += _trim(content)  # no system turn: it is merged into the next user turn
            continue
        role = "model" if role == "assistant" else role
        out.append(f"<start_of_turn>{role}\n")
        if system and role != "model":
            out.append(f"{system}\n\n")
            system = ""
        out.append(f"{_trim(content)}<end_of_turn>\n")
    return "".join(out) + ("<start_of_turn>model\n" if add_ass else "")


def _orion(chat: Sequence[Message], add_ass: bool) -> str:
    out, system = [], ""
    for role, content in chat:
        if role == "system":
            system += content
        elif role == "user":
            out.append("Human: ")
            if system:
                out.append(f"{system}\n\n")
                system = ""
            out.append(f"{content}\n\nAssistant: </s>")
        else:
            out.append(f"{content}</s>")
    return "".join(out)


def _openchat(chat: Sequence[Message], add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(f"{content}<|end_of_turn|>")
        else:
            out.append(f"GPT4 Correct {role[:1].upper()}{role[1:]}: {content}<|end_of_turn|>")
    return "".join(out) + ("GPT4 Correct Assistant:" if add_ass else "")


def _vicuna(orca: bool) -> Callable[[Sequence[Message], bool], str]:
    def render(chat: Sequence[Message], add_ass: bool) -> str:
        out = []
        for role, content in chat:
            if role == "system":
                out.append(f"SYSTEM: {content}\n" if orca else f"{content}\n\n")
            elif role == "user":
                out.append(f"USER: {content}\n")
            elif role == "assistant":
                out.append(f"ASSISTANT: {content}</s>\n")
        return "".join(out) + ("ASSISTANT:" if add_ass else "")

    return render


def _by_role(parts: dict[str, tuple[str, str]], generation: str, trim: bool = False):
    """Formats that wrap each known role's content in fixed strings and skip other roles."""
    def render(chat: Sequence[Message], add_ass: bool) -> str:
        out = []
        for role, content in chat:
            if role in parts:
                before, after = parts[role]
                out.append(f"{before}{_trim(content) if trim else content}{after}")
        return "".join(out) + (generation if add_ass else "")

    return render


def _chatglm3(chat: Sequence[Message], add_ass: bool) -> str:
    out = "[gMASK]sop" + "".join(f"<|{role}|>\n {content}" for role, content in chat)
    return out + ("<|assistant|>" if add_ass else "")


def _chatglm4(chat: Sequence[Message], add_ass: bool) -> str:
    out = "[gMASK]<sop>" + "".join(f"<|{role}|>\n{content}" for role, content in chat)
    return out + ("<|assistant|>\n" if add_ass else "")


def _minicpm(chat: Sequence[Message], add_ass: bool) -> str:
    return "".join(f"<用户>{_trim(content)}<AI>" if role == "user" else _trim(content) for role, content in chat)


def _deepseek_ocr(chat: Sequence[Message], add_ass: bool) -> str:
    return "".join(content for _, content in chat)


def _rwkv_world(chat: Sequence[Message], add_ass: bool) -> str:
    out = []
    for i, (role, content) in enumerate(chat):
        if role == "system":
            out.append(f"System: {_trim(content)}\n\n")
        elif role == "user":
            out.append(f"User: {_trim(content)}\n\n")
            if i == len(chat) - 1:
                out.append("Assistant:")
        elif role == "assistant":
            out.append(f"Assistant: {_trim(content)}\n\n")
    return "".join(out)


def _granite(chat: Sequence[Message], add_ass: bool) -> str:
    out = []
    for role, content in chat:
        out.append(f"<|start_of_role|>{role}<|end_of_role|>")
        if role == "assistant_tool_call":
            out.append("<|tool_call|>")
        out.append(f"{content}<|end_of_text|>\n")
    return "".join(out) + ("<|start_of_role|>assistant<|end_of_role|>" if add_ass else "")


def _granite4(chat: Sequence[Message], add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "assistant_tool_call":
            out.append("<|start_of_role|>assistant<|end_of_role|><|tool_call|>")
        else:
            out.append(f"<|start_of_role|>{role}<|end_of_role|>")
        out.append(f"{content}<|end_of_text|>\n")
    return "".join(out) + ("<|start_of_role|>assistant<|end_of_role|>" if add_ass else "")


def _gigachat(chat: Sequence[Message], add_ass: bool) -> str:
    has_system = bool(chat) and chat[0][0] == "system"
    out = [f"<s>{chat[0][1]}<|message_sep|>" if has_system else "<s>"]
    for role, content in chat[1 if has_system else 0:]:
        if role == "user":
            out.append(f"user<|role_sep|>{content}<|message_sep|>available functions<|role_sep|>[]<|message_sep|>")
        elif role == "assistant":
            out.append(f"assistant<|role_sep|>{content}<|message_sep|>")
    return "".join(out) + ("assistant<|role_sep|>" if add_ass else "")


def _yandex(chat: Sequence[Message], add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "user":
            out.append(f" Пользователь: {content}\n\n")
        elif role == "assistant":
            out.append(f" Ассистент: {content}\n\n")
    return "".join(out) + (" Ассистент:[SEP]" if add_ass else "")


def _bailing_role(role: str) -> str:
    return "HUMAN" if role == "user" else role.upper()


def _bailing(think: bool) -> Callable[[Sequence[Message], bool], str]:
    def render(chat: Sequence[Message], add_ass: bool) -> str:
        out = "".join(f"<role>{_bailing_role(role)}</role>{content}" for role, content in chat)
        if add_ass:
            out += "<role>ASSISTANT</role>" + ("<think>" if think else "")
        return out

    return render


def _bailing2(chat: Sequence[Message], add_ass: bool) -> str:
    has_system = bool(chat) and chat[0][0] == "system"
    out = "" if has_system else "<role>SYSTEM</role>detailed thinking off<|role_end|>"
    out += "".join(f"<role>{_bailing_role(role)}</role>{content}<|role_end|>" for role, content in chat)
    return out + ("<role>ASSISTANT</role>" if add_ass else "")


def _smolvlm(chat: Sequence[Message], add_ass: bool) -> str:
    out = ["<|im_start|>"]
    for role, content in chat:
        if role == "system":
            out.append(f"{content}\n\n")
        elif role == "user":
            out.append(f"User: {content}<end_of_utterance>\n")
        else:
            out.append(f"Assistant: {content}<end_of_utterance>\n")
    return "".join(out) + ("Assistant:" if add_ass else "")


def _dots1(chat: Sequence[Message], add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(f"<|system|>{content}<|endofsystem|>")
        elif role == "user":
            out.append(f"<|userprompt|>{content}<|endofuserprompt|>")
        else:
            out.append(f"<|response|>{content}<|endofresponse|>")
    return "".join(out) + ("<|response|>" if add_ass else "")


def _hunyuan_moe(chat: Sequence[Message], add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(f"<|startoftext|>{content}<|extra_4|>")
        elif role == "assistant":
            out.append(f"{content}<|eos|>")
        else:
            out.append(f"<|startoftext|>{content}<|extra_0|>")
    return "".join(out)


def _openai_moe(chat: Sequence[Message], add_ass: bool) -> str:
    out = "".join(f"<|start|>{role}<|message|>{content}" + ("<|return|>" if role == "assistant" else "<|end|>")
                  for role, content in chat)
    return out + ("<|start|>assistant" if add_ass else "")


def _hunyuan_dense(chat: Sequence[Message], add_ass: bool) -> str:
    out = []
    for i, (role, content) in enumerate(chat):
        if i == 0 and role == "system":
            out.append(f"{content}<｜hy_place▁holder▁no▁3｜>")
        if role == "assistant":
            out.append(f"<｜hy_Assistant｜>{content}<｜hy_place▁holder▁no▁2｜>")
        elif role == "user":
            out.append(f"<｜hy_User｜>{content}<｜hy_Assistant｜>")
    return "".join(out)


def _hunyuan_vl(chat: Sequence[Message], add_ass: bool) -> str:
    out = ["<｜hy_begin▁of▁sentence｜>"]
    for i, (role, content) in enumerate(chat):
        if i == 0 and role == "system":
            out.append(f"{content}<｜hy_place▁holder▁no▁3｜>")
            continue
        if role == "user":
            out.append(f"{content}<｜hy_User｜>")
        elif role == "assistant":
            out.append(f"{content}<｜hy_Assistant｜>")
    return "".join(out)


def _kimi_k2(chat: Sequence[Message], add_ass: bool) -> str:
    headers = {"system": "<|im_system|>system<|im_middle|>", "user": "<|im_user|>user<|im_middle|>",
               "assistant": "<|im_assistant|>assistant<|im_middle|>", "tool": "<|im_system|>tool<|im_middle|>"}
    out = "".join(f"{headers.get(role, '')}{content}<|im_end|>" for role, content in chat)
    return out + ("<|im_assistant|>assistant<|im_middle|>" if add_ass else "")


def _seed_oss(chat: Sequence[Message], add_ass: bool) -> str:
    out = "".join(f"<seed:bos>{role}\n{_trim(content) if role == 'assistant' else content}<seed:eos>"
                  for role, content in chat)
    return out + ("<seed:bos>assistant\n" if add_ass else "")


def _grok2(chat: Sequence[Message], add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(f"System: {_trim(content)}<|separator|>\n\n")
        elif role == "user":
            out.append(f"Human: {_trim(content)}<|separator|>\n\n")
        elif role == "assistant":
            out.append(f"Assistant: {content}<|separator|>\n\n")
    return "".join(out) + ("Assistant:" if add_ass else "")


def _pangu_embedded(chat: Sequence[Message], add_ass: bool) -> str:
    names = {"system": "系统", "user": "用户", "assistant": "助手", "tool": "工具", "function": "方法"}
    out = []
    for i, (role, content) in enumerate(chat):
        if i == 0 and role != "system":
            out.append("[unused9]系统：[unused10]")
        if role in names:
            out.append(f"[unused9]{names[role]}：{content}[unused10]")
    return "".join(out) + ("[unused9]助手：" if add_ass else "")


_EXAONE_3 = {"system": ("[|system|]", "[|endofturn|]\n"), "user": ("[|user|]", "\n"),
             "assistant": ("[|assistant|]", "[|endofturn|]\n")}

#: name -> formatter, in the order llama.cpp lists them (``llama_chat_builtin_templates``: sorted by name).
_FORMATS: dict[str, Callable[[Sequence[Message], bool], str]] = {
    "chatml": _chatml,
    "llama2": _llama2(system=False, bos_inside=False, strip=False),
    "llama2-sys": _llama2(system=True, bos_inside=False, strip=False),
    "llama2-sys-bos": _llama2(system=True, bos_inside=True, strip=False),
    "llama2-sys-strip": _llama2(system=True, bos_inside=False, strip=True),
    "mistral-v1": _mistral_v1_v3(" ", " ", trim_assistant=False),
    "mistral-v3": _mistral_v1_v3("", " ", trim_assistant=True),
    "mistral-v3-tekken": _mistral_v1_v3("", "", trim_assistant=False),
    "mistral-v7": _mistral_v7(tekken=False),
    "mistral-v7-tekken": _mistral_v7(tekken=True),
    "phi3": _role_blocks("<|", "|>\n", "<|end|>\n", "<|assistant|>\n"),
    "phi4": _role_blocks("<|im_start|>", "<|im_sep|>", "<|im_end|>", "<|im_start|>assistant<|im_sep|>"),
    "falcon3": _role_blocks("<|", "|>\n", "\n", "<|assistant|>\n"),
    "zephyr": _role_blocks("<|", "|>\n", "<|endoftext|>\n", "<|assistant|>\n"),
    "monarch": _monarch,
    "gemma": _gemma,
    "orion": _orion,
    "openchat": _openchat,
    "vicuna": _vicuna(orca=False),
    "vicuna-orca": _vicuna(orca=True),
    "deepseek": _by_role({"system": ("", ""), "user": ("### Instruction:\n", "\n"),
                          "assistant": ("### Response:\n", "\n<|EOT|>\n")}, "### Response:\n"),
    "deepseek2": _by_role({"system": ("", "\n\n"), "user": ("User: ", "\n\n"),
                           "assistant": ("Assistant: ", "<｜end▁of▁sentence｜>")}, "Assistant:"),
    "deepseek3": _by_role({"system": ("", "\n\n"), "user": ("<｜User｜>", ""),
                           "assistant": ("<｜Assistant｜>", "<｜end▁of▁sentence｜>")}, "<｜Assistant｜>"),
    "deepseek-ocr": _deepseek_ocr,
    "command-r": _by_role({"system": ("<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>", "<|END_OF_TURN_TOKEN|>"),
                           "user": ("<|START_OF_TURN_TOKEN|><|USER_TOKEN|>", "<|END_OF_TURN_TOKEN|>"),
                           "assistant": ("<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>", "<|END_OF_TURN_TOKEN|>")},
                          "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>", trim=True),
    "llama3": _role_blocks("<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>",
                           "<|start_header_id|>assistant<|end_header_id|>\n\n", trim=True),
    "chatglm3": _chatglm3,
    "chatglm4": _chatglm4,
    "glmedge": _role_blocks("<|", "|>\n", "", "<|assistant|>"),
    "minicpm": _minicpm,
    "exaone3": _by_role(_EXAONE_3, "[|assistant|]", trim=True),
    "exaone4": _by_role({**_EXAONE_3, "tool": ("[|tool|]", "[|endofturn|]\n")}, "[|assistant|]", trim=True),
    "exaone-moe": _by_role({r: (f"<|{r}|>\n", "<|endofturn|>\n") for r in ("system", "user", "assistant", "tool")},
                           "<|assistant|>\n", trim=True),
    "rwkv-world": _rwkv_world,
    "granite": _granite,
    "granite-4.0": _granite4,
    "granite-4.1": _granite4,
    "gigachat": _gigachat,
    "megrez": _role_blocks("<|role_start|>", "<|role_end|>", "<|turn_end|>", "<|role_start|>assistant<|role_end|>"),
    "yandex": _yandex,
    "bailing": _bailing(think=False),
    "bailing-think": _bailing(think=True),
    "bailing2": _bailing2,
    "llama4": _role_blocks("<|header_start|>", "<|header_end|>\n\n", "<|eot|>",
                           "<|header_start|>assistant<|header_end|>\n\n", trim=True),
    "smolvlm": _smolvlm,
    "hunyuan-moe": _hunyuan_moe,
    "gpt-oss": _openai_moe,
    "hunyuan-dense": _hunyuan_dense,
    "hunyuan-vl": _hunyuan_vl,
    "kimi-k2": _kimi_k2,
    "seed_oss": _seed_oss,
    "grok-2": _grok2,
    "pangu-embedded": _pangu_embedded,
    "solar-open": _role_blocks("<|begin|>", "<|content|>", "<|end|>", "<|begin|>assistant"),
}

#: Detected from a template but not selectable by name in llama.cpp either.
_UNNAMED_FORMATS = {"dots1": _dots1}

#: The names ``--chat-template`` accepts, sorted as llama.cpp lists them.
BUILTIN_TEMPLATE_NAMES: tuple[str, ...] = tuple(sorted(_FORMATS))


def detect_template_kind(source: str) -> str | None:
    """The built-in format llama.cpp would use for this template (``llm_chat_detect_template``).

    ``source`` may be a built-in name or a Jinja template; None when nothing matches.
    The checks run in llama.cpp's order, so the first marker found decides.
    """
    if source in _FORMATS:
        return source
    has = source.__contains__
    if has("<|im_start|>"):
        return "phi4" if has("<|im_sep|>") else "smolvlm" if has("<end_of_utterance>") else "chatml"
    if source.startswith("mistral") or has("[INST]"):
        if has("[SYSTEM_PROMPT]"):
            return "mistral-v7"
        if has("' [INST] ' + system_message") or has("[AVAILABLE_TOOLS]"):
            if has(" [INST]"):
                return "mistral-v1"
            if has('"[INST]"'):
                return "mistral-v3-tekken"
            return "mistral-v3"
        if has("content.strip()"):
            return "llama2-sys-strip"
        if has("bos_token + '[INST]"):
            return "llama2-sys-bos"
        return "llama2-sys" if has("<<SYS>>") else "llama2"
    if has("<|assistant|>") and has("<|end|>"):
        return "phi3"
    if has("[gMASK]<sop>"):
        return "chatglm4"
    if has("<|assistant|>") and has("<|user|>"):
        if has("<|tool_declare|>"):
            return "exaone-moe"
        return "falcon3" if has("</s>") else "glmedge"
    if has("<|{{ item['role'] }}|>") and has("<|begin_of_image|>"):
        return "glmedge"
    if has("<|user|>") and has("<|endoftext|>"):
        return "zephyr"
    if has("bos_token + message['role']"):
        return "monarch"
    if has("<start_of_turn>"):
        return "gemma"
    if has("'\\n\\nAssistant: ' + eos_token"):
        return "orion"
    if has("GPT4 Correct "):
        return "openchat"
    if has("USER: ") and has("ASSISTANT: "):
        return "vicuna-orca" if has("SYSTEM: ") else "vicuna"
    if has("### Instruction:") and has("<|EOT|>"):
        return "deepseek"
    if has("<|START_OF_TURN_TOKEN|>") and has("<|USER_TOKEN|>"):
        return "command-r"
    if has("<|start_header_id|>") and has("<|end_header_id|>"):
        return "llama3"
    if has("[gMASK]sop"):
        return "chatglm3"
    if has("<用户>"):
        return "minicpm"
    if has("'Assistant: ' + message['content'] + eos_token"):
        return "deepseek2"
    if has("<｜Assistant｜>") and has("<｜User｜>") and has("<｜end▁of▁sentence｜>"):
        return "deepseek3"
    if has("[|system|]") and has("[|assistant|]") and has("[|endofturn|]"):
        return "exaone4" if has("[|tool|]") else "exaone3"
    if has("rwkv-world") or has("{{- 'User: ' + message['content']|trim + '\\n\\n' -}}"):
        return "rwkv-world"
    if has("<|start_of_role|>"):
        if has("<tool_call>") or has("<tools>"):
            return "granite-4.0" if has("g4_default_system_message") else "granite-4.1"
        return "granite"
    if has("message['role'] + additional_special_tokens[0] + message['content'] + additional_special_tokens[1]"):
        return "gigachat"
    if has("<|role_start|>"):
        return "megrez"
    if has(" Ассистент:"):
        return "yandex"
    if has("<role>ASSISTANT</role>") and has("'HUMAN'"):
        return "bailing"
    if has("<role>ASSISTANT</role>") and has('"HUMAN"') and has("<think>"):
        return "bailing-think"
    if has("<role>ASSISTANT</role>") and has("<role>HUMAN</role>") and has("<|role_end|>"):
        return "bailing2"
    if has("<|header_start|>") and has("<|header_end|>"):
        return "llama4"
    if has("<|endofuserprompt|>"):
        return "dots1"
    if has("<|extra_0|>") and has("<|extra_4|>"):
        return "hunyuan-moe"
    if has("<|start|>") and has("<|channel|>"):
        return "gpt-oss"
    if has("<｜hy_Assistant｜>") and has("<｜hy_begin▁of▁sentence｜>"):
        return "hunyuan-vl"
    if has("<｜hy_Assistant｜>") and has("<｜hy_place▁holder▁no▁3｜>"):
        return "hunyuan-dense"
    if has("<|im_assistant|>assistant<|im_middle|>"):
        return "kimi-k2"
    if has("<seed:bos>"):
        return "seed_oss"
    if has("'Assistant: '  + message['content'] + '<|separator|>"):
        return "grok-2"
    if has("[unused9]系统：[unused10]"):
        return "pangu-embedded"
    if has("<|begin|>") and has("<|end|>") and has("<|content|>"):
        return "solar-open"
    return None


def format_builtin(kind: str, chat: Sequence[Message], add_generation_prompt: bool) -> str:
    """Render (role, content) pairs with one built-in format, as ``llm_chat_apply_template`` does."""
    formatter = _FORMATS.get(kind) or _UNNAMED_FORMATS.get(kind)
    if formatter is None:
        known = ", ".join(BUILTIN_TEMPLATE_NAMES)
        raise ChatTemplateError(f"unknown built-in chat template {kind!r} (known: {known})", template=kind)
    return formatter(chat, add_generation_prompt)
