"""What a bad grammar or schema raises: one typed error that says what and where."""

from __future__ import annotations


class GrammarError(ValueError):
    """A grammar that cannot be used: a parse error (with its line and column), an undefined
    rule, left recursion, a repetition past llama.cpp's bounds, or a grammar the matcher refuses."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        self.line, self.column = line, column
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(f"{message}{where}")


class UnsupportedSchemaError(GrammarError):
    """A JSON schema asks for something that cannot be enforced token by token. ``keyword`` names
    it and ``path`` is the JSON pointer of the schema object that uses it."""

    def __init__(self, keyword: str, path: str, detail: str = ""):
        self.keyword, self.path = keyword, path
        reason = f": {detail}" if detail else ""
        super().__init__(f"JSON schema keyword {keyword!r} at {path or '#'} cannot be enforced{reason}")
