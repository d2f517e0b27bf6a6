"""GET /api/devices/vitals as firmware before 23.44 served it: a protobuf device list.

`devices` describes the site at one moment as plain rows (pure, testable without
protobuf); `encode` writes them as the `DevicesWithVitals` message pypowerwall's
local client parses. Device and signal names follow that firmware (and what the
library's TEDAPI client still emulates): STSTSM gateway, TETHC/TEPOD/TEPINV per
Powerwall 2, PVAC/PVS for the Powerwall+ solar inverter, TESYNC for the meters.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from . import devices
from .layout import Layout
from .model import Snapshot

# ecuType numbers the firmware reports for each kind of device
ECU_GATEWAY, ECU_THC, ECU_POD, ECU_PINV, ECU_PVAC, ECU_PVS, ECU_SYNC = (
    207, 224, 226, 253, 296, 297, 259)
MANUFACTURER = "TESLA"
GATEWAY_ALERTS = ("FWUpdateSucceeded", "GridCodesWrite", "PodCommissionTime")

Value = bool | int | float | str


@dataclass(frozen=True)
class VitalsDevice:
    """One device of the vitals list: identity, signals and active alerts."""

    kind: str  # the DIN prefix: STSTSM, TETHC, TEPOD, ...
    part: str
    serial: str
    parent: str | None  # DIN of the device it hangs off
    ecu_type: int
    signals: tuple[tuple[str, Value], ...]
    alerts: tuple[str, ...] = ()

    @property
    def din(self) -> str:
        return f"{self.kind}--{self.part}--{self.serial}"


@functools.cache
def pb2() -> ModuleType:
    """The library's local-API protobuf module (imported once, lazily)."""
    return importlib.import_module("pypowerwall.local.tesla_pb2")


def _gateway(snapshot: Snapshot, layout: Layout) -> VitalsDevice:
    connected = () if snapshot.islanded else ("SystemConnectedToGrid",)
    islanded = ("SystemIslandedActive",) if snapshot.islanded else ()
    return VitalsDevice("STSTSM", layout.gateway_part, layout.gateway_serial, None, ECU_GATEWAY,
                        (("STSTSM-Location", "Gateway"),), (*connected, *islanded, *GATEWAY_ALERTS))


def _powerwall(snapshot: Snapshot, layout: Layout, index: int,
               reading: devices.UnitReading, parent: str) -> list[VitalsDevice]:
    """TETHC (thermal controller), then its TEPOD (pack) and TEPINV (inverter)."""
    unit = layout.units[index]
    share = reading.full_pack_wh / layout.full_pack_wh
    forming = snapshot.islanded
    thc = VitalsDevice("TETHC", unit.part, unit.serial, parent, ECU_THC, (
        ("THC_AmbientTemp", reading.temperature_c),
        ("THC_State", "THC_STATE_AUTONOMOUSCONTROL")))
    pod = VitalsDevice("TEPOD", unit.part, unit.serial, thc.din, ECU_POD, (
        ("POD_nom_energy_remaining", reading.remaining_wh),
        ("POD_nom_full_pack_energy", reading.full_pack_wh),
        ("POD_nom_energy_to_be_charged", reading.full_pack_wh - reading.remaining_wh),
        ("POD_available_charge_power", unit.max_power_w if snapshot.soe_percent < 100 else 0),
        ("POD_available_dischg_power", unit.max_power_w),
        ("POD_ChargeComplete", snapshot.soe_percent >= 100),
        ("POD_enable_line", True)))
    pinv = VitalsDevice("TEPINV", unit.part, unit.serial, thc.din, ECU_PINV, (
        ("PINV_Fout", snapshot.frequency),
        ("PINV_Pout", round(reading.power_w / 1000.0, 3)),
        ("PINV_Vout", round(snapshot.v_l1n + snapshot.v_l2n, 2)),
        ("PINV_VSplit1", snapshot.v_l1n),
        ("PINV_VSplit2", snapshot.v_l2n),
        ("PINV_State", "PINV_GridForming" if forming else "PINV_GridFollowing"),
        ("PINV_GridState", "Grid_Uncompliant" if forming else "Grid_Compliant"),
        ("PINV_EnergyCharged", round(snapshot.energy.battery_imported * share)),
        ("PINV_EnergyDischarged", round(snapshot.energy.battery_exported * share))))
    return [thc, pod, pinv]


def _solar_inverter(snapshot: Snapshot, layout: Layout, parent: str) -> list[VitalsDevice]:
    """PVAC (inverter, strings A-D, fan) and its PVS (string switch)."""
    if layout.pvac is None:
        return []
    strings = devices.pvac_strings(snapshot, layout)
    actual, target = devices.pvac_fan_rpm(snapshot)
    producing = snapshot.flows.solar > 0.0
    pvac_signals: list[tuple[str, Value]] = [
        ("PVAC_Fout", snapshot.frequency), ("PVAC_Pout", snapshot.flows.solar),
        ("PVAC_Vout", round(snapshot.v_l1n + snapshot.v_l2n, 2)),
        ("PVAC_State", "PVAC_Active" if producing else "PVAC_Standby"),
        ("PVAC_Fan_Speed_Actual_RPM", actual), ("PVAC_Fan_Speed_Target_RPM", target)]
    for string in strings:
        pvac_signals += [
            (f"PVAC_PVCurrent_{string.name}", string.current),
            (f"PVAC_PVMeasuredVoltage_{string.name}", string.voltage),
            (f"PVAC_PVMeasuredPower_{string.name}", round(string.power, 1)),
            (f"PVAC_PvState_{string.name}", "PV_Active" if string.connected else "PV_Disabled")]
    pvac = VitalsDevice("PVAC", layout.pvac.part, layout.pvac.serial, parent, ECU_PVAC,
                        tuple(pvac_signals))
    pvs_signals: list[tuple[str, Value]] = [
        ("PVS_State", "PVS_Active"), ("PVS_vLL", round(snapshot.v_l1n + snapshot.v_l2n, 2)),
        ("PVS_SelfTestState", "PVS_SelfTestOff")]
    pvs_signals += [(f"PVS_String{s.name}_Connected", s.connected) for s in strings]
    pvs = VitalsDevice("PVS", layout.pvac.part, layout.pvac.serial, pvac.din, ECU_PVS,
                       tuple(pvs_signals))
    return [pvac, pvs]


def _sync(snapshot: Snapshot, layout: Layout, parent: str) -> VitalsDevice:
    main_f = 0.0 if snapshot.islanded else snapshot.frequency
    return VitalsDevice("TESYNC", layout.sync_part, layout.sync_serial, parent, ECU_SYNC, (
        ("ISLAND_GridConnected", "ISLAND_GridConnected_Disconnected" if snapshot.islanded
         else "ISLAND_GridConnected_Connected"),
        ("ISLAND_GridState", "ISLAND_GridState_Grid_Down" if snapshot.islanded
         else "ISLAND_GridState_Grid_Compliant"),
        ("ISLAND_FreqL1_Main", main_f), ("ISLAND_FreqL2_Main", main_f),
        ("ISLAND_FreqL1_Load", snapshot.frequency), ("ISLAND_FreqL2_Load", snapshot.frequency),
        ("ISLAND_VL1N_Main", 0.0 if snapshot.islanded else snapshot.v_l1n),
        ("ISLAND_VL2N_Main", 0.0 if snapshot.islanded else snapshot.v_l2n),
        ("METER_X_CTA_InstRealPower", round(snapshot.flows.site / 2.0, 1)),
        ("METER_X_CTB_InstRealPower",
         round(snapshot.flows.site - round(snapshot.flows.site / 2.0, 1), 1))))


def vitals_devices(snapshot: Snapshot, layout: Layout) -> list[VitalsDevice]:
    """Every device of the site, gateway first, in the firmware's order."""
    gateway = _gateway(snapshot, layout)
    result = [gateway]
    for index, reading in enumerate(devices.units(snapshot, layout)):
        result += _powerwall(snapshot, layout, index, reading, gateway.din)
    result += _solar_inverter(snapshot, layout, gateway.din)
    result.append(_sync(snapshot, layout, gateway.din))
    return result


def _set_value(vital: Any, value: Value) -> None:
    if isinstance(value, bool):  # before int: a bool is an int to Python
        vital.boolValue = value
    elif isinstance(value, int):
        vital.intValue = value
    elif isinstance(value, float):
        vital.floatValue = value
    else:
        vital.stringValue = value


def encode(rows: list[VitalsDevice], wall_time: float) -> bytes:
    """The `DevicesWithVitals` protobuf body for `rows`."""
    message = pb2().DevicesWithVitals()
    for row in rows:
        entry = message.devices.add()
        device = entry.device.device
        device.din.value = row.din
        device.partNumber.value = row.part
        device.serialNumber.value = row.serial
        device.manufacturer.value = MANUFACTURER
        if row.parent is not None:
            device.componentParentDin.value = row.parent
        device.lastCommunicationTime.seconds = int(wall_time)
        device.deviceAttributes.teslaEnergyEcuAttributes.ecuType = row.ecu_type
        for name, value in row.signals:
            vital = entry.vitals.add()
            vital.name = name
            _set_value(vital, value)
        entry.alerts.extend(row.alerts)
    return bytes(message.SerializeToString())


def vitals_body(snapshot: Snapshot, layout: Layout) -> bytes:
    """GET /api/devices/vitals for this moment."""
    return encode(vitals_devices(snapshot, layout), snapshot.wall_time)
