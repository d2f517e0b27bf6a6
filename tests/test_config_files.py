"""Settings that cannot mislead: gateways files read as written, every refusal one line naming
the file, line and column, today's reference settings, and the shipped example files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import ConfigError, load_config
from proxy.simulator import DEFAULT_GW_PWD, DEFAULT_PASSWORD, Simulator

ROOT = Path(__file__).parent.parent
ENTRY = "gateways:\n  - id: home\n    host: 10.0.0.2\n"


def _refusal(tmp_path: Path, text: str | bytes, name: str = "gw.yaml") -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config({}, file=str(path))
    message = str(caught.value)
    assert "\n" not in message
    return message.replace(str(path), name)


@pytest.mark.parametrize(("text", "expected"), [
    (ENTRY + "    gw_pwd: 01234567\n",
     "config file gw.yaml, line 4, column 13: 'gw_pwd' is read by YAML as a number, not text: "
     'quote it (gw_pwd: "…")'),
    (ENTRY + "    password: on\n",
     "config file gw.yaml, line 4, column 15: 'password' is read by YAML as a boolean (yes/no), "
     'not text: quote it (password: "…")'),
    (ENTRY + "    password: 2024-05-01\n",
     "config file gw.yaml, line 4, column 15: 'password' is read by YAML as a date, not text: "
     'quote it (password: "…")'),
    (ENTRY + "    gw_pwd: 3.14\n",
     "config file gw.yaml, line 4, column 13: 'gw_pwd' is read by YAML as a number"),
    ("server:\n  control_secret: 4711\n" + ENTRY,
     "config file gw.yaml, line 2, column 19: 'control_secret' is read by YAML as a number"),
    (ENTRY + "    gw_pwd: \"A\"\n    host: 10.0.0.3\n",
     "config file gw.yaml, line 5, column 5: key 'host' is given twice in one entry "
     "(first on line 3); keep one"),
    ("server:\n  port: 1\n  port: 2\n" + ENTRY,
     "config file gw.yaml, line 3, column 3: key 'port' is given twice in one entry"),
    (ENTRY + "   bad: [\n",
     "config file gw.yaml, line 4, column 4: not valid YAML: expected <block end>"),
    ("gateways:\n  - id: home\n    name: \"unterminated\n",
     "config file gw.yaml, line 4, column 1: not valid YAML: found unexpected end of stream"),
])
def test_yaml_refusals_name_the_line_column_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    assert _refusal(tmp_path, text).startswith(expected)


def test_a_secret_is_never_echoed_in_a_refusal(tmp_path: Path) -> None:
    message = _refusal(tmp_path, ENTRY + "    gw_pwd: 98765432\n")
    assert "98765432" not in message and "quote it" in message


def test_not_utf8_is_one_line_with_line_and_column(tmp_path: Path) -> None:
    message = _refusal(tmp_path, ENTRY.encode() + b"    name: caf\xe9\n")
    assert message == ("config file gw.yaml, line 4, column 14: not UTF-8 text (byte 0xe9); "
                       "save the file as UTF-8")


@pytest.mark.parametrize(("text", "expected"), [
    ('{"gateways": [{"id": "a", "host": "h", "gw_pwd": 1234}]}',
     "config file gw.json, line 1, column 50: 'gw_pwd' is a number, not text: quote it "
     '("gw_pwd": "…")'),
    ('{"gateways": [{"id": "a",\n "host": "h", "host": "i"}]}',
     "config file gw.json, line 2, column 23: key 'host' is given twice in one entry "
     "(first on line 2); keep one"),
    ('{"gateways": [{"id": "a", "host": "h",}]}',
     "config file gw.json, line 1, column 39: not valid JSON: Expecting property name"),
])
def test_json_file_refusals(tmp_path: Path, text: str, expected: str) -> None:
    assert _refusal(tmp_path, text, "gw.json").startswith(expected)


@pytest.mark.parametrize(("listed", "expected"), [
    ('[{"id": "a", "host": "h", "password": true}]',
     "PW_GATEWAYS, line 1, column 39: 'password' is a boolean, not text: quote it"),
    ('[{"id": "a", "id": "b", "host": "h"}]',
     "PW_GATEWAYS, line 1, column 20: key 'id' is given twice in one entry"),
    ('[{"id": "a" "host": "h"}]', "PW_GATEWAYS, line 1, column 13: not valid JSON: Expecting ','"),
])
def test_pw_gateways_refusals(listed: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"PW_GATEWAYS": listed})
    assert str(caught.value).startswith(expected)


def test_plain_values_are_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("gateways:\n  - id: 01\n    name: 2024-05-01\n    host: 10.0.0.2\n"
                    "    cloud_mode: on\n    gw_pwd: \"01234567\"\n    password: ''\n"
                    "  - id: 7\n    host: 10.0.0.3\n    timeout: 9\n")
    first, second = load_config({}, file=str(path)).fleet()
    assert (first.id, first.name, first.cloud_mode) == ("01", "2024-05-01", True)
    assert first.gw_pwd.reveal() == "01234567" and not first.password  # not 342391, not "yes"
    assert (second.id, second.timeout) == ("7", 9)
    listed = load_config({"PW_GATEWAYS": '[{"id": 3, "host": "h", "cloud_mode": true}]'}).fleet()
    assert (listed[0].id, listed[0].cloud_mode) == ("3", True)


def test_every_refusal_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "gw.yaml"
    bad.write_text(ENTRY + "    gw_pwd: 01234567\n")
    run = subprocess.run([sys.executable, "-m", "proxy", "--config", str(bad)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        f"configuration error: config file {bad}, line 4, column 13: 'gw_pwd' is read by YAML as "
        'a number, not text: quote it (gw_pwd: "…")']


# ---- today's reference settings --------------------------------------------------------------


def test_tedapi_auth_mode_and_probe_interval() -> None:
    config = load_config({"PW_HOST": "h", "PW_TEDAPI_AUTH_MODE": "Bearer",
                          "PW_TEDAPI_API_VERSION": "V2026_06", "PW_TEDAPI_PROBE_INTERVAL": "12"})
    (gateway,) = config.fleet()
    assert (gateway.tedapi_auth_mode, gateway.probe_interval, config.warnings) == ("bearer", 12, ())
    view = config.reference_view()
    assert (view["PW_TEDAPI_AUTH_MODE"], view["PW_TEDAPI_PROBE_INTERVAL"]) == ("bearer", 12)
    odd = load_config({"PW_HOST": "h", "PW_TEDAPI_AUTH_MODE": "token", "PW_TEDAPI_PROBE_INTERVAL": "2"})
    assert (odd.gateway().tedapi_auth_mode, odd.gateway().probe_interval) == ("basic", 5)
    assert odd.warnings == ("PW_TEDAPI_AUTH_MODE is 'token', not basic or bearer: using basic",
                            "PW_TEDAPI_PROBE_INTERVAL is 2: using the minimum, 5 seconds")
    legacy = load_config({"PW_HOST": "h", "PW_TEDAPI_AUTH_MODE": "bearer"})
    assert legacy.warnings == ("TEDAPI auth mode bearer needs PW_TEDAPI_API_VERSION=V2026_06 "
                               "(got V2024_06): the gateway may refuse the queries",)
    with pytest.raises(ConfigError, match="PW_TEDAPI_PROBE_INTERVAL must be an integer"):
        load_config({"PW_TEDAPI_PROBE_INTERVAL": "soon"})


def test_per_gateway_keys_and_the_server_block_winning_is_said(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("server:\n  bind: 127.0.0.1\n  tedapi_probe_interval: 40\n"
                    "gateways:\n  - id: barn\n    host: h\n    tedapi_auth_mode: bearer\n"
                    "    tedapi_api_version: V2026_06\n  - id: home\n    host: i\n"
                    "    tedapi_auth_mode: kerberos\n    tedapi_probe_interval: 8\n")
    config = load_config({"PW_BIND_ADDRESS": "0.0.0.0"}, file=str(path))
    barn, home = config.fleet()
    assert (barn.tedapi_auth_mode, barn.probe_interval) == ("bearer", 40)
    assert (home.tedapi_auth_mode, home.probe_interval) == ("basic", 8)
    assert config.bind_address == "127.0.0.1"
    assert config.warnings == (
        "PW_BIND_ADDRESS is set, but the config file's server key 'bind' wins",
        f"config file {path}: gateway 'home' key 'tedapi_auth_mode' is 'kerberos', not basic or "
        "bearer: using basic")


def test_warnings_are_logged_at_start(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "proxy", "--check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60,
                         env={"PW_HOST": "127.0.0.1:1", "PW_TEDAPI_AUTH_MODE": "oauth", "PW_TIMEOUT": "1",
                              "PW_CACHE_FILE": str(tmp_path / ".powerwall"), "PATH": "/usr/bin:/bin"})
    assert "configuration: PW_TEDAPI_AUTH_MODE is 'oauth', not basic or bearer: using basic" in run.stderr


# ---- the files we ship -----------------------------------------------------------------------


def test_example_file_sets_no_bind_and_quotes_its_passwords() -> None:
    text = (ROOT / "gateways.example.yaml").read_text()
    assert not re.search(r"^\s*bind:", text, re.MULTILINE)
    assert re.search(r"^\s*gw_pwd: \"", text, re.MULTILINE)
    config = load_config({"PW_BIND_ADDRESS": "127.0.0.1"}, file=str(ROOT / "gateways.example.yaml"))
    assert config.bind_address == "127.0.0.1" and config.warnings == ()
    assert "bearer" in {g.tedapi_auth_mode for g in config.fleet()}
    readme = (ROOT / "README.md").read_text()
    assert "server:` block win" in readme  # which of file and environment wins


# The simulators gateways.sim.yaml's comment starts, by port.
SIM_PROFILES = {8443: "default", 8444: "pw2-legacy", 8445: "solar-only"}


def test_the_sim_file_runs_three_simulated_gateways(tmp_path: Path) -> None:
    text = (ROOT / "gateways.sim.yaml").read_text()
    for port, profile in SIM_PROFILES.items():
        extra = "" if profile == "default" else f" --profile {profile}"
        assert f"#   python3 -m proxy.simulator --port {port}{extra}\n" in text
    sims = {port: Simulator(port=0, profile=profile).start() for port, profile in SIM_PROFILES.items()}
    try:
        # As shipped, but with the ports these simulators got (the shipped ones may be taken here).
        for port, sim in sims.items():
            text = text.replace(f"127.0.0.1:{port}", sim.host)
        path = tmp_path / "gateways.sim.yaml"
        path.write_text(text)
        run = subprocess.run([sys.executable, "-m", "proxy", "--config", str(path), "--check"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env={"PATH": "/usr/bin:/bin", "PW_AUTH_PATH": str(tmp_path)})
    finally:
        for sim in sims.values():
            sim.stop()
    lines = run.stdout.strip().splitlines()
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert [line.split(" ")[1] for line in lines] == ["home", "cabin", "barn-solar"]
    assert all(": ok: connected, mode Local" in line for line in lines), lines


def test_the_simulators_passwords_are_documented() -> None:
    run = subprocess.run([sys.executable, "-m", "proxy.simulator", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert f"gateway password   {DEFAULT_GW_PWD!r}" in run.stdout
    assert f"customer password  {DEFAULT_PASSWORD!r}" in run.stdout
    assert "solar-only" in run.stdout and "PW_TEDAPI_AUTH_MODE=bearer" in run.stdout
    help_md = (ROOT / "HELP.md").read_text()
    assert DEFAULT_GW_PWD in help_md and f"`{DEFAULT_PASSWORD}`" in help_md


def test_json_example_of_pw_gateways_in_help_parses() -> None:
    help_md = (ROOT / "HELP.md").read_text()
    listed = re.search(r"`PW_GATEWAYS` \| — \| a JSON list of gateways, e\.g\. `([^`]+)`", help_md)
    assert listed is not None
    assert json.loads(listed.group(1))[0]["id"] == "home"
