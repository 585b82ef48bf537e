import keyword

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from progra_core.calls import Call, CallParseError, format_calls, parse_calls, schema_equal


def test_parses_the_paper_format():
    calls = parse_calls("[cd(folder='document'), mkdir(dir_name='temp'), mv(source='a.pdf', destination='temp')]")
    assert [c.name for c in calls] == ["cd", "mkdir", "mv"]
    assert calls[2].args == {"source": "a.pdf", "destination": "temp"}


def test_single_call_positional_and_literals():
    (c,) = parse_calls("sort('final_report.pdf')")
    assert c == Call("sort", {}, ("final_report.pdf",))
    (c,) = parse_calls("f(a=-1, b=+2.5, c=None, d=True, e=[1, (2, 3)], g={'k': [1, {'x': -0.5}]})")
    assert c.args == {"a": -1, "b": 2.5, "c": None, "d": True, "e": [1, [2, 3]], "g": {"k": [1, {"x": -0.5}]}}


def test_empty_list_and_code_fence():
    assert parse_calls("[]") == []
    assert parse_calls("```python\n[ls(a=True)]\n```") == [Call("ls", {"a": True})]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("os.system('rm -rf /')", "attribute access"),
        ("[f(x=a[0])]", "subscripts"),
        ("[f(x=g())]", "nested call"),
        ("[f(x=lambda: 1)]", "lambdas"),
        ("[f(x=[i for i in range(3)])]", "comprehensions"),
        ("[f(x=y)]", "bare name 'y'"),
        ("[__import__('os')]", "dunder"),
        ("[_private()]", "private"),
        ("f(); g()", "2 statements"),
        ("[f(x=1 if True else 2)]", "conditional"),
        ("import os", "statements are not allowed"),
        ("x = f()", "statements are not allowed"),
        ("[f(*args)]", "'*' argument unpacking"),
        ("[f(**kw)]", "'**' argument unpacking"),
        ("[f(x={1, 2})]", "set literals"),
        ("[f(x=f'{a}')]", "f-strings"),
        ("[f(x=1j)]", "unsupported literal"),
        ("[f(x=b'a')]", "unsupported literal"),
        ("[f(x=-'a')]", "non-number"),
        ("[f(x=1+2)]", "BinOp"),
        ("[ls", "not valid call syntax"),
        ("", "empty"),
        ("[1, 2]", "expected a function call"),
        ("[f]", "bare name"),
        ("(lambda: 0)()", "plain name"),
    ],
)
def test_rejects_with_a_message_saying_what(text, fragment):
    with pytest.raises(CallParseError) as e:
        parse_calls(text)
    assert fragment in str(e.value)


def test_rejects_non_text_and_huge_input():
    with pytest.raises(CallParseError):
        parse_calls(None)  # type: ignore[arg-type]
    with pytest.raises(CallParseError, match="longer than"):
        parse_calls("[f(x='" + "a" * 300_000 + "')]")
    with pytest.raises(CallParseError):
        parse_calls("[f(x=" + "[" * 5000 + "]" * 5000 + ")]")


def test_schema_equal_eq10():
    a = "[mv(source='a.txt', destination='b'), cd(folder='x')]"
    assert schema_equal(a, "[cd(folder='x'), mv(destination='b', source='a.txt')]")  # order-free
    assert schema_equal("[f(s='hello   world ')]", "[f(s='hello world')]")  # whitespace-insensitive
    assert schema_equal("[f(v=[1, 2, 3])]", "[f(v=[3, 1, 2])]")  # lists as multisets
    assert not schema_equal("[f(v=[1, 2, 3])]", "[f(v=[3, 1, 2])]", ordered=True)
    assert not schema_equal("[f(v=[1, 1, 2])]", "[f(v=[1, 2, 2])]")  # multiset, not set
    assert schema_equal("[f(x=1)]", "[f(x=1.0)]")
    assert not schema_equal("[f(x=True)]", "[f(x=1)]")  # booleans are not numbers
    assert not schema_equal("[f(x=1)]", "[f(x=1), f(x=1)]")
    assert not schema_equal("[f(x=1)]", "[g(x=1)]")
    assert not schema_equal("[f(x='a')]", "[f(y='a')]")
    assert not schema_equal("[f(x=1)]", "not a call")
    assert schema_equal("[f(d={'a': 1, 'b': [2, 3]})]", "[f(d={'b': [3, 2], 'a': 1})]")


def test_schema_equal_resolves_positional_arguments():
    from progra_core.envs.bfcl import BFCLEnv

    env = BFCLEnv({}, ["GorillaFileSystem"])
    assert not schema_equal("[sort('r.pdf')]", "[sort(file_name='r.pdf')]")
    assert schema_equal("[sort('r.pdf')]", "[sort(file_name='r.pdf')]", resolve=env.resolve)


# ---- property tests ----------------------------------------------------------------------

names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,12}", fullmatch=True).filter(lambda s: not keyword.iskeyword(s))
scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
calls = st.builds(
    lambda n, kw, pos: Call(n, kw, tuple(pos)),
    names,
    st.dictionaries(names.filter(lambda s: s.isidentifier()), values, max_size=4),
    st.lists(values, max_size=3),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(calls, max_size=5))
def test_format_parse_round_trip(cs):
    assert parse_calls(format_calls(cs)) == cs


@settings(max_examples=500)
@given(st.text(max_size=200))
def test_random_text_only_raises_call_parse_error(text):
    try:
        parse_calls(text)
    except CallParseError:
        pass


@settings(max_examples=300)
@given(st.text(alphabet="[](){}'\"=,.-+*_:;ab1 \n\\#@lambdaos", max_size=120))
def test_call_like_garbage_only_raises_call_parse_error(text):
    try:
        out = parse_calls(text)
        assert all(isinstance(c, Call) for c in out)
    except CallParseError:
        pass
