"""Label selectors: Kubernetes syntax and Calico's expression syntax, parsed once, matched often.

Pure code. Accepted forms (both may appear wherever a Calyx resource takes a selector):
  Calico:      all(), has(k), !has(k), k == 'v', k != 'v', k in {'a','b'}, k not in {...},
               k contains 's', k starts with 's', k ends with 's',
               combined with ! (tightest), && and || (loosest), and parentheses.
               Values are quoted with ' or ".
  Kubernetes:  k=v, k==v, k!=v, k in (a,b), k notin (a,b), k, !k, comma-separated (AND).
An empty selector string selects everything (as all()).

The syntax is detected by parsing: text valid in Calico's syntax is Calico, else text valid in
Kubernetes syntax is Kubernetes (the two languages do not overlap: Calico requires quoted
values and function forms, Kubernetes forbids quotes). When neither accepts the text, the
error reported is the one that got furthest into it, naming the position.

Semantics follow both projects: ``k != v`` and ``k not in {...}`` also match objects that lack
the label; ``k == v``, ``k in {...}`` and the string tests require it.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Mapping, Union

CALICO = "calico"
KUBERNETES = "kubernetes"


class SelectorError(ValueError):
    """Raised with a message naming the position and the problem in the selector text."""

    def __init__(self, text: str, position: int, problem: str):
        self.text = text
        self.position = position
        self.problem = problem
        super().__init__(f"invalid selector {text!r}: position {position}: {problem}")

    @property
    def detail(self) -> str:
        """The problem with its position, without repeating the text (for wrapping errors)."""
        return f"invalid selector at position {self.position}: {self.problem}"


# --- Expression tree -------------------------------------------------------------------------

@dataclass(frozen=True)
class All:
    def matches(self, labels: Mapping[str, str]) -> bool:
        return True


@dataclass(frozen=True)
class Has:
    key: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels


@dataclass(frozen=True)
class Equals:
    key: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) == self.value


@dataclass(frozen=True)
class NotEquals:
    key: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) != self.value


@dataclass(frozen=True)
class In:
    key: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        return value is not None and value in self.values


@dataclass(frozen=True)
class NotIn:
    key: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        return value is None or value not in self.values


@dataclass(frozen=True)
class Contains:
    key: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        return value is not None and self.value in value


@dataclass(frozen=True)
class StartsWith:
    key: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        return value is not None and value.startswith(self.value)


@dataclass(frozen=True)
class EndsWith:
    key: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        return value is not None and value.endswith(self.value)


@dataclass(frozen=True)
class Not:
    operand: "Expr"

    def matches(self, labels: Mapping[str, str]) -> bool:
        return not self.operand.matches(labels)


@dataclass(frozen=True)
class And:
    operands: tuple["Expr", ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(op.matches(labels) for op in self.operands)


@dataclass(frozen=True)
class Or:
    operands: tuple["Expr", ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return any(op.matches(labels) for op in self.operands)


Expr = Union[All, Has, Equals, NotEquals, In, NotIn, Contains, StartsWith, EndsWith, Not, And, Or]


def kubernetes_text(expr: "Expr") -> str:
    """``expr`` in Kubernetes selector syntax, for messages (what a LabelSelector becomes
    reads back as ``app=web,tier in (a,b),!legacy``); "everything" for :class:`All`."""
    if isinstance(expr, All):
        return "everything"
    if isinstance(expr, Equals):
        return f"{expr.key}={expr.value}"
    if isinstance(expr, NotEquals):
        return f"{expr.key}!={expr.value}"
    if isinstance(expr, In):
        return f"{expr.key} in ({','.join(sorted(expr.values))})"
    if isinstance(expr, NotIn):
        return f"{expr.key} notin ({','.join(sorted(expr.values))})"
    if isinstance(expr, Has):
        return expr.key
    if isinstance(expr, Not) and isinstance(expr.operand, Has):
        return f"!{expr.operand.key}"
    if isinstance(expr, And):
        return ",".join(kubernetes_text(op) for op in expr.operands)
    return repr(expr)


# --- Tokenizer ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    kind: str       # "word", "string", "op" or "end"
    text: str       # the word, the unquoted string, the operator
    position: int   # offset of the token in the selector text


_WORD = re.compile(r"[A-Za-z0-9_./\-]+")
_OPERATORS = ("&&", "||", "==", "!=", "!", "=", "(", ")", "{", "}", ",")


def tokenize(text: str) -> list[Token]:
    """Split selector text into tokens (shared by both syntaxes); always ends with an end token."""
    tokens: list[Token] = []
    pos = 0
    length = len(text)
    while pos < length:
        char = text[pos]
        if char.isspace():
            pos += 1
            continue
        if char in "'\"":
            close = text.find(char, pos + 1)
            if close < 0:
                raise SelectorError(text, pos, f"unterminated string starting with {char}")
            tokens.append(Token("string", text[pos + 1:close], pos))
            pos = close + 1
            continue
        word = _WORD.match(text, pos)
        if word:
            tokens.append(Token("word", word.group(), pos))
            pos = word.end()
            continue
        for op in _OPERATORS:
            if text.startswith(op, pos):
                tokens.append(Token("op", op, pos))
                pos += len(op)
                break
        else:
            raise SelectorError(text, pos, f"unexpected character {char!r}")
    tokens.append(Token("end", "", length))
    return tokens


def _describe(token: Token) -> str:
    if token.kind == "end":
        return "end of input"
    if token.kind == "string":
        return f"string {token.text!r}"
    return repr(token.text)


# Parentheses and '!' nest at most this deep: the parser recurses once per level, and a selector
# is user input (no CRD bounds its length), so deeper text is refused with a SelectorError
# rather than exhausting the interpreter's stack.
MAX_NESTING = 64


class _Cursor:
    """Position in a token list, with helpers that raise SelectorError at the current token."""

    def __init__(self, text: str, tokens: list[Token]):
        self.text = text
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def at(self, kind: str, text: str | None = None) -> bool:
        token = self.current
        return token.kind == kind and (text is None or token.text == text)

    def fail(self, expected: str) -> SelectorError:
        token = self.current
        return SelectorError(self.text, token.position, f"expected {expected}, found {_describe(token)}")

    def expect(self, kind: str, text: str | None = None, what: str | None = None) -> Token:
        if not self.at(kind, text):
            raise self.fail(what or repr(text))
        return self.advance()


# --- Calico syntax -----------------------------------------------------------------------------

def parse_calico(text: str) -> Expr:
    """Parse Calico's selector expression syntax; raises SelectorError naming the position."""
    cursor = _Cursor(text, tokenize(text))
    if cursor.at("end"):
        return All()
    expr = _calico_or(cursor)
    if not cursor.at("end"):
        raise cursor.fail("'&&', '||' or end of input")
    return expr


def _calico_or(cursor: _Cursor) -> Expr:
    operands = [_calico_and(cursor)]
    while cursor.at("op", "||"):
        cursor.advance()
        operands.append(_calico_and(cursor))
    return operands[0] if len(operands) == 1 else Or(tuple(operands))


def _calico_and(cursor: _Cursor) -> Expr:
    operands = [_calico_unary(cursor)]
    while cursor.at("op", "&&"):
        cursor.advance()
        operands.append(_calico_unary(cursor))
    return operands[0] if len(operands) == 1 else And(tuple(operands))


def _calico_unary(cursor: _Cursor) -> Expr:
    if not (cursor.at("op", "!") or cursor.at("op", "(")):
        return _calico_term(cursor)
    if cursor.depth == MAX_NESTING:
        raise SelectorError(cursor.text, cursor.current.position,
                            f"parentheses and '!' nested more than {MAX_NESTING} levels deep")
    cursor.depth += 1
    if cursor.advance().text == "!":
        expr: Expr = Not(_calico_unary(cursor))
    else:
        expr = _calico_or(cursor)
        cursor.expect("op", ")")
    cursor.depth -= 1
    return expr


def _calico_term(cursor: _Cursor) -> Expr:
    if not cursor.at("word"):
        raise cursor.fail("a label expression (all(), has(k), k == 'v', ...)")
    word = cursor.current.text
    if word in ("all", "has") and cursor.peek().kind == "op" and cursor.peek().text == "(":
        cursor.advance()
        cursor.advance()
        if word == "all":
            cursor.expect("op", ")")
            return All()
        key = _calico_label(cursor)
        cursor.expect("op", ")")
        return Has(key)
    key = _calico_label(cursor)
    token = cursor.current
    if token.kind == "op" and token.text == "==":
        cursor.advance()
        return Equals(key, _calico_string(cursor))
    if token.kind == "op" and token.text == "!=":
        cursor.advance()
        return NotEquals(key, _calico_string(cursor))
    if token.kind == "word":
        if token.text == "in":
            cursor.advance()
            return In(key, _calico_set(cursor))
        if token.text == "not" and cursor.peek().kind == "word" and cursor.peek().text == "in":
            cursor.advance()
            cursor.advance()
            return NotIn(key, _calico_set(cursor))
        if token.text == "contains":
            cursor.advance()
            return Contains(key, _calico_string(cursor))
        if token.text in ("starts", "ends") and cursor.peek().kind == "word" and cursor.peek().text == "with":
            cursor.advance()
            cursor.advance()
            value = _calico_string(cursor)
            return StartsWith(key, value) if token.text == "starts" else EndsWith(key, value)
    raise cursor.fail("'==', '!=', 'in', 'not in', 'contains', 'starts with' or 'ends with'")


def _calico_label(cursor: _Cursor) -> str:
    if not cursor.at("word"):
        raise cursor.fail("a label name")
    return cursor.advance().text


def _calico_string(cursor: _Cursor) -> str:
    return cursor.expect("string", what="a quoted string").text


def _calico_set(cursor: _Cursor) -> frozenset[str]:
    cursor.expect("op", "{")
    values: list[str] = []
    if not cursor.at("op", "}"):
        values.append(_calico_string(cursor))
        while cursor.at("op", ","):
            cursor.advance()
            values.append(_calico_string(cursor))
    cursor.expect("op", "}", what="',' or '}'")
    return frozenset(values)


# --- Kubernetes syntax -------------------------------------------------------------------------

_K8S_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")


def _k8s_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"label key prefix {prefix!r} is not a DNS subdomain"
    if not _K8S_NAME.match(name):
        return (f"label key name {name!r} must be 1-63 alphanumerics, '-', '_' or '.', "
                "starting and ending with an alphanumeric")
    return None


def parse_kubernetes(text: str) -> Expr:
    """Parse Kubernetes label-selector syntax; raises SelectorError naming the position."""
    cursor = _Cursor(text, tokenize(text))
    if cursor.at("end"):
        return All()
    requirements = [_k8s_requirement(cursor)]
    while cursor.at("op", ","):
        cursor.advance()
        requirements.append(_k8s_requirement(cursor))
    if not cursor.at("end"):
        raise cursor.fail("',' or end of input")
    return requirements[0] if len(requirements) == 1 else And(tuple(requirements))


def _k8s_requirement(cursor: _Cursor) -> Expr:
    if cursor.at("op", "!"):
        cursor.advance()
        return Not(Has(_k8s_key(cursor)))
    key = _k8s_key(cursor)
    token = cursor.current
    if token.kind == "op" and token.text in ("=", "=="):
        cursor.advance()
        return Equals(key, _k8s_value(cursor))
    if token.kind == "op" and token.text == "!=":
        cursor.advance()
        return NotEquals(key, _k8s_value(cursor))
    if token.kind == "word" and token.text == "in":
        cursor.advance()
        return In(key, _k8s_set(cursor))
    if token.kind == "word" and token.text == "notin":
        cursor.advance()
        return NotIn(key, _k8s_set(cursor))
    if token.kind == "end" or (token.kind == "op" and token.text == ","):
        return Has(key)
    raise cursor.fail("'=', '==', '!=', 'in', 'notin', ',' or end of input")


def _k8s_key(cursor: _Cursor) -> str:
    if not cursor.at("word"):
        raise cursor.fail("a label key")
    token = cursor.current
    problem = _k8s_key_problem(token.text)
    if problem:
        raise SelectorError(cursor.text, token.position, problem)
    return cursor.advance().text


def _k8s_value(cursor: _Cursor) -> str:
    token = cursor.current
    if token.kind == "word":
        if len(token.text) > 63 or not _K8S_NAME.match(token.text):
            raise SelectorError(cursor.text, token.position,
                                f"label value {token.text!r} must be at most 63 alphanumerics, '-', '_' "
                                "or '.', starting and ending with an alphanumeric")
        return cursor.advance().text
    if token.kind == "end" or (token.kind == "op" and token.text in (",", ")")):
        return ""   # an empty value is legal: k= selects k=""
    raise cursor.fail("a label value")


def _k8s_set(cursor: _Cursor) -> frozenset[str]:
    cursor.expect("op", "(")
    values = [_k8s_value(cursor)]
    while cursor.at("op", ","):
        cursor.advance()
        values.append(_k8s_value(cursor))
    cursor.expect("op", ")", what="',' or ')'")
    return frozenset(values)


# --- Detection and the Selector value -----------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def compile_selector(text: str) -> tuple[str, Expr]:
    """(syntax, expression) for selector text; cached so equal texts compile once per process."""
    try:
        return CALICO, parse_calico(text)
    except SelectorError as calico_error:
        try:
            return KUBERNETES, parse_kubernetes(text)
        except SelectorError as k8s_error:
            raise k8s_error if k8s_error.position > calico_error.position else calico_error from None


@dataclass(frozen=True)
class Selector:
    """A parsed selector. Hashable, and equal to another exactly when the texts are equal."""

    text: str
    syntax: str = field(init=False, compare=False, repr=False)
    expression: Expr = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        syntax, expression = compile_selector(self.text)
        object.__setattr__(self, "syntax", syntax)
        object.__setattr__(self, "expression", expression)

    @classmethod
    def all(cls) -> "Selector":
        return cls("all()")

    @classmethod
    def parse(cls, text: str) -> "Selector":
        """Parse selector text (surrounding whitespace ignored); raises SelectorError."""
        if not isinstance(text, str):
            raise SelectorError(repr(text), 0, f"a selector must be a string, not {type(text).__name__}")
        return cls(text.strip())

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.expression.matches(labels)

    def __str__(self) -> str:
        return self.text
