"""The terminal side of the interactive chat: colours, line editing, multi-line input, Ctrl-C.

Line editing and history come from GNU readline through Python's standard
``readline`` module (arrow keys, Ctrl-A/E, Ctrl-R, Up for earlier lines), so there
is nothing extra to install; where readline is missing (or input is piped) lines
are read plainly. Colours are llama.cpp's (common/console.cpp): the prompt yellow,
what the user types bold green, errors bold red, generated text the terminal's own.

Multi-line input follows llama.cpp: a line ending in ``\\`` continues on the next
line; with ``--multiline-input`` Enter continues and a line ending in ``\\`` sends.
"""

from __future__ import annotations

import enum
import signal
import sys
from typing import TextIO


class Display(enum.Enum):
    RESET = "\x1b[0m"
    PROMPT = "\x1b[33m"
    USER_INPUT = "\x1b[1m\x1b[32m"
    ERROR = "\x1b[1m\x1b[31m"
    INFO = "\x1b[35m"


def _enable_readline() -> bool:
    """Import readline (which hooks it into ``input()``) when reading from a terminal."""
    if not sys.stdin.isatty():
        return False
    try:
        import readline  # noqa: F401  (importing it is what turns line editing on)
    except ImportError:
        return False
    return True


class Console:
    """Writes coloured output and reads the user's messages."""

    def __init__(self, *, color: bool = False, multiline: bool = False, out: TextIO | None = None,
                 err: TextIO | None = None):
        self.color = color
        self.multiline = multiline
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._display = Display.RESET
        self.readline = _enable_readline()

    # -- output ---------------------------------------------------------------------------------
    def set_display(self, display: Display) -> None:
        """Switch colour (only emitting a code when it changes, as llama.cpp does)."""
        if self.color and display is not self._display:
            self.out.write(display.value)
            self.out.flush()
        self._display = display

    def write(self, text: str, display: Display | None = None) -> None:
        if display is not None:
            self.set_display(display)
        self.out.write(text)
        self.out.flush()

    def error(self, text: str) -> None:
        """A message in the error colour, on standard output so it lands among the conversation."""
        previous = self._display
        self.write(text, Display.ERROR)
        self.set_display(previous)

    def info(self, text: str) -> None:
        """Notes about the session (banner, help): standard error, like llama.cpp's LOG_INF."""
        self.out.flush()
        self.err.write(text)
        self.err.flush()

    def reset(self) -> None:
        self.set_display(Display.RESET)

    # -- input ----------------------------------------------------------------------------------
    def _input(self, prompt: str) -> str:
        if self.color:
            # typed text shows in the user colour; \001..\002 tell readline these bytes take no width
            start = "\001" if self.readline else ""
            end = "\002" if self.readline else ""
            prompt = f"{prompt}{start}{Display.USER_INPUT.value}{end}"
            self._display = Display.USER_INPUT
        try:
            return input(prompt)
        finally:
            self.reset()

    def read_message(self, prompt: str = "") -> str | None:
        """One message (several lines joined with newlines); None when the user ends input (Ctrl-D).

        Raises ``KeyboardInterrupt`` on Ctrl-C, as ``input()`` does.
        """
        lines: list[str] = []
        first = True
        while True:
            try:
                line = self._input(prompt if first else "")
            except EOFError:
                if lines:  # Ctrl-D on a continuation line sends what was typed
                    self.write("\n")
                    break
                return None
            except UnicodeDecodeError:
                self.error("that line is not valid UTF-8 text; type it again\n")
                continue
            first = False
            more = self.multiline
            if line.endswith("\\"):
                line = line[:-1]
                more = not more
            lines.append(line)
            if not more:
                break
        return "\n".join(lines)


class InterruptGuard:
    """Ctrl-C during generation stops the answer; Ctrl-C anywhere else (or a second one) leaves.

    llama.cpp's ``sigint_handler``: the first SIGINT while the model is generating
    only raises a flag that the generation loop checks after each token; any
    other SIGINT raises ``KeyboardInterrupt`` (which ends the program).
    """

    def __init__(self):
        self.generating = False
        self.interrupted = False
        self._previous = None

    def __enter__(self) -> "InterruptGuard":
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)

    def _handle(self, signum, frame) -> None:
        if self.generating and not self.interrupted:
            self.interrupted = True
            return
        raise KeyboardInterrupt

    def start_generating(self) -> None:
        self.interrupted = False
        self.generating = True

    def stop_generating(self) -> None:
        self.generating = False
