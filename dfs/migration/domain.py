"""What the coordinator needs to know of a libvirt domain, read from its XML.

Pure functions over the XML text: no libvirt connection, so the rules are
unit-tested without a hypervisor.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass


@dataclass(frozen=True)
class GuestDisk:
    target: str  # the guest's name for it: vda, sda
    kind: str  # file | block | network | volume | dir
    device: str  # disk | cdrom | floppy | lun
    source: str  # file or device path, network name; "" when empty (a cdrom without media)
    cache: str  # driver cache mode; "" when unset (the hypervisor's default)
    read_only: bool
    shareable: bool
    relabel_off: bool  # <seclabel model='dac' relabel='no'/>: libvirt never chowns it


@dataclass(frozen=True)
class GuestInterface:
    kind: str  # network | bridge | user | direct ...
    source: str  # network or bridge name


@dataclass(frozen=True)
class GuestDefinition:
    name: str
    virt_type: str  # kvm | qemu (TCG)
    memory_kib: int
    cpu_mode: str  # custom | host-model | host-passthrough | maximum; "" when unset
    cpu_model: str
    disks: tuple[GuestDisk, ...]
    interfaces: tuple[GuestInterface, ...]
    dac_relabel_off: bool  # a domain-wide <seclabel type='none'> or dac relabel='no'


def parse_domain(xml_text: str) -> GuestDefinition:
    root = ElementTree.fromstring(xml_text)
    memory = root.find("memory")
    unit = "KiB" if memory is None else memory.get("unit", "KiB")
    memory_kib = 0 if memory is None or memory.text is None else _kib(int(memory.text), unit)
    cpu = root.find("cpu")
    model = None if cpu is None else cpu.find("model")
    return GuestDefinition(
        name=root.findtext("name", ""),
        virt_type=root.get("type", "kvm"),
        memory_kib=memory_kib,
        cpu_mode="" if cpu is None else cpu.get("mode", "custom"),
        cpu_model="" if model is None or model.text is None else model.text,
        disks=tuple(_disk(disk) for disk in root.findall("devices/disk")),
        interfaces=tuple(_interface(interface)
                         for interface in root.findall("devices/interface")),
        dac_relabel_off=any(_relabel_off(label) for label in root.findall("seclabel")),
    )


def _disk(disk: ElementTree.Element) -> GuestDisk:
    source = disk.find("source")
    driver = disk.find("driver")
    target = disk.find("target")
    path = ""
    if source is not None:
        path = (source.get("file") or source.get("dev") or source.get("name")
                or source.get("dir") or source.get("volume") or "")
    labels = [] if source is None else source.findall("seclabel")
    return GuestDisk(
        target="" if target is None else target.get("dev", ""),
        kind=disk.get("type", "file"),
        device=disk.get("device", "disk"),
        source=path,
        cache="" if driver is None else driver.get("cache", ""),
        read_only=disk.find("readonly") is not None,
        shareable=disk.find("shareable") is not None,
        relabel_off=any(_relabel_off(label) for label in labels),
    )


def _interface(interface: ElementTree.Element) -> GuestInterface:
    source = interface.find("source")
    name = "" if source is None else (source.get("network") or source.get("bridge")
                                      or source.get("dev") or "")
    return GuestInterface(kind=interface.get("type", ""), source=name)


def _relabel_off(label: ElementTree.Element) -> bool:
    if label.get("type") == "none":
        return True
    return label.get("model", "dac") == "dac" and label.get("relabel") == "no"


def _kib(value: int, unit: str) -> int:
    factors = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024,
               "m": 1024, "mib": 1024, "mb": 1e6 / 1024, "g": 1024**2, "gib": 1024**2,
               "gb": 1e9 / 1024, "t": 1024**3, "tib": 1024**3, "tb": 1e12 / 1024}
    return int(value * factors.get(unit.lower(), 1))
