"""A small evaluator for the subset of the Cloud Logging query language terraform/monitoring.tf uses,
and for the log-based metrics' extractors, applied to the service's own JSON log lines.

Supported (anything else is refused with a SyntaxError, so a filter that grows past the subset fails the
tests instead of being half-understood):
- comparisons `field = value`, `field =~ "re2"` (a regular-expression search), `field < <= > >= number`,
  where field is a dotted path (`resource.type`, `resource.labels.service_name`, `jsonPayload.event`) and
  value a double-quoted string or a number;
- `AND`, `OR`, `NOT`, parentheses; AND binds tighter than OR, as in Cloud Logging.
Semantics follow Cloud Logging: a missing (or null) field matches no comparison; a number compared with a
number compares numerically, otherwise as text.
Extractors: `EXTRACT(field)` and `REGEXP_EXTRACT(field, "re")` (the field is converted to a string first;
the label is "" when the field is missing or the regex does not match, as the label's default value).

`entry(line, service)` turns one JSON line as the service prints it into the LogEntry Cloud Run makes of
it: the special fields (severity, time, trace, spanId) leave jsonPayload, the rest stays.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Entry = dict[str, Any]
Predicate = Callable[[Entry], bool]

_SPECIAL = {"severity", "time", "timestamp", "logging.googleapis.com/trace", "logging.googleapis.com/spanId"}


def entry(line: dict[str, Any], service: str) -> Entry:
    """The LogEntry of one stdout JSON line of a Cloud Run service (2nd-gen function)."""
    return {
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": service}},
        "severity": line.get("severity", "DEFAULT"),
        "jsonPayload": {k: v for k, v in line.items() if k not in _SPECIAL},
    }


_MISSING = object()


def lookup(item: Entry, path: str) -> Any:
    value: Any = item
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return _MISSING if value is None else value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else json.dumps(value)


# ------------------------------------------------------------------------------------------ lexer

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<op>=~|<=|>=|!=|=|<|>)
      | (?P<paren>[()])
      | (?P<word>[A-Za-z_][A-Za-z0-9_./-]*)
      | (?P<number>-?\d+(?:\.\d+)?)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


def tokens(query: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    query = query.strip()
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if match is None or match.end() == pos:
            raise SyntaxError(f"cannot read the filter at {query[pos : pos + 30]!r}")
        kind = match.lastgroup
        assert kind is not None
        out.append(Token(kind, match.group(kind)))
        pos = match.end()
    return out


# ------------------------------------------------------------------------------------------ parser


@dataclass
class Comparison:
    field: str
    op: str
    value: str | float

    def __call__(self, item: Entry) -> bool:
        got = lookup(item, self.field)
        if got is _MISSING:
            return False
        if self.op == "=~":
            return re.search(str(self.value), _text(got)) is not None
        if isinstance(self.value, float) and isinstance(got, int | float) and not isinstance(got, bool):
            left: Any = float(got)
            right: Any = self.value
        else:
            left, right = _text(got), _text(self.value)
        return {
            "=": left == right,
            "<": left < right,
            "<=": left <= right,
            ">": left > right,
            ">=": left >= right,
        }[self.op]


class _Parser:
    def __init__(self, query: str) -> None:
        self.items = tokens(query)
        self.pos = 0
        self.fields: list[str] = []  # every field the filter names
        self.comparisons: list[Comparison] = []

    def peek(self) -> Token | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def take(self, kind: str | None = None, text: str | None = None) -> Token:
        token = self.peek()
        if token is None or (kind and token.kind != kind) or (text and token.text != text):
            raise SyntaxError(f"expected {text or kind} at token {self.pos}, got {token}")
        self.pos += 1
        return token

    def parse(self) -> Predicate:
        predicate = self.disjunction()
        if self.peek() is not None:
            raise SyntaxError(f"unexpected {self.peek()} (implicit AND and other forms are not in the subset)")
        return predicate

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while (token := self.peek()) is not None and token.kind == "word" and token.text == "OR":
            self.take()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda item: any(p(item) for p in parts))

    def conjunction(self) -> Predicate:
        parts = [self.negation()]
        while (token := self.peek()) is not None and token.kind == "word" and token.text == "AND":
            self.take()
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else (lambda item: all(p(item) for p in parts))

    def negation(self) -> Predicate:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text == "NOT":
            self.take()
            inner = self.negation()
            return lambda item: not inner(item)
        return self.primary()

    def primary(self) -> Predicate:
        token = self.peek()
        if token is not None and token.kind == "paren" and token.text == "(":
            self.take()
            inner = self.disjunction()
            self.take("paren", ")")
            return inner
        field = self.take("word").text
        op = self.take("op").text
        if op == "!=":
            raise SyntaxError("!= is not in the subset (its meaning for missing fields differs): use NOT a=b")
        raw = self.take()
        if raw.kind == "string":
            value: str | float = json.loads(raw.text)
        elif raw.kind == "number":
            value = float(raw.text)
        else:
            raise SyntaxError(f"{field} {op} needs a quoted string or a number, got {raw.text}")
        if op in ("<", "<=", ">", ">=") and not isinstance(value, float):
            raise SyntaxError(f"{field} {op} compares with a number only, in this subset")
        comparison = Comparison(field, op, value)
        self.fields.append(field)
        self.comparisons.append(comparison)
        return comparison


@dataclass
class Filter:
    text: str
    predicate: Predicate
    fields: list[str]
    comparisons: list[Comparison]

    def __call__(self, item: Entry) -> bool:
        return self.predicate(item)


def parse(query: str) -> Filter:
    parser = _Parser(query)
    predicate = parser.parse()
    return Filter(query, predicate, parser.fields, parser.comparisons)


# ------------------------------------------------------------------------------------------ extractors

_EXTRACT = re.compile(r"^EXTRACT\((?P<field>[A-Za-z0-9_.]+)\)$")
_REGEXP_EXTRACT = re.compile(r'^REGEXP_EXTRACT\((?P<field>[A-Za-z0-9_.]+),\s*(?P<re>"(?:[^"\\]|\\.)*")\)$')


@dataclass
class Extractor:
    field: str
    regex: re.Pattern[str] | None

    def __call__(self, item: Entry) -> str:
        got = lookup(item, self.field)
        if got is _MISSING:
            return ""
        text = _text(got)
        if self.regex is None:
            return text
        match = self.regex.search(text)
        return match.group(1) if match else ""


def extractor(expression: str) -> Extractor:
    if match := _EXTRACT.match(expression):
        return Extractor(match.group("field"), None)
    if match := _REGEXP_EXTRACT.match(expression):
        regex = re.compile(json.loads(match.group("re")))
        if regex.groups != 1:
            raise SyntaxError(f"{expression}: the regex needs exactly one capture group")
        return Extractor(match.group("field"), regex)
    raise SyntaxError(f"not an extractor this subset knows: {expression}")
