"""Payloads of the gateway's local JSON API (/api/*), built from one snapshot.

Field names and shapes follow a real gateway (and what pypowerwall parses); every
function is pure so both APIs and the tests can build the same view of a moment.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from . import devices
from .devices import iso_time
from .layout import SITE_NAME, TIMEZONE, Layout
from .model import Snapshot

JSON = dict[str, Any]
ZERO_TIME = "0001-01-01T00:00:00Z"
GRID_CODE = "60Hz_240V_s_UL1741SA:2019_California"


def _meter(snapshot: Snapshot, power: float, reactive: float, imported: float,
           exported: float, meters: int | None, timeout: int = 1500000000) -> JSON:
    voltage = round(snapshot.v_l1n + snapshot.v_l2n, 2)
    current = round(power / voltage, 2)
    return {
        "last_communication_time": iso_time(snapshot.wall_time),
        "instant_power": power,
        "instant_reactive_power": reactive,
        "instant_apparent_power": round(math.hypot(power, reactive), 3),
        "frequency": snapshot.frequency,
        "energy_exported": round(exported, 3),
        "energy_imported": round(imported, 3),
        "instant_average_voltage": voltage,
        "instant_average_current": current,
        "i_a_current": 0,
        "i_b_current": 0,
        "i_c_current": 0,
        "last_phase_voltage_communication_time": ZERO_TIME,
        "last_phase_power_communication_time": ZERO_TIME,
        "last_phase_energy_communication_time": ZERO_TIME,
        "timeout": timeout,
        "num_meters_aggregated": meters,
        "instant_total_current": current,
    }


def meters_aggregates(snapshot: Snapshot, layout: Layout) -> JSON:
    """GET /api/meters/aggregates."""
    flows, energy, q = snapshot.flows, snapshot.energy, snapshot.reactive_var
    site_q = 0.0 if snapshot.islanded else q
    load = _meter(snapshot, flows.load, round(q * 0.6, 1), energy.load_imported, 0.0, None)
    load.pop("num_meters_aggregated")  # the gateway's load block has no meter count
    return {
        "site": _meter(snapshot, flows.site, site_q, energy.site_imported,
                       energy.site_exported, 1),
        "battery": _meter(snapshot, flows.battery, round(q * 0.1, 1), energy.battery_imported,
                          energy.battery_exported, len(layout.units)),
        "load": load,
        "solar": _meter(snapshot, flows.solar, 0.0, 0.0, energy.solar_exported, 1,
                        timeout=1000000000),
    }


def soe(snapshot: Snapshot) -> JSON:
    """GET /api/system_status/soe (raw percentage, 5 % below the app's scale)."""
    return {"percentage": snapshot.soe_percent}


def grid_status(snapshot: Snapshot) -> JSON:
    """GET /api/system_status/grid_status."""
    return {"grid_status": snapshot.grid_status, "grid_services_active": False}


def _go_duration(seconds: float) -> str:
    hours, rest = divmod(seconds, 3600.0)
    minutes, secs = divmod(rest, 60.0)
    return f"{int(hours)}h{int(minutes)}m{secs:.9f}s"


def status(snapshot: Snapshot, layout: Layout) -> JSON:
    """GET /api/status (public on a real gateway: no login needed)."""
    booted = datetime.fromtimestamp(snapshot.wall_time - snapshot.uptime_s).astimezone()
    return {
        "din": layout.din,
        "start_time": booted.strftime("%Y-%m-%d %H:%M:%S %z"),
        "up_time_seconds": _go_duration(snapshot.uptime_s),
        "is_new": False,
        "version": layout.firmware,
        "git_hash": layout.git_hash,
        "commission_count": 0,
        "device_type": "teg",
        "teg_type": "unknown",
        "sync_type": "v2.1",
        "cellular_disabled": False,
        "can_reboot": True,
    }


def site_name() -> JSON:
    """GET /api/site_info/site_name."""
    return {"site_name": SITE_NAME, "timezone": TIMEZONE}


def site_info(layout: Layout) -> JSON:
    """GET /api/site_info."""
    energy_kwh = round(layout.full_pack_wh / 1000.0, 1)
    return {
        "max_system_energy_kWh": energy_kwh,
        "max_system_power_kW": layout.nominal_power_kw,
        "site_name": SITE_NAME,
        "timezone": TIMEZONE,
        "max_site_meter_power_kW": 1000000000,
        "min_site_meter_power_kW": -1000000000,
        "nominal_system_energy_kWh": energy_kwh,
        "nominal_system_power_kW": layout.nominal_power_kw,
        "panel_max_current": 200,
        "grid_code": {
            "grid_code": GRID_CODE,
            "grid_voltage_setting": 240,
            "grid_freq_setting": 60,
            "grid_phase_setting": "Split",
            "country": "United States",
            "state": "California",
            "utility": "Pacific Gas & Electric",
        },
    }


def operation(snapshot: Snapshot) -> JSON:
    """GET /api/operation (reserve on the gateway's raw scale)."""
    settings = snapshot.settings
    return {
        "real_mode": settings.mode,
        "backup_reserve_percent": settings.reserve_percent,
        "freq_shift_load_shed_soe": 0,
        "freq_shift_load_shed_delta_f": 0,
    }


def _battery_block(snapshot: Snapshot, layout: Layout, index: int,
                   reading: devices.UnitReading) -> JSON:
    unit = layout.units[index]
    voltage = round(snapshot.v_l1n + snapshot.v_l2n, 2)
    share = 1.0 / len(layout.units)
    return {
        "Type": "",
        "PackagePartNumber": unit.part,
        "PackageSerialNumber": unit.serial,
        "disabled_reasons": [],
        "pinv_state": "PINV_GridForming" if snapshot.islanded else "PINV_GridFollowing",
        "pinv_grid_state": "Grid_Uncompliant" if snapshot.islanded else "Grid_Compliant",
        "nominal_energy_remaining": reading.remaining_wh,
        "nominal_full_pack_energy": reading.full_pack_wh,
        "p_out": reading.power_w,
        "q_out": round(snapshot.reactive_var * 0.1 * share, 1),
        "v_out": voltage,
        "f_out": snapshot.frequency,
        "i_out": round(reading.power_w / voltage, 2),
        "energy_charged": round(snapshot.energy.battery_imported * share),
        "energy_discharged": round(snapshot.energy.battery_exported * share),
        "off_grid": snapshot.islanded,
        "vf_mode": snapshot.islanded,
        "wobble_detected": False,
        "charge_power_clamped": False,
        "backup_ready": True,
        "OpSeqState": "Active",
        "version": layout.git_hash[:8],
    }


def system_status(snapshot: Snapshot, layout: Layout) -> JSON:
    """GET /api/system_status, including one battery block per Powerwall."""
    readings = devices.units(snapshot, layout)
    blocks = [_battery_block(snapshot, layout, i, r) for i, r in enumerate(readings)]
    max_power = layout.max_power_w
    return {
        "command_source": "Configuration",
        "battery_target_power": snapshot.flows.battery,
        "battery_target_reactive_power": 0,
        "nominal_full_pack_energy": snapshot.full_pack_wh,
        "nominal_energy_remaining": snapshot.remaining_wh,
        "max_power_energy_remaining": 0,
        "max_power_energy_to_be_charged": 0,
        "max_charge_power": max_power,
        "max_discharge_power": max_power,
        "max_apparent_power": max_power,
        "instantaneous_max_discharge_power": max_power,
        "instantaneous_max_charge_power": max_power,
        "instantaneous_max_apparent_power": 0,
        "hardware_capability_charge_power": 0,
        "hardware_capability_discharge_power": 0,
        "grid_services_power": 0,
        "system_island_state": snapshot.grid_status,
        "available_blocks": len(blocks),
        "available_charger_blocks": 0,
        "battery_blocks": blocks,
        "ffr_power_availability_high": 0,
        "ffr_power_availability_low": 0,
        "load_charge_constraint": 0,
        "max_sustained_ramp_rate": 0,
        "grid_faults": [],
        "can_reboot": "Yes",
        "smart_inv_delta_p": 0,
        "smart_inv_delta_q": 0,
        "last_toggle_timestamp": iso_time(snapshot.wall_time - snapshot.uptime_s),
        "solar_real_power_limit": -1,
        "score": 10000,
        "blocks_controlled": len(blocks),
        "primary": True,
        "auxiliary_load": 0,
        "all_enable_lines_high": True,
        "inverter_nominal_usable_power": max_power,
        "expected_energy_remaining": 0,
    }


def _powerwall_entry(snapshot: Snapshot, layout: Layout, index: int) -> JSON:
    unit = layout.units[index]
    return {
        "Type": "",
        "PackagePartNumber": unit.part,
        "PackageSerialNumber": unit.serial,
        "type": "SolarPowerwall" if layout.model == "pw2" and index == 0 else "ACPW",
        "grid_state": "Grid_Uncompliant" if snapshot.islanded else "Grid_Compliant",
        "grid_reconnection_time_seconds": 0,
        "under_phase_detection": False,
        "updating": False,
        "commissioning_diagnostic": {"name": "Commissioning", "category": "InternalComms",
                                     "disruptive": False, "inputs": None, "checks": [],
                                     "alert": False},
        "update_diagnostic": {"name": "Firmware Update", "category": "InternalComms",
                              "disruptive": True, "inputs": None, "checks": [], "alert": False},
        "bc_type": None,
        "in_config": True,
    }


def powerwalls(snapshot: Snapshot, layout: Layout) -> JSON:
    """GET /api/powerwalls."""
    return {
        "enumerating": False,
        "updating": False,
        "checking_if_offgrid": False,
        "running_phase_detection": False,
        "phase_detection_last_error": "no phase information",
        "bubble_shedding": False,
        "on_grid_check_error": "on grid check not run",
        "grid_qualifying": False,
        "grid_code_validating": False,
        "phase_detection_not_available": True,
        "powerwalls": [_powerwall_entry(snapshot, layout, i) for i in range(len(layout.units))],
        "gateway_din": layout.din,
        "sync": {"updating": False, "commissioning_diagnostic": None, "update_diagnostic": None},
        "msa": None,
        "states": None,
    }


def _string_vitals(snapshot: Snapshot, layout: Layout) -> list[JSON]:
    return [{"string_id": number, "connected": string.connected,
             "measured_voltage": string.voltage, "current": string.current,
             "measured_power": round(string.power, 1)}
            for number, string in enumerate(devices.all_strings(snapshot, layout), start=1)]


def solar_powerwall(snapshot: Snapshot, layout: Layout) -> JSON:
    """GET /api/solar_powerwall: the PV side, where strings live on firmware >= 23.44."""
    producing = snapshot.flows.solar > 0.0
    voltage = round(snapshot.v_l1n + snapshot.v_l2n, 2)
    stamp = iso_time(snapshot.wall_time)
    return {
        "command_source": "Configuration",
        "pvac_status": {
            "state": "PVAC_Active" if producing else "PVAC_Standby",
            "disabled": False,
            "disabled_reasons": [],
            "grid_state": "Grid_Compliant",
            "inv_state": "INV_Grid_Connected" if producing else "INV_Standby",
            "v_out": voltage,
            "f_out": snapshot.frequency,
            "p_out": snapshot.flows.solar,
            "q_out": 0,
            "i_out": round(snapshot.flows.solar / voltage, 2),
            "string_vitals": _string_vitals(snapshot, layout),
        },
        "pvs_status": {"state": "PVS_Active", "disabled": False, "enable_output": True,
                       "v_ll": voltage, "self_test_state": "PVS_SelfTestOff"},
        "pv_power_limit": float(layout.solar_peak_w),
        "power_status_setpoint": "on",
        "pvac_alerts": {"LastRxTime": stamp, "ReceivedMuxBitmask": 1,
                        "PVAC_alertEcuResetTimeout": False, "PVAC_a023_EcuSelfTestFailed": False},
        "pvs_alerts": {"LastRxTime": stamp, "ReceivedMuxBitmask": 0,
                       "PVS_a018_MciStringB": False, "PVS_a021_RapidShutdown": False},
    }


def sitemaster() -> JSON:
    """GET /api/sitemaster."""
    return {"status": "StatusUp", "running": True, "connected_to_tesla": True,
            "power_supply_mode": False, "can_reboot": "Yes"}


def meters_site(layout: Layout) -> list[JSON]:
    """GET /api/meters/site: the gateway's own site meter."""
    return [{
        "id": 0, "location": "site", "type": "synchrometerX", "cts": [True, True, False, False],
        "inverted": [False, False, False, False],
        "connection": {"short_id": layout.sync_serial[-6:], "device_serial": layout.sync_serial,
                       "https_conf": {}},
    }]


def meters(layout: Layout) -> list[JSON]:
    """GET /api/meters: the configured meters."""
    return [{"serial": layout.sync_serial, "short_id": layout.sync_serial[-6:],
             "type": "synchrometerX", "connected": True, "cts": [
                 {"type": "synchrometerX", "valid": [True, True, False, False],
                  "inverted": [False, False, False, False],
                  "real_power_scale_factor": 1}]}]


def meters_readings(snapshot: Snapshot, layout: Layout) -> JSON:
    """GET /api/meters/readings: raw per-CT readings of the site meter."""
    half = round(snapshot.flows.site / 2.0, 1)
    return {layout.sync_serial: {"type": "synchrometerX", "connected": True, "cts": [
        {"ct": 1, "real_power": half, "voltage": snapshot.v_l1n},
        {"ct": 2, "real_power": round(snapshot.flows.site - half, 1), "voltage": snapshot.v_l2n},
    ]}}


def system_update_status(snapshot: Snapshot, layout: Layout) -> JSON:
    """GET /api/system/update/status."""
    now_ms = int(snapshot.wall_time * 1000)
    return {"state": "/update_succeeded", "info": {"status": ["nonactionable"]},
            "current_time": now_ms, "last_status_time": now_ms - 60000,
            "version": layout.firmware, "offline_updating": False, "offline_update_error": "",
            "estimated_bytes_per_second": None}


def grid_codes() -> list[JSON]:
    """GET /api/site_info/grid_codes (a short list; the real one is long)."""
    return [{"grid_code": GRID_CODE, "grid_voltage_setting": 240, "grid_freq_setting": 60,
             "grid_phase_setting": "Split", "country": "United States", "state": "California",
             "utility": "Pacific Gas & Electric"},
            {"grid_code": "60Hz_240V_s_IEEE1547:2018", "grid_voltage_setting": 240,
             "grid_freq_setting": 60, "grid_phase_setting": "Split",
             "country": "United States", "state": "", "utility": ""}]


def solars(layout: Layout) -> list[JSON]:
    """GET /api/solars."""
    return [{"brand": "Tesla", "model": f"Solar Inverter {layout.solar_peak_w / 1000:.1f}",
             "power_rating_watts": layout.solar_peak_w}]


def solars_brands() -> list[str]:
    """GET /api/solars/brands."""
    return ["ABB", "Enphase Energy", "Fronius", "SMA America", "SolarEdge Technologies", "Tesla"]


def installer() -> JSON:
    """GET /api/installer."""
    return {"company": "Tesla", "customer_id": "", "phone": "", "email": "", "location": "",
            "mounting": "", "wiring": "", "backup_configuration": "Whole Home",
            "solar_installation": "New", "solar_installation_type": "PV Panel",
            "run_sitemaster": True, "verified_config": True,
            "installation_types": ["Residential"]}


def networks() -> list[JSON]:
    """GET /api/networks and /api/system/networks."""
    return [{"network_name": "ethernet_tesla_internal_default", "interface": "EthType",
             "enabled": True, "dhcp": True, "extra_ips": [], "active": True,
             "primary": True, "lastTeslaConnected": True, "lastInternetConnected": True,
             "iface_network_info": {"network_name": "ethernet_tesla_internal_default",
                                    "ip_networks": [{"IP": "", "Mask": "////AA=="}],
                                    "gateway": "", "interface": "EthType",
                                    "state": "DeviceStateReady", "state_reason": "DeviceStateReasonNone",
                                    "signal_strength": 0, "hw_address": ""}}]


def ct_voltage_references() -> JSON:
    """GET /api/synchrometer/ct_voltage_references."""
    return {"ct1": "Phase1", "ct2": "Phase2", "ct3": "Phase1"}
