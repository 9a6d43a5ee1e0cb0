"""The interactive chat in a real pseudo-terminal: pexpect types, pyte keeps the screen, the tests read it.

Every wait is for something to appear on the screen (never a sleep), so the tests
hold however fast the engine is. Generation is greedy (--temp 0) and short (-n).
"""

from __future__ import annotations

import os
import sys
import time

import pexpect
import pyte
import pytest

ROWS, COLS = 40, 110
WAIT = 300  # seconds a screen change may take at most (the reference engine is slow)
LAMINA = [sys.executable, "-c", "import sys; from lamina.cli import main; sys.exit(main())"]


class Terminal:
    """``lamina`` running in a pseudo-terminal of ROWS x COLS, with the screen as a person would see it."""

    def __init__(self, args: list[str]):
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        env = dict(os.environ, TERM="xterm", COLUMNS=str(COLS), LINES=str(ROWS))
        self.child = pexpect.spawn(LAMINA[0], LAMINA[1:] + args, dimensions=(ROWS, COLS), env=env, timeout=WAIT)
        self.received = ""  # everything the program wrote, to count prompts even after they scroll away

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines()).strip()

    def cursor_line(self) -> str:
        return self.screen.display[self.screen.cursor.y].rstrip()

    def wait_for(self, what: str, condition) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen shows:\n{self.text()}")
            try:
                self._feed(self.child.read_nonblocking(65536, timeout=0.2))
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:
                if not condition():
                    raise AssertionError(f"lamina ended while waiting for {what}; the screen shows:\n{self.text()}")

    def _feed(self, data: bytes) -> None:
        self.stream.feed(data)
        self.received += data.decode("utf-8", "replace")

    def reading_input(self) -> bool:
        """True while lamina waits for a line: readline turns the terminal's echo off while it edits one."""
        return self.child.isalive() and not self.child.getecho()

    def wait_for_prompt(self, n_prompts: int) -> None:
        """Until the ``n_prompts``-th ``> `` prompt is on the screen, the cursor after it, waiting for input."""
        self.wait_for(f"prompt number {n_prompts}",
                      lambda: self.received.count("\n> ") >= n_prompts
                      and self.cursor_line() == ">" and self.screen.cursor.x == 2 and self.reading_input())

    def type_line(self, text: str) -> None:
        self.child.send(text + "\r")

    def finish(self) -> int:
        """Read to the end; the exit status (128 + signal when killed by one)."""
        self.wait_for("the end", lambda: not self.child.isalive() and self._drained())
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None else 128 + self.child.signalstatus

    def _drained(self) -> bool:
        try:
            self._feed(self.child.read_nonblocking(65536, timeout=0.2))
            return False
        except (pexpect.EOF, pexpect.TIMEOUT):
            return True

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)

    def row_of(self, text: str) -> int:
        return next(i for i, line in enumerate(self.lines()) if line.startswith(text))

    def cell(self, row: int, column: int):
        return self.screen.buffer[row][column]


@pytest.fixture
def terminal(model_paths):
    started = []

    def start(*args: str) -> Terminal:
        t = Terminal(["-m", str(model_paths["smollm2"]), *args])
        started.append(t)
        return t

    yield start
    for t in started:
        t.close()


def test_two_turn_conversation_shows_both_replies_in_colour(terminal):
    t = terminal("-cnv", "--color", "--temp", "0", "-n", "12", "-c", "256", "-sys", "Be brief.")
    t.wait_for_prompt(1)
    t.type_line("What is the capital of France?")
    t.wait_for_prompt(2)
    t.type_line("And of Germany?")
    t.wait_for_prompt(3)
    lines = t.lines()
    first, second = t.row_of("> What is the capital of France?"), t.row_of("> And of Germany?")
    assert "Paris" in lines[first + 1]
    assert "Berlin" in lines[second + 1]  # the second answer saw the first turn
    # llama.cpp's colours: the system prompt yellow, typed text bold green, the answer in the terminal's own
    system_row = t.row_of("Be brief.")
    assert t.cell(system_row, 0).fg == "brown"  # pyte's name for ANSI yellow (33)
    typed = t.cell(first, 2)
    assert (typed.data, typed.fg, typed.bold) == ("W", "green", True)
    assert t.cell(first, 0).fg == "default"  # the "> " marker itself is not user input
    answer = t.cell(first + 1, 0)
    assert (answer.fg, answer.bold) == ("default", False)
    t.child.sendeof()
    assert t.finish() == 0
    assert "llama_perf_context_print:        eval time" in t.text()  # the timing summary on leaving


def test_ctrl_c_stops_the_answer_and_the_program_keeps_running(terminal):
    t = terminal("-cnv", "--temp", "0", "-n", "400", "-c", "512")
    t.wait_for_prompt(1)
    t.type_line("Tell me a long story about a dragon.")
    t.wait_for("the typed line", lambda: "> Tell me a long story about a dragon." in t.lines())
    row = t.row_of("> Tell me a long story")
    t.wait_for("the answer to start", lambda: len(t.lines()[row + 1]) >= 3)
    t.child.sendintr()
    t.wait_for_prompt(2)
    assert "[interrupted]" in t.text()
    t.type_line("/help")  # still reading input
    t.wait_for_prompt(3)
    assert "/clear" in t.text() and "/regen" in t.text()
    t.child.sendintr()  # Ctrl-C at the prompt leaves, as in llama.cpp
    assert t.finish() == 130
    assert "llama_perf_sampler_print" in t.text()


def test_ctrl_d_at_the_prompt_leaves_cleanly(terminal):
    t = terminal("-cnv", "-c", "128")
    t.wait_for_prompt(1)
    t.child.sendeof()
    assert t.finish() == 0
    assert "llama_perf_context_print:       total time" in t.text()
    assert "Traceback" not in t.text()


def test_a_full_context_stops_the_answer_with_a_message_and_clear_starts_over(terminal):
    # 36 tokens of context: the system prompt (16) and the question (15) leave room for 5 tokens of answer
    t = terminal("-cnv", "--temp", "0", "-c", "36", "-sys", "You answer every question with a long, detailed essay.")
    t.wait_for_prompt(1)
    t.type_line("Why is the sky blue?")
    t.wait_for_prompt(2)
    assert "context full (36 tokens) and context shift is disabled" in t.text()
    t.type_line("/clear")
    t.wait_for_prompt(3)
    assert "Chat history cleared." in t.text()
    t.child.sendeof()
    assert t.finish() == 0


def test_interactive_mode_continues_the_text_and_stops_at_reverse_prompts(terminal):
    t = terminal("-i", "--temp", "0", "-n", "24", "-c", "256", "-r", "Paris", "-r", "Berlin",
                 "-p", "The capital of France is")
    t.wait_for("the reverse prompt", lambda: "The capital of France is Paris" in t.text() and t.reading_input())
    assert t.text().endswith("The capital of France is Paris")  # control is back with the user, right after it
    t.type_line(". The capital of Germany is")
    # Enter moved the cursor down, so the model's continuation starts on the next line
    t.wait_for("the second reverse prompt", lambda: t.text().endswith("Berlin") and t.reading_input())
    lines = t.lines()
    typed = t.row_of("The capital of France is Paris. The capital of Germany is")
    assert lines[typed + 1].strip() == "Berlin"
    t.child.sendeof()
    assert t.finish() == 0


# --- the session, driven in-process: what the KV cache holds after each kind of turn ---------------

import io  # noqa: E402

from lamina.chat.completion import chat_prompt_for  # noqa: E402
from lamina.cli.chat import Session, _load_template  # noqa: E402
from lamina.cli.console import Console, Display, InterruptGuard  # noqa: E402
from lamina.cli.options import sampling_params_from  # noqa: E402
from lamina.cli.run import build_parser, load_llama  # noqa: E402

SYSTEM = "You answer every question with a long, detailed essay."


class ScriptedGuard(InterruptGuard):
    """Reports Ctrl-C after the answer's first token when ``interrupt_after_first`` is set."""

    def __init__(self):
        super().__init__()
        self.interrupt_after_first = False
        self._checks = 0

    def start_generating(self) -> None:
        super().start_generating()
        self._checks = 0

    @property
    def interrupted(self) -> bool:
        self._checks += 1
        return self.interrupt_after_first and self._checks >= 2  # the loop asks before and after each token

    @interrupted.setter
    def interrupted(self, value) -> None:
        pass


def scripted_session(model_path, argv: list[str], lines: list[str]) -> tuple[Session, io.StringIO]:
    args = build_parser().parse_args(["-m", str(model_path), *argv])
    llm = load_llama(args)
    out = io.StringIO()
    console = Console(out=out, err=io.StringIO())
    script = iter(lines)
    console.read_message = lambda prompt="": next(script, None)
    session = Session(llm, console, args, sampling_params_from(args, llm.n_ctx()), _load_template(llm, args), True)
    session.guard = ScriptedGuard()
    return session, out


def test_the_kv_cache_holds_the_templates_rendering_of_the_conversation(model_paths):
    session, out = scripted_session(model_paths["smollm2"], ["-cnv", "--temp", "0", "-n", "16", "-c", "256",
                                                             "-sys", "Be brief."],
                                    ["What is the capital of France?", "And of Germany?"])
    assert session.run("") == 0
    llm, tok = session.llm, session.tok
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert "Paris" in session.messages[2]["content"] and "Berlin" in session.messages[4]["content"]
    held = llm.input_ids[: llm.n_tokens].tolist() + session.pending  # the last end-of-turn waits for the next turn
    im_end = tok.tokenize("<|im_end|>", add_special=False, parse_special=True)
    assert session.pending == im_end  # both answers ended with the model's own end of turn
    whole = chat_prompt_for(llm, session.messages[:4])  # up to "<|im_start|>assistant\n" of the second answer
    assert held[: len(whole)] == whole
    assert tok.detokenize(held[len(whole):]).decode() == session.messages[4]["content"]


def test_an_interrupted_answer_gets_its_end_of_turn_before_the_next_message(model_paths):
    session, out = scripted_session(model_paths["smollm2"], ["-cnv", "--temp", "0", "-n", "16", "-c", "256",
                                                             "-sys", "Be brief."],
                                    ["Tell me a long story about a dragon.", "Thanks."])
    guard = session.guard
    guard.interrupt_after_first = True
    assert session.run("") == 0
    assert "[interrupted]" in out.getvalue()
    llm, messages = session.llm, session.messages
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    first_answer = messages[2]["content"]
    assert first_answer and len(session.tok.tokenize(first_answer, add_special=False)) == 1
    held = llm.input_ids[: llm.n_tokens].tolist() + session.pending
    whole = chat_prompt_for(llm, messages[:4])  # the cut answer closed with <|im_end|>, then the next turn
    assert held[: len(whole)] == whole


def test_context_shift_keeps_the_system_prompt_and_goes_on(model_paths):
    # 36 tokens: the system prompt (16) and the question (15) leave room for 5 tokens; -n 12 needs a shift
    session, out = scripted_session(model_paths["smollm2"], ["-cnv", "--temp", "0", "-n", "12", "-c", "36",
                                                             "--context-shift", "-sys", SYSTEM],
                                    ["Why is the sky blue?"])
    system_tokens = list(session.llm.tokenize(
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n".encode(), add_bos=False, special=True))
    assert session.run("") == 0
    assert "context full" not in out.getvalue()
    assert session.n_shifts >= 1
    assert session.llm.perf.n_sample == 12  # the whole answer, past the 5 tokens of room
    assert session.llm.input_ids[: len(system_tokens)].tolist() == system_tokens


def test_a_message_too_long_for_the_context_is_refused_and_forgotten(model_paths):
    session, out = scripted_session(model_paths["smollm2"], ["-cnv", "--temp", "0", "-c", "36", "-sys", SYSTEM],
                                    ["word " * 30])
    system_tokens = session.llm.tokenize(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n".encode(), add_bos=False,
                                         special=True)
    assert session.run("") == 0
    assert "context full (36 tokens) and context shift is disabled: this message does not fit" in out.getvalue()
    assert [m["role"] for m in session.messages] == ["system"]
    assert session.llm.n_tokens == 0 and session.pending == system_tokens  # the system prompt waits, alone


def test_regen_replaces_the_last_answer(model_paths):
    session, out = scripted_session(model_paths["smollm2"], ["-cnv", "--temp", "0", "-n", "16", "-c", "256",
                                                             "-sys", "Be brief."],
                                    ["What is the capital of France?", "/regen"])
    assert session.run("") == 0
    llm, messages = session.llm, session.messages
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    held = llm.input_ids[: llm.n_tokens].tolist() + session.pending
    whole = chat_prompt_for(llm, messages[:2])
    assert held[: len(whole)] == whole
    assert llm.detokenize(held[len(whole):]).decode() == messages[2]["content"]
    assert out.getvalue().count("Paris") == 2  # both answers were shown


# --- the console: multi-line input and Ctrl-C ------------------------------------------------------

def typed(monkeypatch, lines):
    """Make input() return these lines (None = Ctrl-D)."""
    script = iter(lines)

    def fake_input(prompt=""):
        line = next(script)
        if line is None:
            raise EOFError
        return line

    monkeypatch.setattr("builtins.input", fake_input)


def test_a_backslash_continues_the_message_on_the_next_line(monkeypatch):
    console = Console(out=io.StringIO())
    typed(monkeypatch, ["first line\\", "second line", "next message"])
    assert console.read_message("> ") == "first line\nsecond line"
    assert console.read_message("> ") == "next message"


def test_multiline_input_sends_on_a_backslash_or_ctrl_d(monkeypatch):
    console = Console(multiline=True, out=io.StringIO())
    typed(monkeypatch, ["one", "", "two\\", "three", None, None])
    assert console.read_message("> ") == "one\n\ntwo"
    assert console.read_message("> ") == "three"  # Ctrl-D on a continuation line sends it
    assert console.read_message("> ") is None  # Ctrl-D with nothing typed leaves


def test_colour_codes_only_with_color(monkeypatch):
    plain, coloured = io.StringIO(), io.StringIO()
    Console(out=plain).write("text", Display.PROMPT)
    console = Console(color=True, out=coloured)
    console.write("text", Display.PROMPT)
    console.reset()
    assert plain.getvalue() == "text"
    assert coloured.getvalue() == "\x1b[33mtext\x1b[0m"


def test_the_first_ctrl_c_while_generating_only_raises_a_flag():
    import signal

    with InterruptGuard() as guard:
        guard.start_generating()
        signal.raise_signal(signal.SIGINT)
        assert guard.interrupted
        with pytest.raises(KeyboardInterrupt):  # a second one leaves
            signal.raise_signal(signal.SIGINT)
        guard.stop_generating()
        with pytest.raises(KeyboardInterrupt):  # and at the prompt the first one does
            signal.raise_signal(signal.SIGINT)
