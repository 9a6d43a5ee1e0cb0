"""A Jinja2 sandbox that also bounds time, work and sizes, for templates from model files.

``ImmutableSandboxedEnvironment`` already stops templates from reaching Python
internals (``__class__``, ``__subclasses__``, ``str.format`` tricks) and from
mutating lists and dicts. Templates do build lists of their own and append to
them (Kimi-K2 queues its tool-call ids that way), so here only the caller's
values are immutable: everything passed in is wrapped by :func:`caller_values`
(``CallerList``/``CallerDict``), and a list, dict or set the template made
itself may be changed, its size checked after every change. The
``{% generation %}`` block (Hugging Face's assistant-mask marker) renders its
body, as llama.cpp's Jinja engine does. It does not stop a template from running forever or
filling memory (``{{ 10**10**9 }}``, ``{{ 'a' * 10**10 }}``, nested
``range(100000)`` loops, doubling a string in a loop, recursive macros). This
environment adds, per render:

* a deadline and a step budget, charged on every call, attribute lookup,
  intercepted operator, loop iteration and output write;
* size checks before anything large is built: ``*``/``+``/``%`` and ``**``
  results, string methods and filters that pad, repeat, replace or join,
  ``range`` lengths, and the ``~`` operator;
* a cap on all text written (macro and ``{% set %}`` buffers included) and on
  the final output;
* a cap on nested calls (recursive macros).

Loop iterations, ``~`` and output writes are made visible to the budget by
rewriting the parsed template before it is compiled (``_generate``), so no
Python code from the template runs outside these checks.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import functools
import json
import math
import re
import string
import time
from collections.abc import Iterator
from typing import Any

from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.filters import FILTERS
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment
from jinja2.utils import pass_context
from jinja2.visitor import NodeTransformer
from markupsafe import Markup


@dataclasses.dataclass(frozen=True)
class RenderLimits:
    """How much one render may do before it is stopped with an error."""

    timeout_s: float = 2.0               # wall-clock time for one render
    max_steps: int = 5_000_000           # calls, lookups, operators, loop iterations, writes
    max_output_chars: int = 4_000_000    # the rendered prompt, and any one string or list built
    max_work_chars: int = 32_000_000     # all text written, into buffers too
    max_range: int = 100_000             # range() length, and numeric size arguments (widths, counts)
    max_int_bits: int = 63               # integers built by ** and * (llama.cpp's Jinja has int64)
    max_call_depth: int = 64             # nested calls: macros calling macros


class TemplateLimitExceeded(Exception):
    """A render went past one of its RenderLimits."""


class TemplateRaised(Exception):
    """The template called ``raise_exception(message)``."""


class _Budget:
    __slots__ = ("limits", "deadline", "steps", "work_chars", "depth")

    def __init__(self, limits: RenderLimits):
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout_s
        self.steps = 0
        self.work_chars = 0
        self.depth = 0


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("lamina_chat_budget", default=None)
# the time strftime_now() tells a render (llama.cpp's inputs.now), None for the clock
_NOW: contextvars.ContextVar[datetime.datetime | None] = contextvars.ContextVar("lamina_chat_now", default=None)


class CallerList(list):
    """A list the caller passed to the template: it may read it, never change it."""


class CallerDict(dict):
    """A dict the caller passed to the template: it may read it, never change it."""


def caller_values(value: Any) -> Any:
    """``value`` with every plain list and dict in it made a Caller* copy the template cannot change.

    Other dict and list subclasses (the capability probes' watched dicts) are kept as they are:
    being subclasses, they are immutable to the template too."""
    if type(value) is dict:
        return CallerDict((k, caller_values(v)) for k, v in value.items())
    if type(value) is list:
        return CallerList(caller_values(v) for v in value)
    return value


_TEMPLATE_MADE = (list, dict, set)

# the values a capability probe watches (id -> the operations done on it), None when not probing
_WATCHED: contextvars.ContextVar[dict[int, set[str]] | None] = contextvars.ContextVar("lamina_chat_watched",
                                                                                     default=None)


class WatchedList(list):
    """A list a probe watches (a subclass, so :func:`caller_values` keeps it, and its identity)."""


def _note(value: Any, operation: str) -> None:
    watched = _WATCHED.get()
    if watched is not None and id(value) in watched:
        watched[id(value)].add(operation)


class watching:
    """``with watching(a, b) as ops:``: while rendering, ``ops[id(a)]`` collects what the template did
    with ``a``, in llama.cpp's words: ``test_is_string``, ``array_access`` (iterated or indexed by
    a number), ``selectattr``."""

    def __init__(self, *values: Any):
        self.ops = {id(v): set() for v in values}

    def __enter__(self) -> dict[int, set[str]]:
        self._token = _WATCHED.set(self.ops)
        return self.ops

    def __exit__(self, *exc: Any) -> None:
        _WATCHED.reset(self._token)


class GenerationBlock(Extension):
    """``{% generation %}...{% endgeneration %}``: transformers marks the assistant's tokens with it; it
    changes nothing in the text, and llama.cpp's parser ignores the tags the same way."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)

# str methods whose result size is driven by a numeric argument, and their argument names.
_SIZED_STR_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}
# filters whose result size is driven by numeric arguments.
_SIZED_FILTERS = {"center", "indent", "truncate", "wordwrap", "batch", "slice", "filesizeformat", "round"}
# filters that walk through a whole iterable: it is read through _materialise first.
_ITERATING_FILTERS = {"join", "list", "map", "select", "reject", "selectattr", "rejectattr", "unique", "sort", "sum",
                      "batch", "slice", "groupby", "dictsort", "reverse", "min", "max", "first", "last", "length",
                      "count"}
_PERCENT_SPEC = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_NUMBERS = re.compile(r"\d+")


def _size_of(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)) else 0


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The environment chat templates are rendered in (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%", "//", "/", "-"})
    intercepted_unops = frozenset({"-", "+"})

    def __init__(self, limits: RenderLimits | None = None):
        # trim_blocks and lstrip_blocks as llama.cpp's Jinja engine, llama-cpp-python and transformers
        # use them; a single trailing newline of the template is dropped (Jinja's and llama.cpp's default).
        super().__init__(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
                         extensions=[loopcontrols, GenerationBlock], autoescape=False, cache_size=0)
        self.limits = limits or RenderLimits()
        self.globals.pop("lipsum", None)  # generates text of any size; no chat template needs it
        self.globals["range"] = self._range
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = _strftime_now
        self.filters = {name: self._bounded_filter(name, f) for name, f in FILTERS.items()}
        self.filters["tojson"] = self._tojson
        self.tests["string"] = _is_string
        # with autoescape off, Markup only harms: "a"|safe + text would HTML-escape the text
        self.filters["safe"] = self._bounded_filter("safe", str)
        self.filters["lamina_iter"] = self._iterate
        self.filters["lamina_concat"] = self._concat
        self.filters["lamina_emit"] = self._emit

    # -- budget ---------------------------------------------------------------------------------
    def step(self, n: int = 1) -> None:
        budget = _BUDGET.get()
        if budget is None:
            return  # compile-time constant folding: sizes are still checked, time is not running
        budget.steps += n
        if budget.steps > budget.limits.max_steps:
            raise TemplateLimitExceeded(f"the template ran more than {budget.limits.max_steps} steps")
        if time.monotonic() > budget.deadline:
            raise TemplateLimitExceeded(f"the template ran longer than {budget.limits.timeout_s:g} s")

    def check_size(self, size: int, what: str) -> None:
        if size > self.limits.max_output_chars:
            raise TemplateLimitExceeded(f"{what} would have {size} elements, more than the "
                                        f"{self.limits.max_output_chars} allowed")

    def check_count(self, value: Any, what: str) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > self.limits.max_range:
            raise TemplateLimitExceeded(f"{what} of {value} is larger than the {self.limits.max_range} allowed")

    def _check_result(self, value: Any, what: str) -> Any:
        self.check_size(_size_of(value), what)
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > self.limits.max_int_bits:
            raise TemplateLimitExceeded(f"{what} gave an integer of more than {self.limits.max_int_bits} bits")
        return value

    # -- what sandboxed code calls ------------------------------------------------------------
    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if type(obj) in _TEMPLATE_MADE:  # the template's own list/dict/set: changing it harms no one
            return SandboxedEnvironment.is_safe_attribute(self, obj, attr, value)
        return super().is_safe_attribute(obj, attr, value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.step()
        if isinstance(argument, int):
            _note(obj, "array_access")
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        __self.step()
        name = getattr(__obj, "__name__", "")
        if isinstance(getattr(__obj, "__self__", None), str):
            __self._check_str_method(__obj.__self__, name, args, kwargs)
        budget = _BUDGET.get()
        if budget is not None:
            if budget.depth >= budget.limits.max_call_depth:
                raise TemplateLimitExceeded(f"calls nested more than {budget.limits.max_call_depth} deep "
                                            "(a macro calling itself without end?)")
            budget.depth += 1
        try:
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            if budget is not None:
                budget.depth -= 1
        owner = getattr(__obj, "__self__", None)
        if type(owner) in _TEMPLATE_MADE:  # l.extend(l) doubles a list per call: its size is checked as it grows
            __self.check_size(len(owner), f"a {type(owner).__name__} the template built")
        return __self._check_result(result, f"{name or 'a call'}()")

    def _check_str_method(self, text: str, name: str, args: tuple, kwargs: dict) -> None:
        for value in (*args, *kwargs.values()):
            if name in _SIZED_STR_METHODS:
                self.check_count(value, f"str.{name}() size")
        if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
            old, new = args[0], args[1]
            most = len(text) + (len(text) + 1) * len(new) if not old else len(text) + (len(text) // len(old)) * len(new)
            self.check_size(most, "str.replace() result")
        elif name == "join" and args and isinstance(args[0], (list, tuple)):
            self.check_size(sum(_size_of(a) for a in args[0]) + len(text) * len(args[0]), "str.join() result")
        elif name in ("format", "format_map"):
            self._check_format_string(text)

    def _check_format_string(self, text: str) -> None:
        try:
            fields = list(string.Formatter().parse(text))
        except ValueError:
            return  # str.format reports the malformed string itself
        for _, _, spec, _ in fields:
            for number in _FORMAT_NUMBERS.findall(spec or ""):
                self.check_count(int(number), "a format width")

    def wrap_str_format(self, value: Any):
        """``str.format``/``format_map``, sandboxed by Jinja, with widths in the format string bounded."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = value.__self__

        @functools.wraps(wrapped)
        def bounded(*args: Any, **kwargs: Any) -> str:
            self._check_format_string(text)
            for arg in (*args, *kwargs.values()):
                self.check_count(arg, "a format argument")
            return wrapped(*args, **kwargs)

        return bounded

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self.step()
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            bits = max(abs(left), 1).bit_length() * right
            if abs(left) > 1 and bits > self.limits.max_int_bits:
                raise TemplateLimitExceeded(f"{left} ** {right} would have about {bits} bits, more than the "
                                            f"{self.limits.max_int_bits} allowed")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                if _size_of(seq) and isinstance(count, int):
                    self.check_size(_size_of(seq) * max(count, 0), "a repeated sequence")
            if isinstance(left, int) and isinstance(right, int):
                bits = abs(left).bit_length() + abs(right).bit_length()
                if bits > self.limits.max_int_bits:
                    raise TemplateLimitExceeded(f"a product of about {bits} bits is more than the "
                                                f"{self.limits.max_int_bits} allowed")
        elif operator == "+":
            if isinstance(left, str) and _is_nothing(right) or isinstance(right, str) and _is_nothing(left):
                return right if _is_nothing(left) else left  # llama.cpp: none/undefined join a string as ""
            if _size_of(left) or _size_of(right):
                self.check_size(_size_of(left) + _size_of(right), "a concatenation")
        elif operator == "%" and isinstance(left, str):
            self._check_percent_format(left, right)
        return self._check_result(super().call_binop(context, operator, left, right), f"the {operator} operator")

    def call_unop(self, context: Context, operator: str, arg: Any) -> Any:
        self.step()
        return super().call_unop(context, operator, arg)

    def _check_percent_format(self, text: str, args: Any) -> None:
        for width, precision in _PERCENT_SPEC.findall(text):
            for number in (width, precision):
                if number and number != "*":
                    self.check_count(int(number), "a %-format width")
        for value in args if isinstance(args, tuple) else (args,):
            self.check_count(value, "a %-format argument used as width")

    # -- globals and filters --------------------------------------------------------------------
    def _range(self, *args: int) -> range:
        for value in args:
            if not isinstance(value, int):
                raise TypeError(f"range() arguments must be integers, got {value!r}")
        numbers = range(*args)
        if len(numbers) > self.limits.max_range:
            raise TemplateLimitExceeded(f"range() of {len(numbers)} numbers is more than the "
                                        f"{self.limits.max_range} allowed")
        return numbers

    def _bounded_filter(self, name: str, func):
        first = _value_index(func)  # filters taking the context or environment get the value second

        @functools.wraps(func)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            self.step()
            if name == "selectattr" and len(args) > first:
                _note(args[first], "selectattr")
            if name in _SIZED_FILTERS:
                for value in (*args[first + 1:], *kwargs.values()):
                    self.check_count(value, f"the {name} filter's argument")
            if name == "format" and len(args) > first and isinstance(args[first], str):
                self._check_percent_format(args[first], tuple(args[first + 1:]))
            if name == "replace" and len(args) >= first + 3:
                text, old, new = (str(a) for a in args[first:first + 3])
                most = len(text) + (len(text) + 1) * len(new) if not old else len(text) + len(text) // len(old) * len(new)
                self.check_size(most, "the replace filter's result")
            if name in _ITERATING_FILTERS and len(args) > first:
                args = (*args[:first], self._materialise(args[first]), *args[first + 1:])
            return self._check_result(func(*args, **kwargs), f"the {name} filter")

        return bounded

    def _materialise(self, value: Any) -> Any:
        """Iterables a filter walks through are read here first, one step per item."""
        if isinstance(value, (str, dict, Markup)) or not hasattr(value, "__iter__"):
            return value
        items = []
        for item in value:
            self.step()
            items.append(item)
            self.check_size(len(items), "a sequence")
        return items

    @pass_context
    def _iterate(self, context: Context, iterable: Any) -> Iterator[Any]:
        """Every ``{% for %}`` loop iterates through here: one step per item."""
        _note(iterable, "array_access")
        return self._stepping(iter(iterable))

    def _stepping(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            self.step()
            yield item

    @pass_context
    def _concat(self, context: Context, parts: list) -> str:
        """The ``~`` operator, with its result size checked before it is built."""
        self.step()
        joins_text = any(isinstance(p, str) for p in parts)  # llama.cpp: none/undefined join a string as ""
        texts = ["" if joins_text and _is_nothing(p) else str(p) for p in parts]
        self.check_size(sum(len(t) for t in texts), "a ~ concatenation")
        return "".join(texts)

    @pass_context
    def _emit(self, context: Context, value: Any) -> str:
        """Every piece of output (``{{ }}`` and literal text) is counted here, buffers included."""
        self.step()
        text = str(value)
        budget = _BUDGET.get()
        if budget is not None:
            budget.work_chars += len(text)
            if budget.work_chars > budget.limits.max_work_chars:
                raise TemplateLimitExceeded(f"the template wrote more than {budget.limits.max_work_chars} characters")
        return text

    def _tojson(self, value: Any, indent: int | None = None, separators: Any = None, sort_keys: bool = False,
                ensure_ascii: bool = False) -> str:
        """``tojson`` as llama.cpp writes it: no HTML escaping, ', ' and ': ' separators, keys in order."""
        self.step()
        if indent is not None:
            if not isinstance(indent, int) or isinstance(indent, bool) or not 0 <= indent <= 64:
                raise TemplateLimitExceeded(f"tojson indent must be an integer from 0 to 64, got {indent!r}")
        if separators is not None:
            separators = tuple(separators)
        if hasattr(value, "__next__"):  # map()/select() give generators; llama.cpp's give arrays
            value = self._materialise(value)
        text = to_json(value, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
        return self._check_result(text, "tojson")

    # -- rewriting the parsed template ------------------------------------------------------------
    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        source = _BudgetHooks().visit(source)
        source.set_environment(self)
        return super()._generate(source, name, filename, defer_init=defer_init)

    def render(self, template, context: dict[str, Any], now: datetime.datetime | None = None) -> str:
        """Render with a fresh budget; raises TemplateLimitExceeded, TemplateRaised or Jinja's errors.

        The caller's values are wrapped by :func:`caller_values`; ``strftime_now`` tells ``now``."""
        context = caller_values(context)
        token = _BUDGET.set(_Budget(self.limits))
        now_token = _NOW.set(now)
        try:
            pieces, size = [], 0
            for piece in template.generate(context):
                size += len(piece)
                if size > self.limits.max_output_chars:
                    raise TemplateLimitExceeded(f"the rendered prompt is longer than {self.limits.max_output_chars} "
                                                "characters")
                pieces.append(piece)
            return "".join(pieces)
        finally:
            _NOW.reset(now_token)
            _BUDGET.reset(token)


def _is_string(value: Any) -> bool:
    _note(value, "test_is_string")
    return isinstance(value, str)


def _is_nothing(value: Any) -> bool:
    return value is None or isinstance(value, Undefined)


def _value_index(func) -> int:
    # Filters that take the context or environment first get the iterable second.
    return 1 if getattr(func, "jinja_pass_arg", None) is not None else 0


class _BudgetHooks(NodeTransformer):
    """Routes loops, ``~`` and output through the environment's bounded helpers."""

    def _filter(self, node: nodes.Node, name: str, lineno: int) -> nodes.Filter:
        return nodes.Filter(node, name, [], [], None, None, lineno=lineno)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._filter(node.iter, "lamina_iter", node.iter.lineno or node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return self._filter(nodes.List(node.nodes, lineno=node.lineno), "lamina_concat", node.lineno)

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [self._filter(child, "lamina_emit", child.lineno or node.lineno) for child in node.nodes]
        return node


def _raise_exception(message: Any = "") -> None:
    raise TemplateRaised(str(message))


def _strftime_now(format: str = "%Y-%m-%d %H:%M:%S") -> str:
    if not isinstance(format, str) or len(format) > 1000:
        raise TypeError("strftime_now takes a format string (at most 1000 characters)")
    return (_NOW.get() or datetime.datetime.now()).strftime(format)


def to_json(value: Any, indent: int | None = None, separators: tuple[str, str] | None = None,
            sort_keys: bool = False, ensure_ascii: bool = False) -> str:
    """JSON as llama.cpp's Jinja ``tojson`` writes it (floats as C++ streams print them)."""
    item_sep, key_sep = separators if separators else ((", " if indent is None else ","), ": ")
    out: list[str] = []

    def write(v: Any, level: int) -> None:
        pad = " " * (indent * (level + 1)) if indent else ""
        end_pad = " " * (indent * level) if indent else ""
        newline = "\n" if indent is not None else ""
        if v is None or v.__class__.__name__.endswith("Undefined"):
            out.append("null")
        elif v is True or v is False:
            out.append("true" if v else "false")
        elif isinstance(v, int):
            out.append(str(v))
        elif isinstance(v, float):
            out.append(_cpp_float(v))
        elif isinstance(v, str):
            out.append(json.dumps(v, ensure_ascii=ensure_ascii))
        elif isinstance(v, dict):
            pairs = list(dict.items(v))  # the plain view: serialising is noted apart from reading keys
            noted = getattr(v, "note_serialized", None)
            if noted is not None:
                noted()
            if sort_keys:
                pairs.sort(key=lambda kv: str(kv[0]))
            if not pairs:
                out.append("{}")
                return
            out.append("{" + newline)
            for i, (k, item) in enumerate(pairs):
                out.append(pad + json.dumps(str(k), ensure_ascii=ensure_ascii) + key_sep)
                write(item, level + 1)
                out.append((item_sep if i < len(pairs) - 1 else "") + newline)
            out.append(end_pad + "}")
        elif isinstance(v, (list, tuple)):
            if not v:
                out.append("[]")
                return
            out.append("[" + newline)
            for i, item in enumerate(v):
                out.append(pad)
                write(item, level + 1)
                out.append((item_sep if i < len(v) - 1 else "") + newline)
            out.append(end_pad + "]")
        else:
            out.append("null")

    write(value, 0)
    return "".join(out)


def _cpp_float(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return f"{value:g}"
