"""Pure builders for the derived payloads: /aggregates, /csv, /json, /freq, /pod and friends.

Every function here is a pure function of gateway data (no I/O, no pypowerwall), so the
route handlers can fetch, cache and degrade as they like and still emit the reference's
exact bodies: same keys, same key order, same number formats, same arithmetic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

__all__ = [
    "CSV_HEADER",
    "CSV_V2_HEADER",
    "JsonDict",
    "alerts_pw",
    "compact_json",
    "csv_body",
    "csv_v2_body",
    "fans_pw",
    "freq_body",
    "json_summary",
    "number",
    "pod_body",
    "power_values",
    "pretty_json",
    "process_aggregates",
    "real",
    "strict_json",
    "temps_pw",
    "version_body",
    "version_unknown",
]

JsonDict = dict[str, Any]

CSV_HEADER = "Grid,Home,Solar,Battery,BatteryLevel"
CSV_V2_HEADER = CSV_HEADER + ",GridStatus,Reserve"

# Output name → aggregates meter section, in the reference's column order.
_POWER_SECTIONS = (("grid", "site"), ("home", "load"), ("solar", "solar"), ("battery", "battery"))

_POD_FLAGS = (
    "POD_ActiveHeating",
    "POD_ChargeComplete",
    "POD_ChargeRequest",
    "POD_DischargeComplete",
    "POD_PermanentlyFaulted",
    "POD_PersistentlyFaulted",
    "POD_enable_line",
)
_POD_RAW = (
    "POD_available_charge_power",
    "POD_available_dischg_power",
    "POD_nom_energy_remaining",
    "POD_nom_energy_to_be_charged",
    "POD_nom_full_pack_energy",
)
_BLOCK_OUTPUTS = ("p_out", "q_out", "v_out", "f_out", "i_out")
_BLOCK_STATE = ("PackagePartNumber", "PackageSerialNumber", "pinv_state", "pinv_grid_state")
_BLOCK_ENERGY = ("energy_charged", "energy_discharged")
_BLOCK_INT_FLAGS = (
    "off_grid",
    "vf_mode",
    "wobble_detected",
    "charge_power_clamped",
    "backup_ready",
)
_BLOCK_TAIL = ("OpSeqState", "version")


# --- small helpers -------------------------------------------------------------------------


def number(value: object) -> int | float | None:
    """The value if it is a JSON number (finite: I-JSON has no NaN or infinity), else None.

    The one test of "is this a number" for every output: payloads, frames, points, OpenC2.
    """
    # bool is an int subclass, but a true/false reading is not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def real(value: object) -> float | None:
    """`number` as a float (aggregate arithmetic and metrics want floats, whatever the gateway sent)."""
    found = number(value)
    return None if found is None else float(found)


def _as_dict(value: object) -> JsonDict:
    """Return value if it is a dict, else an empty dict (null sections read as empty)."""
    return value if isinstance(value, dict) else {}


def _instant_power(agg: JsonDict | None, section: str) -> float | None:
    """Read <section>.instant_power from aggregates, tolerating null/missing sections."""
    return number(_as_dict(_as_dict(agg).get(section)).get("instant_power"))


def _shift_neg_solar(solar: float | None, home: float | None) -> tuple[float | None, float | None]:
    """Move negative solar into home (home rises) and clamp solar to 0; home None stays None."""
    if solar is None or solar >= 0:
        return solar, home
    # Subtracting the negative reading is the reference's arithmetic, kept bit for bit.
    return 0, None if home is None else home - solar


def _apply_threshold(grid: float | None, threshold: float) -> float | None:
    """Snap grid to 0 when |grid| <= threshold (only for a positive threshold)."""
    if grid is not None and threshold > 0 and abs(grid) <= threshold:
        return 0
    return grid


def _or_zero(value: Any) -> Any:
    """The reference's `x or 0`, except that null stays null (product rule)."""
    # Keeping `or 0` for non-null values reproduces its bytes: 0.0 is emitted as 0.
    return None if value is None else (value or 0)


def _int_or_zero(value: Any) -> int | None:
    """The reference's `int(x or 0)`; a value int() rejects becomes None instead of a crash."""
    try:
        return int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return None


def _blocks(system_status: JsonDict | None) -> Iterator[tuple[int, JsonDict]]:
    """Yield (n, block) for system_status.battery_blocks, numbered from 1."""
    blocks = _as_dict(system_status).get("battery_blocks")
    if not isinstance(blocks, list):
        return
    # A malformed block still takes its number so PWn stays aligned with the hardware.
    for n, block in enumerate(blocks, 1):
        yield n, _as_dict(block)


# --- /aggregates ---------------------------------------------------------------------------


def _threshold_site(agg: JsonDict, threshold: float) -> None:
    """Apply the site zero threshold to the (already copied) site section in place."""
    site = agg.get("site")
    if isinstance(site, dict) and number(site.get("instant_power")) is not None:
        site["instant_power"] = _apply_threshold(site["instant_power"], threshold)


def _shift_aggregates_solar(agg: JsonDict) -> None:
    """Apply the neg-solar shift to the (already copied) solar/load sections in place."""
    solar, load = agg.get("solar"), agg.get("load")
    if not isinstance(solar, dict):
        return
    power = number(solar.get("instant_power"))
    if power is None or power >= 0:
        return
    if isinstance(load, dict) and number(load.get("instant_power")) is not None:
        load["instant_power"] -= power
    solar["instant_power"] = 0


def process_aggregates(agg: JsonDict, *, neg_solar: bool, zero_threshold: float) -> JsonDict:
    """Return a processed copy of /api/meters/aggregates (site threshold, then neg-solar)."""
    # Only instant_power inside a section is ever written, so one level of copying is enough.
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in agg.items()}
    _threshold_site(out, zero_threshold)
    if not neg_solar:
        _shift_aggregates_solar(out)
    return out


def power_values(
    agg: JsonDict | None, *, neg_solar: bool, zero_threshold: float
) -> dict[str, float | None]:
    """Return grid/home/solar/battery after neg-solar then the threshold; None if missing."""
    values = {name: _instant_power(agg, section) for name, section in _POWER_SECTIONS}
    if not neg_solar:
        values["solar"], values["home"] = _shift_neg_solar(values["solar"], values["home"])
    values["grid"] = _apply_threshold(values["grid"], zero_threshold)
    return values


# --- /csv and /csv/v2 ----------------------------------------------------------------------


def _zero_if_none(value: float | None) -> float:
    """CSV never emits null: a missing reading is written as 0."""
    return 0 if value is None else value


def _csv_powers(agg: JsonDict | None, neg_solar: bool, zero_threshold: float) -> list[float]:
    """Grid, Home, Solar, Battery in the reference's order: None→0, neg-solar, threshold."""
    grid, home, solar, battery = (_zero_if_none(_instant_power(agg, s)) for _, s in _POWER_SECTIONS)
    values = [grid, home, solar, battery]
    if not neg_solar:
        # Inputs are non-null here, so the shift cannot produce None; the wrap is for the types.
        shifted_solar, shifted_home = _shift_neg_solar(solar, home)
        values[1], values[2] = _zero_if_none(shifted_home), _zero_if_none(shifted_solar)
    values[0] = _zero_if_none(_apply_threshold(grid, zero_threshold))
    return values


def _csv_text(header: str, fields: list[str], headers: bool) -> str:
    """Join one CSV line, preceded by the header line when asked."""
    line = ",".join(fields) + "\n"
    return header + "\n" + line if headers else line


def _fixed2(value: float) -> str:
    """Format like the reference's '%0.2f' (same float formatting, so same rounding)."""
    return format(value, "0.2f")


def csv_body(
    agg: JsonDict | None,
    level: float | None,
    *,
    neg_solar: bool,
    zero_threshold: float,
    headers: bool,
) -> str:
    """Return the /csv body: Grid,Home,Solar,Battery,BatteryLevel as %0.2f."""
    values = [*_csv_powers(agg, neg_solar, zero_threshold), _zero_if_none(number(level))]
    return _csv_text(CSV_HEADER, [_fixed2(v) for v in values], headers)


def csv_v2_body(
    agg: JsonDict | None,
    level: float | None,
    grid_up: bool | None,
    reserve: float | None,
    *,
    neg_solar: bool,
    zero_threshold: float,
    headers: bool,
) -> str:
    """Return the /csv/v2 body: the /csv columns plus GridStatus and Reserve as %d."""
    values = [*_csv_powers(agg, neg_solar, zero_threshold), _zero_if_none(number(level))]
    fields = [_fixed2(v) for v in values]
    # '%d' truncates toward zero, exactly like int().
    fields += [str(1 if grid_up else 0), str(int(_zero_if_none(number(reserve))))]
    return _csv_text(CSV_V2_HEADER, fields, headers)


# --- /json ---------------------------------------------------------------------------------


def _grid_up(grid_status: str | None) -> int | None:
    """1 for "UP", 0 for any other status, None when unknown."""
    return None if grid_status is None else int(grid_status == "UP")


def json_summary(
    agg: JsonDict | None,
    level: float | None,
    grid_status: str | None,
    reserve: float | None,
    time_remaining: float | None,
    system_status: JsonDict | None,
    strings: JsonDict | None,
    *,
    neg_solar: bool,
    zero_threshold: float,
) -> JsonDict:
    """Return the /json summary in the reference's key order; missing values are None."""
    status = _as_dict(system_status)
    out: JsonDict = dict(power_values(agg, neg_solar=neg_solar, zero_threshold=zero_threshold))
    out["soe"] = _or_zero(level)
    out["grid_status"] = _grid_up(grid_status)
    out["reserve"] = _or_zero(reserve)
    out["time_remaining_hours"] = _or_zero(time_remaining)
    out["full_pack_energy"] = _or_zero(status.get("nominal_full_pack_energy"))
    out["energy_remaining"] = _or_zero(status.get("nominal_energy_remaining"))
    out["strings"] = strings
    return out


# --- /freq ---------------------------------------------------------------------------------


def _freq_block(n: int, block: JsonDict) -> JsonDict:
    """Per-battery-block /freq keys; name and split voltages wait for vitals."""
    out: JsonDict = {
        f"PW{n}_name": None,
        f"PW{n}_PINV_Fout": block.get("f_out"),
        f"PW{n}_PINV_VSplit1": None,
        f"PW{n}_PINV_VSplit2": None,
    }
    for key in ("PackagePartNumber", "PackageSerialNumber", *_BLOCK_OUTPUTS):
        out[f"PW{n}_{key}"] = block.get(key)
    return out


def _freq_inverter(n: int, name: str, signals: JsonDict) -> JsonDict:
    """TEPINV vitals keys; they overwrite the block placeholders of the same PWn."""
    out: JsonDict = {f"PW{n}_name": name}
    for key in ("PINV_Fout", "PINV_VSplit1", "PINV_VSplit2"):
        out[f"PW{n}_{key}"] = signals.get(key)
    return out


def _island_meter_signals(signals: JsonDict) -> JsonDict:
    """ISLAND*/METER* signals of a TESYNC/TEMSA device, copied under their own names."""
    return {k: v for k, v in signals.items() if k.startswith(("ISLAND", "METER"))}


def _freq_vitals(vitals: JsonDict | None) -> JsonDict:
    """All /freq keys from vitals, in vitals order (one pass, as the reference)."""
    out: JsonDict = {}
    inverters = 0
    for name, device in _as_dict(vitals).items():
        signals = _as_dict(device)
        if name.startswith("TEPINV"):
            inverters += 1
            out.update(_freq_inverter(inverters, name, signals))
        elif name.startswith(("TESYNC", "TEMSA")):
            out.update(_island_meter_signals(signals))
    return out


def freq_body(
    system_status: JsonDict | None, vitals: JsonDict | None, grid_status_numeric: int | None
) -> JsonDict:
    """Return the /freq body: per-block outputs, TEPINV and island/meter vitals, grid_status."""
    out: JsonDict = {}
    for n, block in _blocks(system_status):
        out.update(_freq_block(n, block))
    out.update(_freq_vitals(vitals))
    out["grid_status"] = grid_status_numeric
    return out


# --- /pod ----------------------------------------------------------------------------------


def _pod_block(n: int, block: JsonDict) -> JsonDict:
    """Per-battery-block /pod keys; the POD_* vitals fields start as null placeholders."""
    out: JsonDict = {f"PW{n}_name": None}
    for key in (*_POD_FLAGS, "POD_available_charge_power", "POD_available_dischg_power"):
        out[f"PW{n}_{key}"] = None
    out[f"PW{n}_POD_nom_energy_remaining"] = block.get("nominal_energy_remaining")
    out[f"PW{n}_POD_nom_energy_to_be_charged"] = None
    out[f"PW{n}_POD_nom_full_pack_energy"] = block.get("nominal_full_pack_energy")
    for key in _BLOCK_STATE + _BLOCK_OUTPUTS + _BLOCK_ENERGY:
        out[f"PW{n}_{key}"] = block.get(key)
    out.update({f"PW{n}_{key}": _int_or_zero(block.get(key)) for key in _BLOCK_INT_FLAGS})
    out.update({f"PW{n}_{key}": block.get(key) for key in _BLOCK_TAIL})
    return out


def _pod_vitals_device(n: int, name: str, signals: JsonDict) -> JsonDict:
    """TEPOD vitals keys: name, the seven flags as ints (null→0), five raw energy/power fields."""
    out: JsonDict = {f"PW{n}_name": name}
    out.update({f"PW{n}_{key}": _int_or_zero(signals.get(key)) for key in _POD_FLAGS})
    out.update({f"PW{n}_{key}": signals.get(key) for key in _POD_RAW})
    return out


def _pod_vitals(vitals: JsonDict | None) -> JsonDict:
    """All /pod keys from TEPOD vitals devices, counted from 1 in vitals order."""
    out: JsonDict = {}
    pods = [(name, dev) for name, dev in _as_dict(vitals).items() if name.startswith("TEPOD")]
    for n, (name, device) in enumerate(pods, 1):
        out.update(_pod_vitals_device(n, name, _as_dict(device)))
    return out


def pod_body(
    system_status: JsonDict | None,
    vitals: JsonDict | None,
    time_remaining: float | None,
    reserve: float | None,
) -> JsonDict:
    """Return the /pod body: per-block fields, TEPOD vitals, then the four top-level keys."""
    out: JsonDict = {}
    for n, block in _blocks(system_status):
        out.update(_pod_block(n, block))
    out.update(_pod_vitals(vitals))
    status = _as_dict(system_status)
    out["nominal_full_pack_energy"] = status.get("nominal_full_pack_energy")
    out["nominal_energy_remaining"] = status.get("nominal_energy_remaining")
    out["time_remaining_hours"] = time_remaining
    out["backup_reserve_percent"] = reserve
    return out


# --- /temps/pw, /alerts/pw, /fans/pw -------------------------------------------------------


def temps_pw(temps: JsonDict | None) -> JsonDict:
    """Return {"PW1_temp": x, ...} numbered in the temps' iteration order."""
    return {f"PW{n}_temp": value for n, value in enumerate((temps or {}).values(), 1)}


def alerts_pw(alerts: list[str] | None) -> JsonDict:
    """Return {"<alert>": 1, ...} for every alert name."""
    return {alert: 1 for alert in alerts or []}


def fans_pw(fans: JsonDict | None) -> JsonDict:
    """Return {"FAN1_actual", "FAN1_target", ...} numbered by sorted device key."""
    out: JsonDict = {}
    devices = fans or {}
    for n, key in enumerate(sorted(devices), 1):
        # Only the PVAC signal names are read, so PW3 TEPINV fans show null (as the reference).
        device = _as_dict(devices[key])
        out[f"FAN{n}_actual"] = device.get("PVAC_Fan_Speed_Actual_RPM")
        out[f"FAN{n}_target"] = device.get("PVAC_Fan_Speed_Target_RPM")
    return out


# --- /version ------------------------------------------------------------------------------


def _parse_version(version: str) -> int | None:
    """pypowerwall.parse_version: dotted numeric parts × 100^position, None if unparseable."""
    head = version.split(" ")[0]
    # Same character filter as the library, so odd strings parse (or fail) identically.
    kept = "".join(c for c in head if c.isdigit() or c in "./\\")
    parts = kept.split(".")
    parts += ["0"] * (3 - len(parts))
    try:
        numbers = [int(part, 10) for part in parts]
    except ValueError:
        return None
    vint = 0
    for x in numbers:  # Horner form of sum(x * 100**position), counted from the last part
        vint = vint * 100 + x
    return vint


def version_body(version: str) -> JsonDict:
    """Return {"version": v, "vint": int} for /version; vint is None if unparseable."""
    return {"version": version, "vint": _parse_version(version)}


def version_unknown() -> JsonDict:
    """Return the reference's /version body for an unknown version (kept for compatibility)."""
    return {"version": "SolarOnly", "vint": 0}


# --- serialisation -------------------------------------------------------------------------


def _unique(pairs: list[tuple[str, Any]]) -> JsonDict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("repeated key")  # I-JSON (RFC 7493 2.3): member names are unique
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(body: bytes) -> Any:
    """A request body as JSON, strictly: UTF-8, no repeated member names (refused rather than
    guessed: {"value": 5, "value": 90}), no NaN or Infinity. ValueError (or UnicodeError,
    RecursionError) otherwise."""
    return json.loads(body.decode("utf-8"), object_pairs_hook=_unique, parse_constant=_no_constant)


def pretty_json(obj: Any) -> str:
    """Serialise like the reference's /vitals, /strings, /temps, /alerts (indent 4, sorted)."""
    return json.dumps(obj, indent=4, sort_keys=True)


def compact_json(obj: Any) -> str:
    """Serialise like the reference's other JSON routes (stdlib default separators)."""
    return json.dumps(obj)
