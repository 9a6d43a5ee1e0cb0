"""``lamina -m MODEL -cnv`` (or ``-i``): talk to a model in the terminal, like llama.cpp's interactive modes.

Conversation mode (``-cnv``, or the old ``-ins``/``--instruct``) applies the model's
chat template turn by turn: each message adds only its own turn to the KV cache
(``render_turn``), the system prompt (``-sys``) is rendered first, and text the
user types is tokenized without parsing special tokens. Interactive mode (``-i``)
has no template: the user's text (between ``--in-prefix`` and ``--in-suffix``)
continues the document and the model continues it in turn, until a reverse
prompt (``-r``), an end-of-generation token or ``-n`` tokens. As in llama.cpp,
``--in-prefix``, ``--in-suffix`` or ``--in-prefix-bos`` turn the template off.

Ctrl-C during an answer stops it and returns to the prompt; Ctrl-C at the prompt,
Ctrl-D, or ``/exit`` leaves, printing llama.cpp's timing summary to standard error.
When the context is full, ``--context-shift`` drops half of what follows the kept
tokens (the first ``--keep N`` tokens, and always the whole system prompt, or the
``-p`` prompt in ``-i`` mode); without it the answer stops with a message and
``/clear`` starts over.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from lamina.cli.console import Console, Display, InterruptGuard

COMMANDS = {
    "/help": "show this list",
    "/clear": "forget the conversation (the system prompt stays) and start over",
    "/regen": "forget the last answer and generate it again",
    "/exit": "leave (also /quit, Ctrl-D, or Ctrl-C at the prompt)",
}


class ContextFull(Exception):
    """The tokens to evaluate do not fit the context (and shifting is off or cannot make room)."""


@dataclass
class Answer:
    text: str = ""
    n_tokens: int = 0
    ended_by: str = "eog"  # "eog", "length", "reverse-prompt", "interrupted", "context-full"
    unevaluated: list[int] = field(default_factory=list)  # sampled tokens the KV cache still needs


def run_interactive(args) -> int:
    from lamina.cli.options import process_escapes, sampling_params_from
    from lamina.cli.run import load_llama
    from lamina.sampling import SamplingError

    console = Console(color=args.color, multiline=args.multiline_input)
    try:
        llm = load_llama(args)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    chat_mode = bool(args.conversation or args.instruct)
    template = None
    if chat_mode:
        if args.in_prefix or args.in_suffix or args.in_prefix_bos:
            console.info("note: --in-prefix/--in-suffix/--in-prefix-bos are set: the chat template is not used "
                         "(as in llama.cpp)\n")
        else:
            from lamina.chat import ChatTemplateError, read_model_chat_template

            try:
                template = _load_template(llm, args)
            except ChatTemplateError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            if not (args.chat_template or args.chat_template_file or read_model_chat_template(llm.gguf)):
                console.info("warning: the model has no chat template: using chatml, which may not suit it "
                             "(choose one with --chat-template NAME)\n")
    try:
        params = sampling_params_from(args, llm.n_ctx())
        session = Session(llm, console, args, params, template, chat_mode)
    except (SamplingError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    prompt = _initial_prompt(args, process_escapes)
    if prompt is None:
        return 1
    with InterruptGuard() as guard:
        session.guard = guard
        try:
            code = session.run(prompt)
        except KeyboardInterrupt:
            console.reset()
            console.write("\n")
            code = 130
        finally:
            console.reset()
    console.info("\n" + llm.perf.report() + "\n")
    return code


def _initial_prompt(args, process_escapes) -> str | None:
    if args.file is not None:
        try:
            with open(args.file, "rb") as f:
                prompt = f.read().decode("utf-8", "replace")
        except OSError as e:
            print(f"error: cannot read prompt file {args.file}: {e.strerror}", file=sys.stderr)
            return None
    else:
        prompt = args.prompt or ""
    return process_escapes(prompt) if args.escape else prompt


def _load_template(llm, args):
    from lamina.chat import load_chat_template, read_model_chat_template

    tok = llm.tokenizer_
    return load_chat_template(
        model_template=read_model_chat_template(llm.gguf), template=args.chat_template,
        template_file=args.chat_template_file,
        bos_token=tok.token_text(tok.bos_id) if tok.bos_id >= 0 else "",
        eos_token=tok.token_text(tok.eos_id) if tok.eos_id >= 0 else "",
        add_bos=tok.add_bos, add_eos=tok.add_eos, model_name=args.model)


class Session:
    """One interactive session: the conversation so far, the tokens in the KV cache, the sampler."""

    def __init__(self, llm, console: Console, args, params, template, chat_mode: bool):
        from lamina.cli.options import process_escapes

        self.llm = llm
        self.tok = llm.tokenizer_
        self.console = console
        self.args = args
        self.params = params
        from lamina.cli.options import grammar_from

        self.grammar = grammar_from(args)  # each answer must fit it, from its start (a fresh matcher)
        self.template = template
        self.chat_mode = chat_mode
        self.guard: InterruptGuard | None = None
        self.chain = self._new_chain()
        self.escape = process_escapes if args.escape else (lambda s: s)
        self.messages: list[dict] = []
        self.pending: list[int] = []  # tokens to evaluate before the next answer
        self.close_turn = False  # an answer was cut short: end its turn before the next message
        self.n_system = 0  # tokens of the system prompt (or of the first prompt in -i mode), BOS included
        self.n_shifts = 0
        self.start_tokens: list[int] = []  # what /clear goes back to
        self.last_turn: tuple | None = None  # (tokens fed, answer start, shifts then, first logits)
        self.reverse_prompts = [self.escape(r) for r in args.reverse_prompt if r]
        self.reverse_prompt_ids = set()
        for text in self.reverse_prompts:
            ids = self.tok.tokenize(text, add_special=False, parse_special=True)
            if len(ids) == 1:
                self.reverse_prompt_ids.add(ids[0])

    # -- the sampler -------------------------------------------------------------------------------
    def _new_chain(self):
        from lamina.cli.options import sampler_chain_for

        return sampler_chain_for(self.llm, self.params, self.grammar)

    def _restart_chain(self) -> None:
        """Before each answer (llama.cpp resets its sampler after user input): a new random seed unless one was given."""
        if self.args.seed is None or self.args.seed < 0:
            self.chain = self._new_chain()
        else:
            self.chain.reset()

    # -- the loop --------------------------------------------------------------------------------
    def run(self, prompt: str) -> int:
        self._banner()
        self.llm.perf.reset()
        first_message = None
        if self.template is not None:
            if self.args.system_prompt:
                self.messages = [{"role": "system", "content": self.escape(self.args.system_prompt)}]
                if not self._start_with(self._system_prompt_tokens()):
                    return 1
            first_message = prompt or None
        elif prompt:
            if not self._start_with(self.tok.tokenize(prompt, add_special=True, parse_special=True)):
                return 1
            self._answer_to([])
        while True:
            if first_message is not None:  # -p in conversation mode: the first message, escapes already done
                text, first_message = first_message, None
                self.console.write("\n> ")
                self.console.write(text, Display.USER_INPUT)
                self.console.write("\n", Display.RESET)
            else:
                text = self._read()
                if text is None:
                    self.console.write("\n")
                    return 0
                text = self.escape(text)
            command = text.strip()
            if command in ("/exit", "/quit"):
                return 0
            if command == "/help":
                self._help()
                continue
            if command == "/clear":
                self._clear()
                continue
            if command == "/regen":
                self._regen()
                continue
            if self.template is not None:
                if not text:
                    continue
                self._chat_turn(text)
            else:
                self._completion_turn(text)

    def _read(self) -> str | None:
        if self.chat_mode:
            self.console.write("\n")
            return self.console.read_message("> ")
        return self.console.read_message(self.args.in_prefix)

    def _banner(self) -> None:
        lines = ["== Running in interactive mode. ==", " - Press Ctrl+C to interject at any time."]
        if self.args.multiline_input:
            lines.append(" - To return control to the AI, end your input with '\\'.")
        else:
            lines += [" - Press Return to return control to the AI.",
                      " - If you want to submit another line, end your input with '\\'."]
        if self.template is not None and not self.args.system_prompt:
            lines.append(" - Not using system message. To change it, set a different value via -sys PROMPT")
        lines.append(" - /help lists the commands.")
        self.console.info("\n".join(lines) + "\n\n")

    def _help(self) -> None:
        width = max(len(c) for c in COMMANDS)
        self.console.info("".join(f"  {name:<{width}}  {about}\n" for name, about in COMMANDS.items()))

    # -- conversation mode -----------------------------------------------------------------------
    def _system_prompt_tokens(self) -> list[int]:
        from lamina.chat.completion import chat_prompt_tokens

        parts = self.template.render_parts(self.messages, add_generation_prompt=False)
        return chat_prompt_tokens(self.tok, parts, add_bos=self.tok.add_bos)

    def _start_with(self, tokens: list[int]) -> bool:
        """Show the first prompt (system prompt, or -p in -i mode) and queue it; False if it cannot fit."""
        n_ctx = self.llm.n_ctx()
        if len(tokens) > n_ctx - 4:
            self.console.error(f"error: prompt is too long ({len(tokens)} tokens, max {n_ctx - 4})\n")
            return False
        if not self.args.no_display_prompt:
            self.console.write(self.tok.detokenize(tokens).decode("utf-8", "replace"), Display.PROMPT)
            self.console.reset()
        self.pending = list(tokens)
        self.start_tokens = list(tokens)
        self.n_system = len(tokens)
        return True

    def _chat_turn(self, text: str) -> None:
        from lamina.chat import ChatTemplateError
        from lamina.chat.completion import chat_turn_tokens

        message = {"role": "user", "content": text}
        try:
            tokens = chat_turn_tokens(self.template, self.tok, self.messages, message,
                                      at_start=self.llm.n_tokens == 0 and not self.pending,
                                      after_answer=bool(self.messages) and self.messages[-1]["role"] == "assistant")
        except ChatTemplateError as e:
            self.console.error(f"error: {e}\n")
            return
        if self.close_turn:
            tokens = [self._end_of_turn_id()] + tokens
        self.messages.append(message)
        if self._answer_to(tokens) is None:
            self.messages.pop()  # it did not fit: as if never sent

    def _answer_to(self, tokens: list[int]) -> Answer | None:
        """Queue ``tokens`` after what is pending and answer; None (nothing changed) if they do not fit."""
        before = self.pending
        self.pending = before + tokens
        self._restart_chain()
        self.chain.accept_many(self.pending)
        answer = self._answer()
        if answer is None:
            self.pending = before
            return None
        if self.template is not None:
            self.messages.append({"role": "assistant", "content": answer.text})
        return answer

    def _end_of_turn_id(self) -> int:
        eot = self.tok.eot_id
        return eot if eot >= 0 else self.tok.eos_id

    def _clear(self) -> None:
        self.llm.reset()
        self.pending, self.close_turn, self.last_turn = list(self.start_tokens), False, None
        self.messages = self.messages[:1] if self.messages[:1] and self.messages[0]["role"] == "system" else []
        self.console.info("Chat history cleared.\n")

    def _regen(self) -> None:
        if self.last_turn is None or (self.template is not None
                                      and (not self.messages or self.messages[-1]["role"] != "assistant")):
            self.console.error("No answer to regenerate.\n")
            return
        fed, answer_start, shifts, first_logits = self.last_turn
        if shifts != self.n_shifts:
            self.console.error("Cannot regenerate: the context was shifted since that answer.\n")
            return
        if self.template is not None:
            self.messages.pop()
        # back to where the answer started; its first token is drawn from the logits kept from then
        # (evaluating the last prompt token again, alone, could give slightly different ones)
        self.llm.n_tokens = answer_start
        self.pending = []
        self._restart_chain()
        self.chain.accept_many(fed)
        answer = self._answer(fed=fed, first_logits=first_logits)
        if answer is not None and self.template is not None:
            self.messages.append({"role": "assistant", "content": answer.text})

    # -- interactive (no template) mode ------------------------------------------------------------
    def _completion_turn(self, text: str) -> None:
        tokens: list[int] = []
        if text:
            if self.args.in_prefix_bos and self.tok.bos_id >= 0:
                tokens.append(self.tok.bos_id)
            elif self.llm.n_tokens == 0 and not self.pending and self.tok.add_bos:
                tokens.append(self.tok.bos_id)
            tokens += self.tok.tokenize(self.args.in_prefix, add_special=False, parse_special=True)
            tokens += self.tok.tokenize(text, add_special=False, parse_special=False)
            if self.args.in_suffix:
                self.console.write(self.args.in_suffix)
                tokens += self.tok.tokenize(self.args.in_suffix, add_special=False, parse_special=True)
        elif self.llm.n_tokens == 0 and not self.pending:
            return  # nothing to continue yet
        self._answer_to(tokens)

    # -- generation --------------------------------------------------------------------------------
    def _make_room(self, n: int) -> None:
        """Room for ``n`` more tokens: shift the context (with --context-shift) or raise ContextFull."""
        llm, n_ctx = self.llm, self.llm.n_ctx()
        if llm.n_tokens + n <= n_ctx:
            return
        if not self.args.context_shift:
            raise ContextFull(f"context full ({n_ctx} tokens) and context shift is disabled")
        n_keep = max(self.n_system, self.args.keep)
        while llm.n_tokens + n > n_ctx:
            if llm.shift_context(n_keep) <= 0:
                raise ContextFull(f"{n} tokens do not fit the context of {n_ctx} tokens even after shifting "
                                  f"(keeping {n_keep})")
            self.n_shifts += 1

    def _feed(self, tokens: list[int]) -> None:
        if not tokens:
            return
        self._make_room(len(tokens))
        self.llm.eval(tokens)

    def _answer(self, fed: list[int] | None = None, first_logits=None) -> Answer | None:
        """Evaluate the pending tokens and stream an answer. None if the pending tokens did not fit."""
        guard = self.guard
        fed = list(self.pending) if fed is None else fed
        try:
            self._feed(self.pending)
        except ContextFull as e:
            self.console.error(f"{e}: this message does not fit. /clear starts a new conversation "
                               f"(or run with a larger -c, or --context-shift).\n")
            return None
        self.pending = []
        self.close_turn = False
        answer_start = self.llm.n_tokens
        logits = self.llm.logits() if first_logits is None else first_logits
        self.last_turn = (fed, answer_start, self.n_shifts, logits.copy())
        answer = Answer()
        detok = self.tok.incremental_detokenizer()
        out = self.console
        out.reset()
        n_predict = self.args.n_predict
        guard.start_generating()
        try:
            while True:
                if guard.interrupted:
                    answer.ended_by = "interrupted"
                    break
                t0 = time.perf_counter()
                token = int(self.chain.sample(logits))
                self.chain.accept(token)
                self.llm.perf.add_sample(time.perf_counter() - t0)
                if self.tok.is_eog(token) and not self.args.ignore_eos:
                    answer.unevaluated = [token]
                    answer.ended_by = "eog"
                    break
                piece = detok.feed([token])
                out.write(piece)
                answer.text += piece
                answer.n_tokens += 1
                answer.unevaluated = [token]
                if self._hit_reverse_prompt(answer.text, piece, token):
                    answer.ended_by = "reverse-prompt"
                    break
                if 0 <= n_predict <= answer.n_tokens:
                    answer.ended_by = "length"
                    break
                if guard.interrupted:
                    answer.ended_by = "interrupted"
                    break
                try:
                    self._make_room(1)
                except ContextFull as e:
                    answer.ended_by = "context-full"
                    answer.unevaluated = []
                    rest = detok.flush()
                    out.write(rest)
                    answer.text += rest
                    out.error(f"\n\n{e}: the answer stops here. /clear starts a new conversation "
                              f"(or run with a larger -c, or --context-shift).\n")
                    break
                self.llm.eval([token])
                logits = self.llm.logits()
                answer.unevaluated = []
        finally:
            guard.stop_generating()
        rest = detok.flush()
        out.write(rest)
        answer.text += rest
        if answer.ended_by == "interrupted":
            out.write(" [interrupted]", Display.INFO)
            out.reset()
        self._after_answer(answer)
        return answer

    def _hit_reverse_prompt(self, text: str, piece: str, token: int) -> bool:
        if token in self.reverse_prompt_ids:
            return True
        for rp in self.reverse_prompts:
            # a reverse prompt that ends inside the newest piece
            if text.find(rp, max(0, len(text) - len(piece) - len(rp) + 1)) >= 0:
                return True
        return False

    def _after_answer(self, answer: Answer) -> None:
        self.pending = list(answer.unevaluated)
        if self.template is not None:
            # an answer cut short gets its end-of-turn token before the next message, as llama.cpp inserts EOT
            self.close_turn = answer.ended_by != "eog"
            if answer.ended_by == "eog":
                self.console.write("\n")
            return
        if answer.ended_by == "eog" and self.reverse_prompts:
            # llama.cpp hands control back after an end-of-generation token by writing the first reverse prompt
            first = self.reverse_prompts[0]
            self.console.write(first)
            self.pending += self.tok.tokenize(first, add_special=False, parse_special=True)
