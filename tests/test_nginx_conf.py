"""``deploy/nginx.conf`` never writes an API token to its access log.

The page's ``<audio src>`` and ``EventSource`` carry the token as ``?token=``; nginx's
default ``combined`` format logs ``$request``, query string included. The file is parsed
with crossplane (nginx's grammar), every access log's format is rendered for a request
carrying a token (maps evaluated with their own regexes), and the token must not be in
the line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import crossplane

from tests.stack import ROOT

CONF = ROOT / "deploy" / "nginx.conf"
SECRET = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.dG9rZW4"

# What nginx would hold for GET /api/events?token=<SECRET>, sent from a page whose
# own URL had the token too. A format using a variable not listed here fails the test:
# list it, with the value nginx would give it.
REQUEST_VARIABLES = {
    "remote_addr": "203.0.113.7",
    "remote_user": "-",
    "time_local": "30/Nov/2026:09:00:00 +0000",
    "request_method": "GET",
    "server_protocol": "HTTP/1.1",
    "uri": "/api/events",
    "request_uri": f"/api/events?a=1&token={SECRET}",
    "args": f"a=1&token={SECRET}",
    "query_string": f"a=1&token={SECRET}",
    "arg_token": SECRET,
    "is_args": "?",
    "request": f"GET /api/events?a=1&token={SECRET} HTTP/1.1",
    "status": "200",
    "body_bytes_sent": "42",
    "bytes_sent": "300",
    "http_referer": f"https://crm.example/calls?token={SECRET}",
    "http_user_agent": "Mozilla/5.0",
    "request_time": "0.004",
}
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")

Directive = dict[str, Any]


def walk(
    directives: list[Directive], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Directive]]:
    for d in directives:
        yield path, d
        yield from walk(d.get("block", []), (*path, d["directive"]))


def parsed() -> list[tuple[tuple[str, ...], Directive]]:
    # The file is included inside http { }: its top level is the http context.
    result = crossplane.parse(str(CONF), single=True, check_ctx=False, check_args=False)
    assert result["status"] == "ok", result["errors"]
    return list(walk(result["config"][0]["parsed"], ("http",)))


class Request:
    """nginx's variables for one request, with the file's maps evaluated on demand."""

    def __init__(self, maps: dict[str, tuple[str, list[tuple[str, str]]]]) -> None:
        self.values = dict(REQUEST_VARIABLES)
        self.maps = maps

    def get(self, name: str) -> str:
        if name in self.values:
            return self.values[name]
        assert name in self.maps, f"${name}: add the value nginx gives it to REQUEST_VARIABLES"
        source, entries = self.maps[name]
        text = self.render(source)
        # No match and no default: "".
        value = next((result for key, result in entries if key == "default"), "")
        for key, result in entries:
            if key.startswith("~"):
                # PCRE's (?<name>) is Python's (?P<name>); "~*" is case-insensitive.
                flags = re.IGNORECASE if key.startswith("~*") else 0
                pattern = re.sub(r"\(\?<(\w+)>", r"(?P<\1>", key.lstrip("~*"))
                match = re.search(pattern, text, flags)
                if match:
                    self.values.update(match.groupdict())
                    self.values.update({str(i + 1): g for i, g in enumerate(match.groups())})
                    value = result
                    break
            elif key == text:
                value = result
                break
        self.values[name] = self.render(value)
        return self.values[name]

    def render(self, template: str) -> str:
        return VARIABLE.sub(lambda m: self.get(m.group(1) or m.group(2)), template)


def test_the_access_log_never_writes_the_token() -> None:
    directives = parsed()
    formats = {
        d["args"][0]: "".join(a for a in d["args"][1:] if not a.startswith("escape="))
        for _, d in directives
        if d["directive"] == "log_format"
    }
    # A map's block lists "key value" lines: crossplane reads each key as a directive.
    maps = {
        d["args"][1].lstrip("$"): (d["args"][0], [(e["directive"], *e["args"]) for e in d["block"]])
        for _, d in directives
        if d["directive"] == "map"
    }
    logs = [(path, d["args"]) for path, d in directives if d["directive"] == "access_log"]
    # The server logs with its own format: otherwise the including http block's
    # access log applies, "combined" by default.
    assert any(path[-1] == "server" for path, _ in logs), "no access_log in the server block"
    for path, args in logs:
        if args == ["off"]:
            continue
        assert len(args) >= 2 and args[1] in formats, (
            f"{path}: access_log {args} uses {args[1:2] or 'combined'}"
        )
        line = Request(maps).render(formats[args[1]])
        assert SECRET not in line, line
        assert '"GET /api/events HTTP/1.1" 200' in line, line  # the path is still logged
        assert "https://crm.example/calls" in line, line
