"""The segment-trie router: matching, parameters, 405 information, overlap refusal, path confusion."""

from __future__ import annotations

import pytest

from gateway.policy.router import Router, Template, TemplateError


def make() -> Router[str]:
    r: Router[str] = Router()
    r.add(Template.parse("/open-banking/v3.1/register"), ["POST"], "create")
    r.add(Template.parse("/open-banking/v3.1/register/{ClientId}"), ["GET"], "read")
    r.add(Template.parse("/open-banking/v3.1/register/{ClientId}"), ["PUT", "DELETE"], "write")
    r.add(Template.parse("/oauth2/token"), ["POST"], "token")
    r.add(Template.parse("/"), ["GET"], "root")
    return r


@pytest.mark.parametrize(
    ("method", "path", "value", "params"),
    [
        ("POST", "/open-banking/v3.1/register", "create", {}),
        ("GET", "/open-banking/v3.1/register/abc", "read", {"ClientId": "abc"}),
        ("DELETE", "/open-banking/v3.1/register/a%20b", "write", {"ClientId": "a b"}),
        ("POST", "/oauth2/token", "token", {}),
        ("GET", "/", "root", {}),
    ],
)
def test_matches(method, path, value, params):
    """Literal and parameter segments route to the right value with decoded parameters."""
    m = make().match(method, path)
    assert m is not None and m.value == value and m.params == params


def test_known_path_other_method_lists_allowed():
    """A known path with another method yields the allowed methods (for 405 + Allow)."""
    m = make().match("PATCH", "/open-banking/v3.1/register/abc")
    assert m is not None and m.value is None and m.allowed == ("DELETE", "GET", "PUT")


@pytest.mark.parametrize(
    "path",
    [
        "/open-banking/v3.1/register/",  # empty segment
        "/open-banking/v3.1/register/abc/x",  # too deep
        "/open-banking/v3.1//register",
        "/open-banking/v3.1/register/..",  # dot segment
        "/open-banking/v3.1/register/%2e%2e",  # encoded dot segment
        "/open-banking/v3.1/register/a%2fb",  # encoded slash
        "/open-banking/v3.1/register/a%5cb",  # encoded backslash
        "/open-banking/v3.1/register/%ff",  # not UTF-8
        "/open-banking/v3.1/x/../register",
        "/unknown",
    ],
)
def test_no_match_for_unknown_or_confusing_paths(path):
    """Paths a backend could normalise to another resource match nothing."""
    assert make().match("GET", path) is None or make().match("GET", path).template is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("/x/{A}", "/x/{B}"),
        ("/x/{A}", "/x/lit"),
        ("/x/lit/{A}", "/x/{B}/y"),
        ("/x", "/x"),
    ],
)
def test_overlapping_routes_with_common_method_are_refused(a, b):
    """Two templates that could match one path with a common method are an error."""
    r: Router[str] = Router()
    r.add(Template.parse(a), ["GET", "POST"], "a")
    with pytest.raises(TemplateError, match="overlaps"):
        r.add(Template.parse(b), ["GET"], "b")


def test_overlapping_routes_with_disjoint_methods_are_fine():
    """Same path, different methods: two policies."""
    r: Router[str] = Router()
    r.add(Template.parse("/x/{A}"), ["GET"], "a")
    r.add(Template.parse("/x/{B}"), ["DELETE"], "b")
    assert r.match("DELETE", "/x/1").params == {"B": "1"}  # type: ignore[union-attr]
    assert r.match("GET", "/x/1").params == {"A": "1"}  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["x", "/a//b", "/a/../b", "/a/{}", "/a/{A}/{A}", "/a/b{C}", "/a/ b"])
def test_bad_templates(bad):
    """Templates must be clean absolute paths with unique, named parameters."""
    with pytest.raises(TemplateError):
        Template.parse(bad)


def test_match_cost_does_not_depend_on_policy_count():
    """Routing walks one trie level per path segment: 1,000 routes still resolve the right one."""
    r: Router[int] = Router()
    for i in range(1000):
        r.add(Template.parse(f"/api/v{i}/items/{{Id}}"), ["GET"], i)
    m = r.match("GET", "/api/v999/items/7")
    assert m is not None and m.value == 999 and m.params == {"Id": "7"}
