"""Tests for proxy.payloads: the reference's derived payloads, byte for byte where it matters."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from proxy.payloads import (
    alerts_pw,
    compact_json,
    csv_body,
    csv_v2_body,
    fans_pw,
    freq_body,
    json_summary,
    pod_body,
    power_values,
    pretty_json,
    process_aggregates,
    temps_pw,
    version_body,
    version_unknown,
)

JsonDict = dict[str, Any]


def meter(power: Any) -> JsonDict:
    """A gateway meter block with a few of the real neighbouring fields."""
    return {
        "last_communication_time": "2024-01-01T00:00:00Z",
        "instant_power": power,
        "instant_reactive_power": 10,
        "frequency": 60.0,
        "energy_exported": 123.0,
    }


def aggregates(site: Any, load: Any, solar: Any, battery: Any) -> JsonDict:
    """Aggregates in the gateway's section order: site, battery, load, solar."""
    return {
        "site": meter(site),
        "battery": meter(battery),
        "load": meter(load),
        "solar": meter(solar),
    }


def power(agg: JsonDict, section: str) -> Any:
    """instant_power of one section."""
    return agg[section]["instant_power"]


# --- /aggregates -----------------------------------------------------------------------------


def test_aggregates_echoes_solar_and_keeps_everything_else() -> None:
    agg = aggregates(100, 1500, 1000, -200)
    out = process_aggregates(agg, neg_solar=True, zero_threshold=0)
    assert power(out, "solar") == 1000
    assert out == agg


@pytest.mark.parametrize(
    ("solar", "load", "want_solar", "want_load"),
    [(-500, 2000, 0, 2500), (-300, 1500, 0, 1800), (-100, 800, 0, 900), (-750, 2000, 0, 2750)],
)
def test_aggregates_neg_solar_off_moves_negative_solar_into_load(
    solar: int, load: int, want_solar: int, want_load: int
) -> None:
    out = process_aggregates(aggregates(10, load, solar, 5), neg_solar=False, zero_threshold=0)
    assert (power(out, "solar"), power(out, "load")) == (want_solar, want_load)
    assert (power(out, "site"), power(out, "battery")) == (10, 5)


def test_aggregates_neg_solar_on_keeps_negative_solar() -> None:
    out = process_aggregates(aggregates(10, 1000, -200, 5), neg_solar=True, zero_threshold=0)
    assert (power(out, "solar"), power(out, "load")) == (-200, 1000)


def test_aggregates_positive_solar_is_untouched_with_neg_solar_off() -> None:
    out = process_aggregates(aggregates(10, 1000, 300, 5), neg_solar=False, zero_threshold=0)
    assert (power(out, "solar"), power(out, "load")) == (300, 1000)


def test_aggregates_null_instant_power_passes_through() -> None:
    agg = aggregates(None, 1500, None, None)
    out = process_aggregates(agg, neg_solar=False, zero_threshold=50)
    assert [power(out, s) for s in ("site", "battery", "load", "solar")] == [None, None, 1500, None]
    assert '"instant_power": null' in compact_json(out)


def test_aggregates_neg_solar_with_null_load_clamps_solar_and_keeps_load_null() -> None:
    out = process_aggregates(aggregates(10, None, -300, 5), neg_solar=False, zero_threshold=0)
    assert (power(out, "solar"), power(out, "load")) == (0, None)


def test_aggregates_null_or_missing_sections_are_left_as_is() -> None:
    agg: JsonDict = {"site": None, "solar": meter(-100)}
    out = process_aggregates(agg, neg_solar=False, zero_threshold=100)
    assert out == {"site": None, "solar": meter(0)}
    assert list(out) == ["site", "solar"]


def test_aggregates_result_is_a_new_dict_and_input_is_not_mutated() -> None:
    agg = aggregates(5, 2000, -500, 100)
    before = copy.deepcopy(agg)
    out = process_aggregates(agg, neg_solar=False, zero_threshold=10)
    assert agg == before
    assert out is not agg and out["solar"] is not agg["solar"] and out["load"] is not agg["load"]
    assert (power(out, "site"), power(out, "load"), power(out, "solar")) == (0, 2500, 0)


def test_aggregates_key_order_is_preserved() -> None:
    agg = aggregates(5, 2000, -500, 100)
    out = process_aggregates(agg, neg_solar=False, zero_threshold=10)
    assert list(out) == ["site", "battery", "load", "solar"]
    assert all(list(out[s]) == list(agg[s]) for s in agg)


@pytest.mark.parametrize(
    ("site", "threshold", "want"),
    [
        (8, 10, 0),
        (10, 10, 0),
        (-10, 10, 0),
        (-9.5, 10, 0),
        (10.5, 10, 10.5),
        (-11, 10, -11),
        (0.5, 0, 0.5),
        (3, -5, 3),
    ],
)
def test_aggregates_site_zero_threshold(site: float, threshold: float, want: float) -> None:
    out = process_aggregates(aggregates(site, 500, 0, 0), neg_solar=True, zero_threshold=threshold)
    assert power(out, "site") == want
    assert power(out, "load") == 500  # the threshold only ever touches site


@pytest.mark.parametrize("site", [3.2, 0.0, -0.0])
def test_aggregates_threshold_writes_an_integer_zero(site: float) -> None:
    out = process_aggregates({"site": {"instant_power": site}}, neg_solar=True, zero_threshold=5)
    assert compact_json(out) == '{"site": {"instant_power": 0}}'


def test_zero_solar_is_not_rewritten_by_the_neg_solar_shift() -> None:
    # Only solar < 0 is shifted, so a 0.0 reading keeps its float bytes (as the reference).
    agg: JsonDict = {"load": {"instant_power": 5.0}, "solar": {"instant_power": 0.0}}
    out = process_aggregates(agg, neg_solar=False, zero_threshold=0)
    assert compact_json(out) == '{"load": {"instant_power": 5.0}, "solar": {"instant_power": 0.0}}'
    values = power_values(agg, neg_solar=False, zero_threshold=0)
    assert compact_json(values) == '{"grid": null, "home": 5.0, "solar": 0.0, "battery": null}'


# --- power_values ----------------------------------------------------------------------------


def test_power_values_maps_sections_in_order() -> None:
    out = power_values(aggregates(100, 3100, 5000, -2000), neg_solar=True, zero_threshold=0)
    assert list(out.items()) == [("grid", 100), ("home", 3100), ("solar", 5000), ("battery", -2000)]


def test_power_values_missing_is_none() -> None:
    assert power_values(None, neg_solar=False, zero_threshold=10) == dict.fromkeys(
        ("grid", "home", "solar", "battery")
    )
    partial = {"site": None, "load": {}, "solar": {"instant_power": None}}
    assert power_values(partial, neg_solar=False, zero_threshold=0) == dict.fromkeys(
        ("grid", "home", "solar", "battery")
    )


def test_power_values_neg_solar_then_threshold() -> None:
    out = power_values(aggregates(-4, 250, -50, 7), neg_solar=False, zero_threshold=5)
    assert out == {"grid": 0, "home": 300, "solar": 0, "battery": 7}


def test_power_values_neg_solar_keeps_null_home() -> None:
    out = power_values(aggregates(1, None, -50, 7), neg_solar=False, zero_threshold=0)
    assert (out["solar"], out["home"]) == (0, None)


def test_power_values_ignores_non_numeric_readings() -> None:
    out = power_values(aggregates("x", True, -50, 7), neg_solar=False, zero_threshold=0)
    assert out == {"grid": None, "home": None, "solar": 0, "battery": 7}


# --- /csv ------------------------------------------------------------------------------------


def csv(agg: JsonDict | None, level: float | None, neg_solar: bool = True, **kw: Any) -> str:
    """csv_body with the reference's defaults (neg-solar on, no threshold, no headers)."""
    opts: JsonDict = {"zero_threshold": 0, "headers": False} | kw
    return csv_body(agg, level, neg_solar=neg_solar, **opts)


def test_csv_basic_line() -> None:
    assert (
        csv(aggregates(100.5, 250, 200.25, -50.75), 45.5) == "100.50,250.00,200.25,-50.75,45.50\n"
    )


def test_csv_headers() -> None:
    out = csv(aggregates(100, 250, 200, -50), 45.5, headers=True)
    assert out == "Grid,Home,Solar,Battery,BatteryLevel\n100.00,250.00,200.00,-50.00,45.50\n"


def test_csv_rounding() -> None:
    out = csv(aggregates(123.456, 456.789, 234.567, -345.678), 67.89)
    assert out == "123.46,456.79,234.57,-345.68,67.89\n"


@pytest.mark.parametrize("value", [0.005, 0.015, 2.675, -0.004, -0.0, 1e9 + 0.125, 7, -3, 1 / 3])
def test_csv_number_format_is_the_references_printf(value: float) -> None:
    want = "%0.2f" % value  # noqa: UP031 -- the reference's exact format is the oracle
    assert csv(aggregates(value, 0, 0, 0), 0).split(",")[0] == want


def test_csv_neg_solar_on_and_off() -> None:
    agg = aggregates(100, 250, -50, 200)
    assert csv(agg, 50, neg_solar=True) == "100.00,250.00,-50.00,200.00,50.00\n"
    assert csv(agg, 50, neg_solar=False) == "100.00,300.00,0.00,200.00,50.00\n"


def test_csv_aggregates_none_and_level_zero() -> None:
    assert csv(None, 0) == "0.00,0.00,0.00,0.00,0.00\n"
    assert csv(None, None, headers=True) == (
        "Grid,Home,Solar,Battery,BatteryLevel\n0.00,0.00,0.00,0.00,0.00\n"
    )


def test_csv_per_field_nulls_become_zero() -> None:
    agg: JsonDict = {
        "site": {"instant_power": None},
        "load": {"instant_power": 250},
        "solar": {"instant_power": None},
        "battery": {"instant_power": None},
    }
    assert csv(agg, 42) == "0.00,250.00,0.00,0.00,42.00\n"
    assert csv({"site": None, "load": meter(250)}, 42) == "0.00,250.00,0.00,0.00,42.00\n"


def test_csv_all_zeros() -> None:
    assert csv(aggregates(0, 0, 0, 0), 0) == "0.00,0.00,0.00,0.00,0.00\n"


def test_csv_last_good_power_with_level_unavailable() -> None:
    # Degradation case: cached aggregates, level fetch failed.
    assert csv(aggregates(100, 250, 200, -50), None) == "100.00,250.00,200.00,-50.00,0.00\n"


def test_csv_null_load_becomes_zero_before_the_neg_solar_shift() -> None:
    # Reference order None→0 first, so the shift lands on 0 (unlike /json, where home stays null).
    assert csv(aggregates(1, None, -50, 2), 3, neg_solar=False) == "1.00,50.00,0.00,2.00,3.00\n"


def test_csv_site_zero_threshold() -> None:
    assert csv(aggregates(5, 5, 5, 5), 1, zero_threshold=10) == "0.00,5.00,5.00,5.00,1.00\n"
    assert csv(aggregates(-10, 5, 5, 5), 1, zero_threshold=10) == "0.00,5.00,5.00,5.00,1.00\n"
    assert csv(aggregates(10.01, 5, 5, 5), 1, zero_threshold=10) == "10.01,5.00,5.00,5.00,1.00\n"
    assert csv(aggregates(0.4, 5, 5, 5), 1, zero_threshold=0) == "0.40,5.00,5.00,5.00,1.00\n"


def test_csv_input_not_mutated() -> None:
    agg = aggregates(5, 250, -50, 2)
    before = copy.deepcopy(agg)
    csv(agg, 1, neg_solar=False, zero_threshold=10)
    assert agg == before


# --- /csv/v2 ---------------------------------------------------------------------------------


def csv2(grid_up: bool | None, reserve: float | None, **kw: Any) -> str:
    """csv_v2_body for the reference's example aggregates and level."""
    opts: JsonDict = {"neg_solar": True, "zero_threshold": 0, "headers": False} | kw
    return csv_v2_body(aggregates(100, 250, 200, -50), 45.5, grid_up, reserve, **opts)


def test_csv_v2_example_line() -> None:
    assert csv2(True, 20) == "100.00,250.00,200.00,-50.00,45.50,1,20\n"


def test_csv_v2_headers() -> None:
    assert csv2(True, 20, headers=True) == (
        "Grid,Home,Solar,Battery,BatteryLevel,GridStatus,Reserve\n"
        "100.00,250.00,200.00,-50.00,45.50,1,20\n"
    )


@pytest.mark.parametrize(
    ("grid_up", "reserve", "tail"),
    [
        (False, 20.9, ",0,20\n"),
        (None, None, ",0,0\n"),
        (True, 0.0, ",1,0\n"),
        (True, 99.99, ",1,99\n"),
    ],
)
def test_csv_v2_grid_status_and_truncated_reserve(
    grid_up: bool | None, reserve: float | None, tail: str
) -> None:
    assert csv2(grid_up, reserve) == "100.00,250.00,200.00,-50.00,45.50" + tail


def test_csv_v2_shares_csv_arithmetic() -> None:
    out = csv_v2_body(
        aggregates(3, 250, -50, 200),
        None,
        True,
        20,
        neg_solar=False,
        zero_threshold=5,
        headers=False,
    )
    assert out == "0.00,300.00,0.00,200.00,0.00,1,20\n"
    assert csv_v2_body(
        None, None, None, None, neg_solar=False, zero_threshold=0, headers=False
    ) == ("0.00,0.00,0.00,0.00,0.00,0,0\n")


# --- /json -----------------------------------------------------------------------------------

JSON_KEYS = [
    "grid",
    "home",
    "solar",
    "battery",
    "soe",
    "grid_status",
    "reserve",
    "time_remaining_hours",
    "full_pack_energy",
    "energy_remaining",
    "strings",
]
STRINGS: JsonDict = {
    "A": {"Connected": True, "Current": 1.5, "Power": 300, "State": "ON", "Voltage": 200}
}
STATUS: JsonDict = {"nominal_full_pack_energy": 14000, "nominal_energy_remaining": 10570}


def summary(agg: JsonDict | None, **kw: Any) -> JsonDict:
    """json_summary with the reference test's inputs, overridable per keyword."""
    args: JsonDict = {
        "level": 75.5,
        "grid_status": "UP",
        "reserve": 20.0,
        "time_remaining": 15.5,
        "system_status": STATUS,
        "strings": STRINGS,
        "neg_solar": False,
        "zero_threshold": 0,
    } | kw
    return json_summary(agg, **args)


def test_json_reference_case_values_and_key_order() -> None:
    out = summary(aggregates(100, 3100, 5000, -2000))
    assert list(out) == JSON_KEYS
    assert out == {
        "grid": 100,
        "home": 3100,
        "solar": 5000,
        "battery": -2000,
        "soe": 75.5,
        "grid_status": 1,
        "reserve": 20.0,
        "time_remaining_hours": 15.5,
        "full_pack_energy": 14000,
        "energy_remaining": 10570,
        "strings": STRINGS,
    }


def test_json_negative_solar_moves_into_home() -> None:
    out = summary(aggregates(0, 250, -50, 0))
    assert (out["solar"], out["home"]) == (0, 300)


def test_json_neg_solar_on_keeps_negative_solar() -> None:
    out = summary(aggregates(0, 250, -50, 0), neg_solar=True)
    assert (out["solar"], out["home"]) == (-50, 250)


def test_json_site_threshold() -> None:
    assert summary(aggregates(4.5, 250, 50, 0), zero_threshold=5)["grid"] == 0
    assert summary(aggregates(5.5, 250, 50, 0), zero_threshold=5)["grid"] == 5.5


def test_json_aggregates_none_gives_null_power() -> None:
    # Product rule (absence is explicit) overrides the reference, which reported 0 here.
    out = summary(None)
    assert [out[k] for k in ("grid", "home", "solar", "battery")] == [None, None, None, None]
    assert list(out) == JSON_KEYS


def test_json_null_section_and_null_load_do_not_crash() -> None:
    # The reference crashed on an explicit null section and on neg-solar with a null load.
    out = summary({"site": None, "load": meter(None), "solar": meter(-10), "battery": meter(7)})
    assert [out[k] for k in ("grid", "home", "solar", "battery")] == [None, None, 0, 7]


def test_json_everything_missing_is_null() -> None:
    # Product rule: the reference's `or 0` / `or {}` fallbacks become null.
    out = json_summary(None, None, None, None, None, None, None, neg_solar=False, zero_threshold=0)
    assert out == dict.fromkeys(JSON_KEYS)
    assert list(out) == JSON_KEYS


def test_json_system_status_without_energy_fields_is_null() -> None:
    out = summary(aggregates(1, 2, 3, 4), system_status={"battery_blocks": []})
    assert (out["full_pack_energy"], out["energy_remaining"]) == (None, None)


@pytest.mark.parametrize(("status", "want"), [("UP", 1), ("DOWN", 0), ("SYNCING", 0), (None, None)])
def test_json_grid_status(status: str | None, want: int | None) -> None:
    assert summary(None, grid_status=status)["grid_status"] == want


def test_json_falsy_scalars_keep_the_references_integer_zero() -> None:
    # Reference `x or 0` turns 0.0 into 0; bytes must match on the success path.
    out = summary(None, level=0.0, reserve=0.0, time_remaining=0.0, strings={})
    text = compact_json(out)
    assert '"soe": 0, ' in text and '"reserve": 0, ' in text
    assert '"time_remaining_hours": 0, ' in text and out["strings"] == {}


def test_json_compact_bytes() -> None:
    out = summary(aggregates(100, 3100, 5000, -2000), strings={"A": {"Power": 1}})
    assert compact_json(out) == (
        '{"grid": 100, "home": 3100, "solar": 5000, "battery": -2000, "soe": 75.5, '
        '"grid_status": 1, "reserve": 20.0, "time_remaining_hours": 15.5, '
        '"full_pack_energy": 14000, "energy_remaining": 10570, "strings": {"A": {"Power": 1}}}'
    )


def test_json_inputs_not_mutated() -> None:
    agg, status, strings = aggregates(3, 250, -50, 2), dict(STATUS), copy.deepcopy(STRINGS)
    before = copy.deepcopy((agg, status, strings))
    summary(agg, system_status=status, strings=strings, zero_threshold=5)
    assert (agg, status, strings) == before


# --- /freq -----------------------------------------------------------------------------------

FREQ_BLOCK: JsonDict = {
    "PackagePartNumber": "PW123",
    "PackageSerialNumber": "SN001",
    "f_out": 60.0,
    "p_out": 1000,
    "q_out": 50,
    "v_out": 240.0,
    "i_out": 4.2,
    "pinv_state": "PINV_GridFollowing",
}
FREQ_VITALS: JsonDict = {
    "TEPINV1": {"PINV_Fout": 59.98, "PINV_VSplit1": 120.5, "PINV_VSplit2": 119.8, "PINV_Pout": 1.2},
}


def test_freq_reference_case_values_and_key_order() -> None:
    out = freq_body({"battery_blocks": [FREQ_BLOCK]}, FREQ_VITALS, 1)
    assert list(out.items()) == [
        ("PW1_name", "TEPINV1"),
        ("PW1_PINV_Fout", 59.98),  # vitals overrides the block's f_out
        ("PW1_PINV_VSplit1", 120.5),
        ("PW1_PINV_VSplit2", 119.8),
        ("PW1_PackagePartNumber", "PW123"),
        ("PW1_PackageSerialNumber", "SN001"),
        ("PW1_p_out", 1000),
        ("PW1_q_out", 50),
        ("PW1_v_out", 240.0),
        ("PW1_f_out", 60.0),
        ("PW1_i_out", 4.2),
        ("grid_status", 1),
    ]


def test_freq_block_only_has_placeholders() -> None:
    out = freq_body({"battery_blocks": [{"f_out": 60.01}]}, None, 0)
    assert out == {
        "PW1_name": None,
        "PW1_PINV_Fout": 60.01,
        "PW1_PINV_VSplit1": None,
        "PW1_PINV_VSplit2": None,
        "PW1_PackagePartNumber": None,
        "PW1_PackageSerialNumber": None,
        "PW1_p_out": None,
        "PW1_q_out": None,
        "PW1_v_out": None,
        "PW1_f_out": 60.01,
        "PW1_i_out": None,
        "grid_status": 0,
    }


def test_freq_copies_island_and_meter_signals() -> None:
    vitals: JsonDict = {
        "TESYNC1": {"ISLAND_FreqL1_Load": 60.01, "METER_X_CTA_InstRealPower": 5000, "SYNC_x": 3},
        "TEMSA--1": {"METER_Z_VL1N": 121.0, "ISLAND_VL1N_Main": 120.2, "alerts": []},
        "STSTSM--1": {"ISLAND_Other": 1},
    }
    out = freq_body(None, vitals, -1)
    assert list(out.items()) == [
        ("ISLAND_FreqL1_Load", 60.01),
        ("METER_X_CTA_InstRealPower", 5000),
        ("METER_Z_VL1N", 121.0),
        ("ISLAND_VL1N_Main", 120.2),
        ("grid_status", -1),
    ]


def test_freq_inverters_numbered_independently_in_vitals_order() -> None:
    blocks = {"battery_blocks": [FREQ_BLOCK, dict(FREQ_BLOCK, PackageSerialNumber="SN002")]}
    vitals: JsonDict = {
        "TESYNC1": {"ISLAND_FreqL1_Load": 60.0},
        "TEPINV--a": {"PINV_Fout": 59.9},
        "TEPINV--b": {"PINV_Fout": 60.1},
        "TEPINV--c": {"PINV_Fout": 60.2, "PINV_VSplit1": 121},
    }
    out = freq_body(blocks, vitals, 1)
    assert (out["PW1_name"], out["PW2_name"], out["PW3_name"]) == (
        "TEPINV--a",
        "TEPINV--b",
        "TEPINV--c",
    )
    assert (out["PW1_PINV_Fout"], out["PW2_PINV_Fout"]) == (59.9, 60.1)
    assert out["PW2_PackageSerialNumber"] == "SN002"
    # Keys new to the dict land where the reference's single vitals pass puts them.
    assert list(out)[22:] == [
        "ISLAND_FreqL1_Load",
        "PW3_name",
        "PW3_PINV_Fout",
        "PW3_PINV_VSplit1",
        "PW3_PINV_VSplit2",
        "grid_status",
    ]


def test_freq_everything_missing() -> None:
    assert freq_body(None, None, None) == {"grid_status": None}
    assert freq_body({"battery_blocks": None}, {"TEPINV1": None}, None) == {
        "PW1_name": "TEPINV1",
        "PW1_PINV_Fout": None,
        "PW1_PINV_VSplit1": None,
        "PW1_PINV_VSplit2": None,
        "grid_status": None,
    }


def test_freq_inputs_not_mutated() -> None:
    status, vitals = {"battery_blocks": [dict(FREQ_BLOCK)]}, copy.deepcopy(FREQ_VITALS)
    before = copy.deepcopy((status, vitals))
    freq_body(status, vitals, 1)
    assert (status, vitals) == before


# --- /pod ------------------------------------------------------------------------------------

POD_BLOCK: JsonDict = {
    "PackagePartNumber": "PW2-123",
    "PackageSerialNumber": "TG123456",
    "nominal_energy_remaining": 13500,
    "nominal_full_pack_energy": 14000,
    "pinv_state": "PV_Active",
    "pinv_grid_state": "Grid_Compliant",
    "p_out": -10,
    "q_out": 5,
    "v_out": 241.5,
    "f_out": 60.0,
    "i_out": 0.5,
    "energy_charged": 100,
    "energy_discharged": 90,
    "off_grid": False,
    "vf_mode": None,
    "wobble_detected": True,
    "charge_power_clamped": 1,
    "OpSeqState": "Active",
    "version": "abc123",
}
POD_VITALS: JsonDict = {
    "TEPOD1": {
        "POD_ActiveHeating": True,
        "POD_ChargeComplete": False,
        "POD_ChargeRequest": None,
        "POD_DischargeComplete": 1,
        "POD_PermanentlyFaulted": 0.0,
        "POD_PersistentlyFaulted": False,
        "POD_enable_line": True,
        "POD_available_charge_power": 5000,
        "POD_available_dischg_power": 7000,
        "POD_nom_energy_remaining": 13400,
        "POD_nom_energy_to_be_charged": 600,
        "POD_nom_full_pack_energy": 14100,
        "POD_state": "ignored",
    },
    "TETHC1": {"THC_AmbientTemp": 25.0},
}
POD_STATUS: JsonDict = {
    "battery_blocks": [POD_BLOCK],
    "nominal_full_pack_energy": 14000,
    "nominal_energy_remaining": 13500,
}


def test_pod_one_block_and_one_tepod_exact_items_in_order() -> None:
    out = pod_body(POD_STATUS, POD_VITALS, 18.5, 20.0)
    assert list(out.items()) == [
        ("PW1_name", "TEPOD1"),
        ("PW1_POD_ActiveHeating", 1),
        ("PW1_POD_ChargeComplete", 0),
        ("PW1_POD_ChargeRequest", 0),
        ("PW1_POD_DischargeComplete", 1),
        ("PW1_POD_PermanentlyFaulted", 0),
        ("PW1_POD_PersistentlyFaulted", 0),
        ("PW1_POD_enable_line", 1),
        ("PW1_POD_available_charge_power", 5000),
        ("PW1_POD_available_dischg_power", 7000),
        ("PW1_POD_nom_energy_remaining", 13400),  # TEPOD vitals replace the block value
        ("PW1_POD_nom_energy_to_be_charged", 600),
        ("PW1_POD_nom_full_pack_energy", 14100),
        ("PW1_PackagePartNumber", "PW2-123"),
        ("PW1_PackageSerialNumber", "TG123456"),
        ("PW1_pinv_state", "PV_Active"),
        ("PW1_pinv_grid_state", "Grid_Compliant"),
        ("PW1_p_out", -10),
        ("PW1_q_out", 5),
        ("PW1_v_out", 241.5),
        ("PW1_f_out", 60.0),
        ("PW1_i_out", 0.5),
        ("PW1_energy_charged", 100),
        ("PW1_energy_discharged", 90),
        ("PW1_off_grid", 0),
        ("PW1_vf_mode", 0),
        ("PW1_wobble_detected", 1),
        ("PW1_charge_power_clamped", 1),
        ("PW1_backup_ready", 0),  # missing → 0, as the reference's int(x or 0)
        ("PW1_OpSeqState", "Active"),
        ("PW1_version", "abc123"),
        ("nominal_full_pack_energy", 14000),
        ("nominal_energy_remaining", 13500),
        ("time_remaining_hours", 18.5),
        ("backup_reserve_percent", 20.0),
    ]
    assert all(type(out[k]) is int for k in ("PW1_POD_ActiveHeating", "PW1_off_grid"))


def test_pod_block_without_vitals_keeps_placeholders() -> None:
    out = pod_body(POD_STATUS, None, None, None)
    placeholders = [
        "PW1_name",
        "PW1_POD_ActiveHeating",
        "PW1_POD_ChargeComplete",
        "PW1_POD_ChargeRequest",
        "PW1_POD_DischargeComplete",
        "PW1_POD_PermanentlyFaulted",
        "PW1_POD_PersistentlyFaulted",
        "PW1_POD_enable_line",
        "PW1_POD_available_charge_power",
        "PW1_POD_available_dischg_power",
    ]
    assert list(out)[:10] == placeholders
    assert all(out[k] is None for k in placeholders)
    assert out["PW1_POD_nom_energy_remaining"] == 13500
    assert out["PW1_POD_nom_energy_to_be_charged"] is None
    assert out["PW1_POD_nom_full_pack_energy"] == 14000
    assert len(out) == 31 + 4


def test_pod_two_blocks_two_tepods() -> None:
    status = {"battery_blocks": [POD_BLOCK, dict(POD_BLOCK, PackageSerialNumber="TG654321")]}
    vitals = {"TEPOD1": {"POD_ChargeRequest": True}, "TETHC": {}, "TEPOD2": {}}
    out = pod_body(status, vitals, 1.0, 2.0)
    assert (out["PW1_PackageSerialNumber"], out["PW2_PackageSerialNumber"]) == (
        "TG123456",
        "TG654321",
    )
    assert (out["PW1_name"], out["PW2_name"]) == ("TEPOD1", "TEPOD2")
    assert (out["PW1_POD_ChargeRequest"], out["PW2_POD_ChargeRequest"]) == (1, 0)
    assert out["PW2_POD_nom_full_pack_energy"] is None  # TEPOD2 has no reading; copied raw


def test_pod_tepod_without_block_appends_in_reference_order() -> None:
    out = pod_body(
        None, {"TEPOD--x": {"POD_enable_line": 1, "POD_nom_full_pack_energy": 13}}, None, 20
    )
    assert list(out.items()) == [
        ("PW1_name", "TEPOD--x"),
        ("PW1_POD_ActiveHeating", 0),
        ("PW1_POD_ChargeComplete", 0),
        ("PW1_POD_ChargeRequest", 0),
        ("PW1_POD_DischargeComplete", 0),
        ("PW1_POD_PermanentlyFaulted", 0),
        ("PW1_POD_PersistentlyFaulted", 0),
        ("PW1_POD_enable_line", 1),
        ("PW1_POD_available_charge_power", None),
        ("PW1_POD_available_dischg_power", None),
        ("PW1_POD_nom_energy_remaining", None),
        ("PW1_POD_nom_energy_to_be_charged", None),
        ("PW1_POD_nom_full_pack_energy", 13),
        ("nominal_full_pack_energy", None),
        ("nominal_energy_remaining", None),
        ("time_remaining_hours", None),
        ("backup_reserve_percent", 20),
    ]


def test_pod_everything_missing() -> None:
    out = pod_body(None, None, None, None)
    assert compact_json(out) == (
        '{"nominal_full_pack_energy": null, "nominal_energy_remaining": null, '
        '"time_remaining_hours": null, "backup_reserve_percent": null}'
    )


def test_pod_unconvertible_flag_is_null_not_a_crash() -> None:
    # The reference's int() would raise here and lose the whole response; we emit null instead.
    out = pod_body(
        {"battery_blocks": [{"off_grid": "maybe"}]}, {"TEPOD1": {"POD_enable_line": "?"}}, 1, 2
    )
    assert (out["PW1_off_grid"], out["PW1_POD_enable_line"]) == (None, None)


def test_pod_inputs_not_mutated() -> None:
    status, vitals = copy.deepcopy(POD_STATUS), copy.deepcopy(POD_VITALS)
    before = copy.deepcopy((status, vitals))
    pod_body(status, vitals, 18.5, 20.0)
    assert (status, vitals) == before


# --- /temps/pw, /alerts/pw, /fans/pw ---------------------------------------------------------


def test_temps_pw_numbered_in_iteration_order() -> None:
    temps = {"TETHC--b": 30.1, "TETHC--a": 25.5, "TEPOD--c": None}
    assert list(temps_pw(temps).items()) == [
        ("PW1_temp", 30.1),
        ("PW2_temp", 25.5),
        ("PW3_temp", None),
    ]
    assert temps_pw(None) == {} and temps_pw({}) == {}


def test_alerts_pw() -> None:
    out = alerts_pw(["SystemConnectedToGrid", "FWUpdateSucceeded"])
    assert list(out.items()) == [("SystemConnectedToGrid", 1), ("FWUpdateSucceeded", 1)]
    assert compact_json(out) == '{"SystemConnectedToGrid": 1, "FWUpdateSucceeded": 1}'
    assert alerts_pw(None) == {} and alerts_pw([]) == {}


def test_fans_pw_numbered_by_sorted_device_key() -> None:
    fans: JsonDict = {
        "TEPINV--1232100-00-E--TG1": {"PCH_FanSpeed_A": 1500},
        "PVAC--1538100-00-F--B": {
            "PVAC_Fan_Speed_Actual_RPM": 2000,
            "PVAC_Fan_Speed_Target_RPM": 2100,
        },
        "PVAC--1538100-00-F--A": {
            "PVAC_Fan_Speed_Actual_RPM": 1000,
            "PVAC_Fan_Speed_Target_RPM": 1100,
        },
    }
    before = copy.deepcopy(fans)
    assert list(fans_pw(fans).items()) == [
        ("FAN1_actual", 1000),
        ("FAN1_target", 1100),
        ("FAN2_actual", 2000),
        ("FAN2_target", 2100),
        ("FAN3_actual", None),
        ("FAN3_target", None),  # PW3 TEPINV fans: null, as the reference
    ]
    assert fans == before
    assert fans_pw(None) == {} and fans_pw({}) == {}


# --- /version --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "vint"),
    [
        ("23.44.0 9064fc6a", 234400),
        ("1.2.3", 10203),
        ("2.5", 20500),
        ("24", 240000),
        ("25.10.1", 251001),
        ("1.2.3.4", 1020304),
        ("v23.44.1-build", 234401),
        ("23.44a.0", 234400),
        ("unknown", None),
        ("", None),
        ("1..2", None),
        ("1/2.3", None),
        ("²³.1", None),
    ],
)
def test_version_body(version: str, vint: int | None) -> None:
    assert version_body(version) == {"version": version, "vint": vint}
    assert list(version_body(version)) == ["version", "vint"]


@pytest.mark.parametrize(
    "version",
    ["23.44.0 9064fc6a", "2.5", "v23.44.1-build", "unknown", "", "1..2", "1/2.3", "²³.1", "a.b"],
)
def test_version_matches_pypowerwall_parse_version(version: str) -> None:
    base = pytest.importorskip("pypowerwall.pypowerwall_base")
    assert version_body(version)["vint"] == base.parse_version(version)


def test_version_unknown() -> None:
    assert compact_json(version_unknown()) == '{"version": "SolarOnly", "vint": 0}'


# --- serialisation ---------------------------------------------------------------------------


def test_pretty_json_is_indent4_sorted() -> None:
    assert (
        pretty_json({"b": 1, "a": [1, 2]})
        == '{\n    "a": [\n        1,\n        2\n    ],\n    "b": 1\n}'
    )
    assert pretty_json([]) == "[]"


def test_compact_json_keeps_order_and_default_separators() -> None:
    assert compact_json({"b": 1, "a": None, "c": 1.5}) == '{"b": 1, "a": null, "c": 1.5}'
    assert compact_json(None) == "null"
    assert json.loads(compact_json({"é": "ü"})) == {"é": "ü"}
    assert compact_json({"é": 1}) == '{"\\u00e9": 1}'
