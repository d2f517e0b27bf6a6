"""JSON documents the gateway returns over TEDAPI, built from one snapshot.

- `config_json`: the config.json file (filestore read).
- `device_controller`: the DeviceControllerQuery answer (basic and full forms).
- `components`: one Powerwall 3's ComponentsQuery answer (pch/bms/hvp/baggr/pws).

Shapes follow what pypowerwall's TEDAPI client reads; signals are returned only
for the names a query asks for, as the gateway does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from . import devices
from .devices import iso_seconds
from .layout import FIRMWARE_VERSION, SITE_NAME, TIMEZONE, Layout
from .local_api import GRID_CODE
from .model import Snapshot

JSON = dict[str, Any]
BASE_ALERTS = ("FWUpdateSucceeded", "GridCodesWrite", "PodCommissionTime")
GIT_SHORT = FIRMWARE_VERSION.split(" ")[1]
# Module part number of the PW2 battery module behind each package (msa TEPINV).
PW2_MODULE_PART = "1081100-22-U"


# --- config.json ---------------------------------------------------------------------

def _site_info(snapshot: Snapshot, layout: Layout) -> JSON:
    return {
        "battery_commission_date": "2024-03-14T10:21:07-07:00",
        "backup_reserve_percent": snapshot.settings.reserve_percent,
        "max_site_meter_power_ac": 1000000000,
        "min_site_meter_power_ac": -1000000000,
        "nominal_system_energy_ac": round(layout.full_pack_wh / 1000.0, 1),
        "nominal_system_power_ac": layout.nominal_power_kw,
        "on_grid_solar_curtailment_enabled": True,
        "tariff_content": {},
        "grid_code": GRID_CODE,
        "country": "United States",
        "state": "California",
        "utility": "Pacific Gas & Electric",
        "site_name": SITE_NAME,
        "timezone": TIMEZONE,
        "ITC_cliff": 0,
        "panel_max_current": 200,
        "customer_preferred_export_rule": "battery_ok",
    }


def config_json(snapshot: Snapshot, layout: Layout) -> JSON:
    """The gateway's config.json (operation settings live in it on TEDAPI)."""
    block_type = "Powerwall3" if layout.model == "pw3" else "acpw"
    config: JSON = {
        "vin": layout.din,
        "auto_meter_update": True,
        "battery_blocks": [{"vin": unit.din, "type": block_type, "battery_expansions": []}
                           for unit in layout.units],
        "bridge_inverter": {},
        "client_protocols": {},
        "credentials": [],
        "customer": {"registered": True},
        "default_real_mode": snapshot.settings.mode,
        "dio": {},
        "enable_inverter_meter_readings": True,
        "freq_shift_load_shed": {},
        "freq_support_parameters": {},
        "industrial_networks": {},
        "installer": {"company": "Tesla", "solar_installation": "New"},
        "island_config": {},
        "island_contactor_controller": {},
        "logging": {},
        "meters": [{"location": "site", "type": "synchrometerX",
                    "cts": [True, True, False, False],
                    "connection": {"device_serial": layout.sync_serial}}],
        "site_info": _site_info(snapshot, layout),
        "solar": {},
        "solars": [],
        "strategy": {},
        "test_timers": {},
    }
    if layout.pvac is not None:
        config["solars"] = [{"brand": "Tesla", "model": "Solar Inverter 7.6",
                             "power_rating_watts": layout.pvac.rating_w}]
    return config


# --- signals -------------------------------------------------------------------------

def signal(name: str, value: Any, stamp: int) -> JSON:
    """One gateway signal: numbers in value, booleans in boolValue, enums in textValue."""
    entry: JSON = {"name": name, "value": None, "textValue": None, "boolValue": None,
                   "timestamp": stamp}
    if isinstance(value, bool):
        entry["boolValue"] = value
    elif isinstance(value, str):
        entry["textValue"] = value
    elif value is not None:
        entry["value"] = value
    return entry


def signals(known: Mapping[str, Any], wanted: Iterable[str] | None, stamp: int) -> list[JSON]:
    """Signals for the requested names the device knows (unknown names are dropped)."""
    names = list(known) if wanted is None else [name for name in wanted if name in known]
    return [signal(name, known[name], stamp) for name in names]


# --- DeviceControllerQuery -----------------------------------------------------------

def _alerts(snapshot: Snapshot) -> list[str]:
    connected = [] if snapshot.islanded else ["SystemConnectedToGrid"]
    return [*connected, *BASE_ALERTS]


def _control(snapshot: Snapshot, layout: Layout) -> JSON:
    flows = snapshot.flows
    inverters = [] if layout.pvac is None else [
        {"din": f"{layout.pvac.part}--{layout.pvac.serial}", "disableReasons": []}]
    return {
        "systemStatus": {"nominalFullPackEnergyWh": snapshot.full_pack_wh,
                         "nominalEnergyRemainingWh": snapshot.remaining_wh},
        "islanding": {"customerIslandMode": "BACKUP", "contactorClosed": not snapshot.islanded,
                      "microGridOK": True, "gridOK": not snapshot.islanded,
                      "disableReasons": []},
        "meterAggregates": [{"location": "LOAD", "realPowerW": flows.load},
                            {"location": "SITE", "realPowerW": flows.site},
                            {"location": "BATTERY", "realPowerW": flows.battery},
                            {"location": "SOLAR", "realPowerW": flows.solar}],
        "alerts": {"active": _alerts(snapshot)},
        "siteShutdown": {"isShutDown": False, "reasons": []},
        "batteryBlocks": [{"din": unit.din, "disableReasons": []} for unit in layout.units],
        "pvInverters": inverters,
    }


def _meter_side(prefix: str, power: float, reactive: float, snapshot: Snapshot) -> JSON:
    """A split-phase CT pair (CTA on L1, CTB on L2) of the gateway's sync meters."""
    half, half_q = round(power / 2.0, 1), round(reactive / 2.0, 1)
    return {
        "isMIA": False, "isComplete": True, "lastRxTime": iso_seconds(snapshot.wall_time),
        f"{prefix}_CTA_InstRealPower": half,
        f"{prefix}_CTA_InstReactivePower": half_q,
        f"{prefix}_CTA_I": round(abs(half) / snapshot.v_l1n, 2),
        f"{prefix}_VL1N": snapshot.v_l1n,
        f"{prefix}_CTB_InstRealPower": round(power - half, 1),
        f"{prefix}_CTB_InstReactivePower": round(reactive - half_q, 1),
        f"{prefix}_CTB_I": round(abs(power - half) / snapshot.v_l2n, 2),
        f"{prefix}_VL2N": snapshot.v_l2n,
        f"{prefix}_CTC_InstRealPower": 0.0,
        f"{prefix}_CTC_InstReactivePower": 0.0,
        f"{prefix}_CTC_I": 0.0,
        f"{prefix}_VL3N": 0.0,
    }


def _sync(snapshot: Snapshot, layout: Layout) -> JSON:
    site_q = 0.0 if snapshot.islanded else snapshot.reactive_var
    return {
        "packagePartNumber": layout.sync_part,
        "packageSerialNumber": layout.sync_serial,
        "SYNC_InfoMsg": {"isMIA": False, "SYNC_appGitHash": GIT_SHORT, "SYNC_assemblyId": 4},
        "METER_X_AcMeasurements": _meter_side("METER_X", snapshot.flows.site, site_q, snapshot),
        "METER_Y_AcMeasurements": _meter_side("METER_Y", snapshot.flows.solar, 0.0, snapshot),
        "SYNC_Status": {"lastRxTime": iso_seconds(snapshot.wall_time)},
    }


def _islander(snapshot: Snapshot) -> JSON:
    # The grid side ("Main") goes dead in an outage; the home side ("Load") stays up.
    main_v1 = 0.0 if snapshot.islanded else snapshot.v_l1n
    main_v2 = 0.0 if snapshot.islanded else snapshot.v_l2n
    main_f = 0.0 if snapshot.islanded else snapshot.frequency
    connected = "ISLAND_GridConnected_Disconnected" if snapshot.islanded \
        else "ISLAND_GridConnected_Connected"
    state = "ISLAND_GridState_Grid_Down" if snapshot.islanded \
        else "ISLAND_GridState_Grid_Compliant"
    return {
        "ISLAND_GridConnection": {"ISLAND_GridConnected": connected, "isComplete": True},
        "ISLAND_AcMeasurements": {
            "ISLAND_VL1N_Main": main_v1, "ISLAND_FreqL1_Main": main_f,
            "ISLAND_VL2N_Main": main_v2, "ISLAND_FreqL2_Main": main_f,
            "ISLAND_VL3N_Main": 0.0, "ISLAND_FreqL3_Main": 0.0,
            "ISLAND_VL1N_Load": snapshot.v_l1n, "ISLAND_FreqL1_Load": snapshot.frequency,
            "ISLAND_VL2N_Load": snapshot.v_l2n, "ISLAND_FreqL2_Load": snapshot.frequency,
            "ISLAND_VL3N_Load": 0.0, "ISLAND_FreqL3_Load": 0.0,
            "ISLAND_GridState": state, "lastRxTime": iso_seconds(snapshot.wall_time),
            "isComplete": True, "isMIA": False,
        },
    }


def _pvac(snapshot: Snapshot, layout: Layout) -> list[JSON]:
    if layout.pvac is None:
        return []
    strings = devices.pvac_strings(snapshot, layout)
    logging: JSON = {"isMIA": False}
    for string in strings:
        logging[f"PVAC_PVCurrent_{string.name}"] = string.current
        logging[f"PVAC_PVMeasuredVoltage_{string.name}"] = string.voltage
    logging["PVAC_VL1Ground"] = snapshot.v_l1n
    logging["PVAC_VL2Ground"] = snapshot.v_l2n
    producing = snapshot.flows.solar > 0.0
    return [{
        "packagePartNumber": layout.pvac.part,
        "packageSerialNumber": layout.pvac.serial,
        "subPackagePartNumber": None,
        "subPackageSerialNumber": None,
        "PVAC_Status": {"isMIA": False, "PVAC_Pout": snapshot.flows.solar,
                        "PVAC_State": "PVAC_Active" if producing else "PVAC_Standby",
                        "PVAC_Vout": round(snapshot.v_l1n + snapshot.v_l2n, 2),
                        "PVAC_Fout": snapshot.frequency},
        "PVAC_InfoMsg": {"PVAC_appGitHash": GIT_SHORT},
        "PVAC_Logging": logging,
        "alerts": {"isComplete": True, "isMIA": False, "active": []},
    }]


def _pvs(snapshot: Snapshot, layout: Layout) -> list[JSON]:
    if layout.pvac is None:
        return []
    status: JSON = {"isMIA": False, "PVS_State": "PVS_Active",
                    "PVS_vLL": round(snapshot.v_l1n + snapshot.v_l2n, 2),
                    "PVS_SelfTestState": "PVS_SelfTestOff"}
    for string in devices.pvac_strings(snapshot, layout):
        status[f"PVS_String{string.name}_Connected"] = string.connected
    return [{"PVS_Status": status,
             "PVS_Logging": {"PVS_numStringsLockoutBits": 0, "PVS_sbsComplete": True},
             "alerts": {"isComplete": True, "isMIA": False, "active": []}}]


def _pinv(snapshot: Snapshot, reading: devices.UnitReading, max_w: int) -> JSON:
    forming = snapshot.islanded
    return {
        "PINV_Status": {"isMIA": False, "PINV_Fout": snapshot.frequency,
                        "PINV_Pout": round(reading.power_w / 1000.0, 3),
                        "PINV_Vout": round(snapshot.v_l1n + snapshot.v_l2n, 2),
                        "PINV_State": "PINV_GridForming" if forming else "PINV_GridFollowing",
                        "PINV_GridState": "Grid_Uncompliant" if forming else "Grid_Compliant"},
        "PINV_AcMeasurements": {"isMIA": False, "PINV_VSplit1": snapshot.v_l1n,
                                "PINV_VSplit2": snapshot.v_l2n},
        "PINV_PowerCapability": {"isComplete": True, "isMIA": False, "PINV_Pnom": max_w},
        "alerts": {"isComplete": True, "isMIA": False, "active": []},
    }


def _pw2_bus(snapshot: Snapshot, layout: Layout) -> JSON:
    """THC/PINV/POD entries of each Powerwall 2 (empty on a Powerwall 3 site)."""
    if layout.model != "pw2":
        return {"PINV": [], "THC": [], "POD": []}
    readings = devices.units(snapshot, layout)
    return {
        "PINV": [_pinv(snapshot, r, u.max_power_w) for u, r in zip(layout.units, readings, strict=True)],
        "THC": [{"packagePartNumber": u.part, "packageSerialNumber": u.serial,
                 "THC_InfoMsg": {"isComplete": True, "isMIA": False, "THC_appGitHash": GIT_SHORT},
                 "THC_Logging": {"THC_LOG_PW_2_0_EnableLineState": "THC_LOG_PW_2_0_EnableLineState_On"}}
                for u in layout.units],
        "POD": [{"POD_EnergyStatus": {"isMIA": False, "POD_nom_energy_remaining": r.remaining_wh,
                                      "POD_nom_full_pack_energy": r.full_pack_wh},
                 "POD_InfoMsg": {"POD_appGitHash": GIT_SHORT}} for r in readings],
    }


def _es_can(snapshot: Snapshot, layout: Layout, full: bool) -> JSON:
    bus: JSON = {"PVAC": _pvac(snapshot, layout), "PVS": _pvs(snapshot, layout),
                 **_pw2_bus(snapshot, layout), "SYNC": _sync(snapshot, layout),
                 "ISLANDER": _islander(snapshot)}
    if not full:
        # The basic query also asks for the Backup Switch (MSA), absent on this site.
        bus["MSA"] = {"packagePartNumber": None, "packageSerialNumber": None,
                      "MSA_InfoMsg": {"isMIA": True},
                      "METER_Z_AcMeasurements": {"isMIA": True}, "MSA_Status": None}
    idle = {"updating": False, "numSteps": 0, "currentStep": 0, "currentStepProgress": 0,
            "progress": 0}
    return {"bus": bus,
            "enumeration": {"inProgress": False, "numACPW": len(layout.units), "numPVI": 0},
            "firmwareUpdate": {"isUpdating": False, "powerwalls": idle, "msa": idle,
                               "msa1": idle, "sync": idle, "pvInverters": idle},
            "phaseDetection": None, "inverterSelfTests": None}


def _msa_pw2_units(snapshot: Snapshot, layout: Layout, wanted: Iterable[str] | None,
                   stamp: int) -> list[JSON]:
    """Per Powerwall 2: its TETHC, then its module's TEPINV and TEPOD components.

    The order matters: the library pairs each package with the module that follows it.
    """
    components: list[JSON] = []
    for unit, reading in zip(layout.units, devices.units(snapshot, layout), strict=True):
        share = reading.full_pack_wh / layout.full_pack_wh
        thc = {"THC_AmbientTemp": reading.temperature_c,
               "THC_State": "THC_STATE_AUTONOMOUSCONTROL"}
        pinv = {"PINV_EnergyCharged": round(snapshot.energy.battery_imported * share),
                "PINV_EnergyDischarged": round(snapshot.energy.battery_exported * share),
                "PINV_LifetimeEnergyCharged": round(snapshot.energy.battery_imported * share),
                "PINV_LifetimeEnergyDischarged": round(snapshot.energy.battery_exported * share),
                "PINV_HeatsinkTemp": round(reading.temperature_c + 4.0, 1),
                "PINV_PllFrequency": snapshot.frequency, "PINV_PllLocked": True,
                "PINV_Qout": 0.0, "PINV_ReadyForGridForming": True,
                "PINV_HardwareEnableLine": True, "PINV_PowerLimiter": None}
        pod = {"POD_available_charge_power": unit.max_power_w if snapshot.soe_percent < 100 else 0,
               "POD_available_dischg_power": unit.max_power_w}
        for part, serial, known in ((unit.part, unit.serial, thc),
                                    (PW2_MODULE_PART, unit.module_serial, pinv),
                                    (PW2_MODULE_PART, unit.module_serial, pod)):
            components.append({"partNumber": part, "serialNumber": serial,
                               "signals": signals(known, wanted, stamp), "activeAlerts": []})
    return components


def _msa(snapshot: Snapshot, layout: Layout, wanted: Iterable[str] | None,
         stamp: int) -> list[JSON]:
    """components.msa of the full DeviceControllerQuery."""
    uptime_ms = int(snapshot.uptime_s * 1000)
    sync = {"SYNC_Uptime": uptime_ms, "SYNC_ExternallyPowered": False,
            "SYNC_SiteSwitchEnabled": False}
    result = [{"partNumber": layout.sync_part, "serialNumber": layout.sync_serial,
               "signals": signals(sync, wanted, stamp), "activeAlerts": []}]
    if layout.pvac is not None:
        actual, target = devices.pvac_fan_rpm(snapshot)
        fans = {"PVAC_Fan_Speed_Actual_RPM": actual, "PVAC_Fan_Speed_Target_RPM": target}
        result.append({"partNumber": layout.pvac.part, "serialNumber": layout.pvac.serial,
                       "signals": signals(fans, wanted, stamp), "activeAlerts": []})
    if layout.model == "pw2":
        result.extend(_msa_pw2_units(snapshot, layout, wanted, stamp))
    return result


def device_controller(snapshot: Snapshot, layout: Layout, full: bool,
                      msa_signals: Iterable[str] | None = None) -> JSON:
    """The DeviceControllerQuery answer; `full` adds components, remote meters, IEEE 2030.5."""
    stamp = int(snapshot.wall_time)
    answer: JSON = {
        "control": _control(snapshot, layout),
        "system": {"time": iso_seconds(snapshot.wall_time),
                   "supportMode": {"remoteService": {"isEnabled": False, "expiryTime": None,
                                                     "sessionId": None}},
                   "sitemanagerStatus": {"isRunning": True},
                   "updateUrgencyCheck": None},
        "neurio": {"isDetectingWiredMeters": False, "readings": [], "pairings": []},
        "pw3Can": {"firmwareUpdate": {"isUpdating": False, "progress": None},
                   "enumeration": {"inProgress": False}},
        "esCan": _es_can(snapshot, layout, full),
    }
    if full:
        answer["teslaRemoteMeter"] = {"meters": [], "detectedWired": []}
        answer["components"] = {"msa": _msa(snapshot, layout, msa_signals, stamp)}
        answer["ieee20305"] = {"longFormDeviceID": "", "polledResources": [],
                               "controls": {"defaultControl": None, "activeControls": []},
                               "registration": {"dateTimeRegistered": None, "pin": ""}}
    return answer


# --- ComponentsQuery (Powerwall 3) -----------------------------------------------------

def _pch(snapshot: Snapshot, reading: devices.UnitReading,
         strings: list[devices.PvString]) -> dict[str, Any]:
    volts_ab = round(snapshot.v_l1n + snapshot.v_l2n, 2)
    pv_w = round(sum(s.power for s in strings) * devices.INVERTER_EFFICIENCY, 1)
    known: dict[str, Any] = {
        "PCH_State": "PCH_STATE_GRID_FORMING" if snapshot.islanded else "PCH_STATE_GRID_FOLLOWING",
        "PCH_AcFrequency": snapshot.frequency,
        "PCH_AcVoltageAB": volts_ab,
        "PCH_AcVoltageAN": snapshot.v_l1n,
        "PCH_AcVoltageBN": snapshot.v_l2n,
        "PCH_BatteryPower": reading.power_w,
        "PCH_AcRealPowerAB": round(reading.power_w + pv_w, 1),
        "PCH_AcRealPowerSum": round(reading.power_w + pv_w, 1),
        "PCH_SlowPvPowerSum": pv_w,
        "PCH_AcMode": "AC_GridForming" if snapshot.islanded else "AC_GridFollowing",
        "PCH_DcdcState_A": "DCDC_STATE_ACTIVE", "PCH_DcdcState_B": "DCDC_STATE_ACTIVE",
        "PCH_appGitHash": GIT_SHORT,
        "PCH_AmbientTemp": round(reading.temperature_c + 12.0, 1),
        "PCH_heatsinkTemp": 45.450980,
        "PCH_FanSpeed_A": reading.fan_rpm, "PCH_FanSpeed_B": reading.fan_rpm + 3,
        "PCH_FanDuty_A": reading.fan_duty, "PCH_FanDuty_B": reading.fan_duty,
        "PCH_AcVoltageCN": 0.0, "PCH_AcVoltageLL": volts_ab,
    }
    for string in strings:
        known[f"PCH_PvState_{string.name}"] = "Pv_Active" if string.producing else "Pv_Standby"
        known[f"PCH_PvVoltage{string.name}"] = string.voltage
        known[f"PCH_PvCurrent{string.name}"] = string.current
    return known


def _bms(snapshot: Snapshot, reading: devices.UnitReading, share: float) -> dict[str, Any]:
    return {"BMS_nominalEnergyRemaining": reading.remaining_wh / 1000.0,
            "BMS_nominalFullPackEnergy": reading.full_pack_wh / 1000.0,
            "BMS_appGitHash": GIT_SHORT,
            "BMS_LOG_tempOutOfBounds": 0, "BMS_LOG_tempOutOfBoundsCharge": 0,
            "BMS_kwhDischargeTotal": round(snapshot.energy.battery_exported * share / 1000.0, 1),
            "BMS_LOG_ahDischargeTotal": round(snapshot.energy.battery_exported * share / 52.0, 1),
            "BMS_LOG_cacAvg": round(reading.full_pack_wh / 52.0, 1),  # ~52 V pack
            "BMS_LOG_numFullBattCycles": 0, "BMS_LOG_overDischargeCounter": 0,
            "BMS_LOG_selfDischargeRate": 0.0}


def _hvp(reading: devices.UnitReading) -> dict[str, Any]:
    return {"HVP_State": "HVP_STATE_ACTIVE",
            "HVP_appGitHash": GIT_SHORT,
            "HVP_PackTempMax": reading.temperature_c,
            "HVP_PackTempMin": round(reading.temperature_c - 3.1, 1),
            "HVP_ShuntTemperature": round(reading.temperature_c + 1.2, 1),
            "HVP_SafetyBiDisconnectState": "HVP_SAFETY_BI_DISCONNECT_CLOSED"}


def _baggr(reading: devices.UnitReading) -> dict[str, Any]:
    return {"BAGGR_State": "BAGGR_STATE_ACTIVE", "BAGGR_OperationRequest": "BAGGR_OP_REQ_NONE",
            "BAGGR_NumBatteriesConnected": 1, "BAGGR_NumBatteriesPresent": 1,
            "BAGGR_NumBatteriesExpected": 1,
            "BAGGR_ExpectedEnergyRemaining": reading.remaining_wh / 1000.0,
            "BAGGR_ExpectedFullPackEnergy": reading.full_pack_wh / 1000.0,
            "BAGGR_OperationType": "BAGGR_OP_TYPE_NORMAL"}


def _pws() -> dict[str, Any]:
    return {"PWS_SelfTest": "PWS_SELFTEST_PASSED", "PWS_appGitHash": GIT_SHORT,
            "PWS_ProdSwitch_State": "PWS_SWITCH_ON", "PWS_ExtSwitch_State": "PWS_SWITCH_ON",
            "PWS_RSD_State": "PWS_RSD_NORMAL"}


def components(snapshot: Snapshot, layout: Layout, unit_index: int,
               variables: Mapping[str, Any]) -> JSON:
    """One Powerwall 3's ComponentsQuery answer; `variables` carries the signal names."""
    unit = layout.units[unit_index]
    reading = devices.units(snapshot, layout)[unit_index]
    strings = devices.pw3_strings(snapshot, layout)[unit_index]
    share = unit.full_pack_wh / layout.full_pack_wh
    stamp = int(snapshot.wall_time)

    def group(key: str, known: Mapping[str, Any], **identity: str) -> list[JSON]:
        wanted = variables.get(f"{key}SignalNames")
        names = wanted if isinstance(wanted, list) else None
        return [{**identity, "signals": signals(known, names, stamp), "activeAlerts": []}]

    return {
        "pw3Can": {"firmwareUpdate": {"isUpdating": False, "progress": None}},
        "components": {
            "pws": group("pws", _pws()),
            "pch": group("pch", _pch(snapshot, reading, strings)),
            "bms": group("bms", _bms(snapshot, reading, share)),
            "hvp": group("hvp", _hvp(reading), partNumber="1600000-00-A",
                         serialNumber=f"HVP{unit.serial[2:]}"),
            "baggr": group("baggr", _baggr(reading)),
        },
    }

