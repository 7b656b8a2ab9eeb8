"""Selectors: both syntaxes, their semantics, syntax detection, error positions, and
property-based agreement between the parser and a direct evaluation of random expressions."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calyx.selector import (CALICO, KUBERNETES, MAX_NESTING, All, And, Equals, Has, In, Not, NotEquals,
                            NotIn, Or, Selector, SelectorError, parse_calico, parse_kubernetes)

LABELS = {"app": "web", "tier": "frontend", "zone": "us-east-1a", "calyx.dev/rr": "true", "empty": ""}


@pytest.mark.parametrize("text, expected", [
    ("", True),
    ("all()", True),
    ("has(app)", True),
    ("has(missing)", False),
    ("!has(missing)", True),
    ("!has(app)", False),
    ("app == 'web'", True),
    ('app == "web"', True),
    ("app == 'db'", False),
    ("missing == 'x'", False),
    ("app != 'db'", True),
    ("app != 'web'", False),
    ("missing != 'x'", True),            # != matches objects without the label
    ("app in {'web', 'db'}", True),
    ("app in {'db'}", False),
    ("app in {}", False),
    ("missing in {'x'}", False),
    ("app not in {'db'}", True),
    ("app not in {'web','db'}", False),
    ("missing not in {'x'}", True),      # not in matches objects without the label
    ("zone contains 'east'", True),
    ("zone starts with 'us-'", True),
    ("zone ends with '1a'", True),
    ("zone ends with '1b'", False),
    ("missing contains ''", False),
    ("calyx.dev/rr == 'true'", True),
    ("empty == ''", True),
    ("app == 'web' && tier == 'frontend'", True),
    ("app == 'web' && tier == 'backend'", False),
    ("app == 'db' || tier == 'frontend'", True),
    ("!(app == 'web')", False),
    ("!!has(app)", True),
    ("app == 'db' || app == 'web' && tier == 'backend'", False),   # && binds tighter than ||
    ("(app == 'db' || app == 'web') && tier == 'frontend'", True),
    ("has(app)&&has(tier)", True),
])
def test_calico_syntax(text, expected):
    selector = Selector.parse(text)
    assert selector.syntax == CALICO
    assert selector.matches(LABELS) is expected


@pytest.mark.parametrize("text, expected", [
    ("app=web", True),
    ("app==web", True),
    ("app = web", True),
    ("app=db", False),
    ("app!=db", True),
    ("missing!=x", True),
    ("app!=web", False),
    ("app in (web,db)", True),
    ("app in (db)", False),
    ("missing in (x)", False),
    ("app notin (db)", True),
    ("missing notin (x)", True),
    ("app notin (web)", False),
    ("app", True),
    ("missing", False),
    ("!missing", True),
    ("!app", False),
    ("app=web,tier=frontend", True),
    ("app=web, tier=backend", False),
    ("calyx.dev/rr=true", True),
    ("empty=", True),
    ("app in (web, )", True),
])
def test_kubernetes_syntax(text, expected):
    selector = Selector.parse(text)
    assert selector.syntax == KUBERNETES
    assert selector.matches(LABELS) is expected


def test_the_two_syntaxes_build_the_same_expressions():
    assert parse_calico("app == 'web' && has(tier)") == parse_kubernetes("app=web,tier")
    assert parse_calico("app not in {'a','b'}") == parse_kubernetes("app notin (b,a)")
    assert parse_calico("!has(x)") == parse_kubernetes("!x")


@pytest.mark.parametrize("text, position, fragment", [
    ("app == 'web' &&", 15, "expected a label expression"),
    ("(app == 'web'", 13, "expected ')'"),
    ("app == 'web", 7, "unterminated string"),
    ("app in {'a' 'b'}", 12, "expected ',' or '}'"),
    ("has(app", 7, "expected ')'"),
    ("all(x)", 4, "expected ')'"),
    ("app == 'a' app", 11, "expected '&&', '||' or end of input"),
    ("app in (a,b", 11, "expected ',' or ')'"),
    ("app = \"b\"", 6, "expected a label value"),
    ("a$b", 1, "unexpected character '$'"),
    ("app=-bad", 4, "label value '-bad'"),
    ("Bad_Prefix/key=x", 14, "expected '=='"),
    ("app contains x", 13, "expected a quoted string"),
])
def test_errors_name_the_position(text, position, fragment):
    with pytest.raises(SelectorError) as info:
        Selector.parse(text)
    err = info.value
    assert err.position == position, str(err)
    assert fragment in err.problem
    assert str(err) == f"invalid selector {text!r}: position {position}: {err.problem}"
    assert err.detail == f"invalid selector at position {position}: {err.problem}"


def test_kubernetes_key_rules_are_enforced():
    with pytest.raises(SelectorError, match="not a DNS subdomain"):
        parse_kubernetes("Bad_Prefix/key=x")
    with pytest.raises(SelectorError, match="label key name"):
        parse_kubernetes("-key=x")
    with pytest.raises(SelectorError, match="label value"):
        parse_kubernetes("key=" + "v" * 64)


@pytest.mark.parametrize("opening, closing", [("(", ")"), ("!", "")])
def test_nesting_is_bounded_and_refused_beyond_with_a_selector_error(opening, closing):
    deepest = opening * MAX_NESTING + "has(app)" + closing * MAX_NESTING
    assert Selector.parse(deepest).matches(LABELS) is (opening == "(" or MAX_NESTING % 2 == 0)
    for depth in (MAX_NESTING + 1, 5000):        # far beyond the interpreter's recursion limit
        with pytest.raises(SelectorError) as info:
            Selector.parse(opening * depth + "has(app)" + closing * depth)
        assert info.value.position == MAX_NESTING
        assert info.value.problem == f"parentheses and '!' nested more than {MAX_NESTING} levels deep"


def test_non_string_is_refused():
    with pytest.raises(SelectorError, match="must be a string, not int"):
        Selector.parse(5)  # type: ignore[arg-type]


def test_selector_is_hashable_and_compared_by_text():
    a, b = Selector.parse("  app == 'web' "), Selector("app == 'web'")
    assert a == b and hash(a) == hash(b)
    assert a.text == "app == 'web'"
    assert Selector.parse("app == 'web'") != Selector.parse("app=='web'")
    assert {a, b, Selector.all()} == {b, Selector("all()")}
    assert Selector.all().matches({}) and Selector("").matches({"x": "y"})
    assert str(a) == "app == 'web'"
    with pytest.raises(AttributeError):
        a.text = "x"  # type: ignore[misc]


def test_direct_construction_validates():
    with pytest.raises(SelectorError):
        Selector("app ==== x")


# --- Property-based: random expressions rendered as text, parsed, evaluated ---------------------

KEYS = ["a", "b", "c", "x.io/d"]
VALUES = ["1", "2", "v-3", ""]

label_sets = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=4)


def _leaf():
    key, value = st.sampled_from(KEYS), st.sampled_from(VALUES)
    values = st.frozensets(st.sampled_from(VALUES), max_size=3)
    return st.one_of(
        st.just(All()),
        key.map(Has),
        st.builds(Equals, key, value),
        st.builds(NotEquals, key, value),
        st.builds(In, key, values),
        st.builds(NotIn, key, values),
    )


expressions = st.recursive(
    _leaf(),
    lambda inner: st.one_of(
        inner.map(Not),
        st.lists(inner, min_size=2, max_size=3).map(lambda ops: And(tuple(ops))),
        st.lists(inner, min_size=2, max_size=3).map(lambda ops: Or(tuple(ops))),
    ),
    max_leaves=8,
)


def render_calico(expr) -> str:
    if isinstance(expr, All):
        return "all()"
    if isinstance(expr, Has):
        return f"has({expr.key})"
    if isinstance(expr, Equals):
        return f"{expr.key} == '{expr.value}'"
    if isinstance(expr, NotEquals):
        return f'{expr.key} != "{expr.value}"'
    if isinstance(expr, (In, NotIn)):
        op = "in" if isinstance(expr, In) else "not in"
        return f"{expr.key} {op} {{" + ", ".join(f"'{v}'" for v in sorted(expr.values)) + "}"
    if isinstance(expr, Not):
        return f"!({render_calico(expr.operand)})"
    joiner = " && " if isinstance(expr, And) else " || "
    return joiner.join(f"({render_calico(op)})" for op in expr.operands)


def reference(expr, labels) -> bool:
    """Direct evaluation of the tree, written independently of the matcher methods."""
    if isinstance(expr, All):
        return True
    if isinstance(expr, Has):
        return expr.key in labels
    if isinstance(expr, Equals):
        return expr.key in labels and labels[expr.key] == expr.value
    if isinstance(expr, NotEquals):
        return not (expr.key in labels and labels[expr.key] == expr.value)
    if isinstance(expr, In):
        return expr.key in labels and labels[expr.key] in expr.values
    if isinstance(expr, NotIn):
        return not (expr.key in labels and labels[expr.key] in expr.values)
    if isinstance(expr, Not):
        return not reference(expr.operand, labels)
    results = [reference(op, labels) for op in expr.operands]
    return all(results) if isinstance(expr, And) else any(results)


@settings(max_examples=300, deadline=None)
@given(expressions, label_sets)
def test_calico_text_round_trips_and_matches_reference(expr, labels):
    text = render_calico(expr)
    selector = Selector.parse(text)
    assert selector.syntax == CALICO
    assert selector.matches(labels) == reference(expr, labels)


k8s_requirements = st.one_of(
    st.sampled_from(KEYS).map(lambda k: (k, Has(k))),
    st.sampled_from(KEYS).map(lambda k: (f"!{k}", Not(Has(k)))),
    st.builds(lambda k, v: (f"{k}={v}", Equals(k, v)), st.sampled_from(KEYS), st.sampled_from(VALUES)),
    st.builds(lambda k, v: (f"{k} != {v}", NotEquals(k, v)), st.sampled_from(KEYS), st.sampled_from(VALUES)),
    st.builds(lambda k, vs: (f"{k} in ({','.join(sorted(vs))})", In(k, frozenset(vs))),
              st.sampled_from(KEYS), st.frozensets(st.sampled_from(VALUES[:3]), min_size=1, max_size=3)),
    st.builds(lambda k, vs: (f"{k} notin ({','.join(sorted(vs))})", NotIn(k, frozenset(vs))),
              st.sampled_from(KEYS), st.frozensets(st.sampled_from(VALUES[:3]), min_size=1, max_size=3)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(k8s_requirements, min_size=1, max_size=4), label_sets)
def test_kubernetes_text_matches_reference(requirements, labels):
    text = ",".join(part for part, _ in requirements)
    selector = Selector.parse(text)
    assert selector.syntax == KUBERNETES
    assert selector.matches(labels) == all(reference(expr, labels) for _, expr in requirements)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab=!(){}',&| x", max_size=20))
def test_arbitrary_text_either_parses_or_raises_selector_error(text):
    try:
        selector = Selector.parse(text)
    except SelectorError as err:
        assert 0 <= err.position <= len(text.strip())
    else:
        assert isinstance(selector.matches({"a": "b"}), bool)
