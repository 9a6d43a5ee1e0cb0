"""Chat templates: a model's Jinja template in a bounded sandbox, and llama.cpp's built-in formats.

    from lamina.chat import load_chat_template
    template = load_chat_template(model_template=gguf.get_str("tokenizer.chat_template", None),
                                  bos_token="<s>", eos_token="</s>", add_bos=True)
    prompt = template.render([{"role": "user", "content": "Hi"}])   # add_generation_prompt=True
"""

from .builtin import BUILTIN_TEMPLATE_NAMES, detect_template_kind
from .errors import ChatTemplateError, ChatTemplateLimitError
from .messages import ChatMessagesError
from .sandbox import RenderLimits
from .templates import (CHATML_JINJA, ChatTemplate, builtin_chat_template, load_chat_template,
                        read_chat_template_file, read_model_chat_template)

__all__ = [
    "BUILTIN_TEMPLATE_NAMES",
    "CHATML_JINJA",
    "ChatMessagesError",
    "ChatTemplate",
    "ChatTemplateError",
    "ChatTemplateLimitError",
    "RenderLimits",
    "builtin_chat_template",
    "detect_template_kind",
    "load_chat_template",
    "read_chat_template_file",
    "read_model_chat_template",
]
