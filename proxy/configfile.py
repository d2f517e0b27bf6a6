"""Reading a gateways file (YAML or JSON) or PW_GATEWAYS so that nothing in it can mislead.

YAML guesses types: `gw_pwd: 01234567` is the number 342391, `password: on` the boolean
true, `password: 2024-05-01` a date. The proxy reads every plain YAML value as the text
written (its own parsers then read numbers and yes/no), and refuses a password or token
that YAML would have turned into anything but text, asking for quotes. A key given twice in
one mapping is refused (YAML and JSON would keep the last one silently). Every refusal is
one line naming the source, line and column: a `ConfigError`, never a traceback.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["SECRET_KEYS", "ConfigError", "Corrected", "accept", "parse_json", "read_document",
           "read_gateways_file"]

MAX_FILE = 1_000_000  # bytes; a gateways file is a few hundred
# Keys whose values are passwords or tokens, wherever they appear in a document.
SECRET_KEYS = frozenset({"password", "gw_pwd", "control_secret", "openc2_token", "mqtt_password"})
_YAML_KINDS = {"int": "a number", "float": "a number", "bool": "a boolean (yes/no)",
               "timestamp": "a date", "null": "nothing (null)"}


class ConfigError(ValueError):
    """A setting the proxy cannot use; the message names it (and where it was written)."""


@dataclass(frozen=True, slots=True)
class Corrected:
    """A value accepted in place of the one given, and the warning that says so."""

    value: Any
    warning: str


def accept(value: Any, notes: list[str]) -> Any:
    """A parsed value; a Corrected one leaves its warning in `notes`."""
    if isinstance(value, Corrected):
        notes.append(value.warning)
        return value.value
    return value


class _Refusal(Exception):
    """A problem at a character offset (JSON) or a line and column (YAML), not yet placed."""

    def __init__(self, message: str, offset: int = -1, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message, self.offset, self.line, self.column = message, offset, line, column


def _at(where: str, line: int, column: int, message: str) -> ConfigError:
    return ConfigError(f"{where}, line {line}, column {column}: {message}")


def _place(text: str, offset: int) -> tuple[int, int]:
    """(line, column), both from 1, of a character offset in `text`."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _quote_it(key: str, kind: str, json_style: bool) -> str:
    example = f'"{key}": "…"' if json_style else f'{key}: "…"'
    return f"'{key}' is {kind}, not text: quote it ({example})"


def _twice(key: str, first_line: int) -> str:
    return f"key '{key}' is given twice in one entry (first on line {first_line}); keep one"


# ---- JSON ------------------------------------------------------------------------------


class _StrictJSON(json.JSONDecoder):
    """json.loads that refuses repeated keys and non-text secrets, knowing where they are."""

    def __init__(self) -> None:
        super().__init__()
        self.parse_object = self._object
        # The C scanner parses objects itself; the Python one calls parse_object.
        self.scan_once = json.scanner.py_make_scanner(self)  # type: ignore[attr-defined]

    def _object(self, s_and_end: tuple[str, int], strict: bool, scan_once: Callable[..., Any],
                object_hook: Any, object_pairs_hook: Any, memo: Any = None) -> tuple[Any, int]:
        starts: list[int] = []

        def scan(string: str, idx: int) -> Any:
            starts.append(idx)  # where each value of this object begins
            return scan_once(string, idx)

        pairs, end = json.decoder.JSONObject(  # type: ignore[attr-defined]
            s_and_end, strict, scan, None, list, memo)
        seen: dict[str, int] = {}
        text = s_and_end[0]
        for (key, value), start in zip(pairs, starts, strict=False):
            if key in seen:
                raise _Refusal(_twice(key, _place(text, seen[key])[0]), offset=start)
            seen[key] = start
            if key in SECRET_KEYS and value is not None and not isinstance(value, str):
                kind = "a boolean" if isinstance(value, bool) else (
                    "a number" if isinstance(value, (int, float)) else
                    "an object" if isinstance(value, dict) else "a list")
                raise _Refusal(_quote_it(key, kind, json_style=True), offset=start)
        return dict(pairs), end


def parse_json(text: str, where: str) -> Any:
    """A JSON document; ConfigError "WHERE, line L, column C: ..." if it is not one we take."""
    try:
        return _StrictJSON().decode(text)
    except _Refusal as exc:
        raise _at(where, *_place(text, exc.offset), exc.message) from None
    except json.JSONDecodeError as exc:
        raise _at(where, exc.lineno, exc.colno, f"not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None


# ---- YAML ------------------------------------------------------------------------------


def _yaml_loader() -> type:
    """A SafeLoader reading plain scalars as their text, refusing repeats and non-text secrets."""
    import yaml  # only needed for a YAML file

    class TextLoader(yaml.SafeLoader):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
                if key and key != "<<":
                    mark = key_node.start_mark
                    if key in seen:
                        raise _Refusal(_twice(key, seen[key]), line=mark.line + 1,
                                       column=mark.column + 1)
                    seen[key] = mark.line + 1
                    if key in SECRET_KEYS:
                        _check_secret(key, value_node)
            return super().construct_mapping(node, deep=deep)

    def text(loader: Any, node: Any) -> str:
        return "" if node.tag.endswith(":null") else str(node.value)

    for tag in _YAML_KINDS:
        TextLoader.add_constructor(f"tag:yaml.org,2002:{tag}", text)
    return TextLoader


def _check_secret(key: str, node: Any) -> None:
    import yaml

    if not isinstance(node, yaml.ScalarNode) or node.style is not None or node.value == "":
        return  # quoted text, or empty (unset), or a list/mapping (refused later, by key)
    kind = _YAML_KINDS.get(node.tag.rpartition(":")[2])
    if kind is not None:
        mark = node.start_mark
        raise _Refusal(_quote_it(key, f"read by YAML as {kind}", json_style=False),
                       line=mark.line + 1, column=mark.column + 1)


def parse_yaml(text: str, where: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except _Refusal as exc:
        raise _at(where, exc.line, exc.column, exc.message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        if mark is None:
            raise ConfigError(f"{where}: not valid YAML: {problem}") from None
        raise _at(where, mark.line + 1, mark.column + 1, f"not valid YAML: {problem}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{where}: not valid YAML: {type(exc).__name__}") from None


# ---- files -----------------------------------------------------------------------------


def read_document(path: str) -> Any:
    """The parsed YAML or JSON document in `path` (JSON when it ends in .json)."""
    where = f"config file {path}"
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE:
        raise ConfigError(f"{where}: larger than {MAX_FILE} bytes; is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[:exc.start].decode("utf-8")  # all good up to the first bad byte
        raise _at(where, *_place(before, len(before)), f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                                                       "save the file as UTF-8") from None
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    if path.endswith(".json"):
        return parse_json(text, where)
    return parse_yaml(text, where)


def read_gateways_file(path: str) -> dict[str, Any]:
    """A gateways file: a mapping with a `gateways:` list and perhaps a `server:` block."""
    document = read_document(path)
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path}: must be a mapping with a 'gateways:' list")
    extra = set(document) - {"server", "gateways"}
    if extra:
        raise ConfigError(f"config file {path}: unknown top-level key {sorted(extra)[0]!r} "
                          "(known: server, gateways)")
    return document
