"""The catalog: packaged entries, validation that names the entry, batched reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from atomlab.core.errors import ConfigError, NotFoundError
from atomlab.instrument.catalog import load_catalog, parse_catalog, read_value, read_values
from atomlab.instrument.client import NanonisClient

from .conftest import StateServer


def spec(**over: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "label": "Bias",
        "name": "bias_v",
        "unit": "V",
        "get": {"command": "Bias.Get", "field": "bias_v"},
        "set": {"command": "Bias.Set", "field": "bias_v"},
        "limits": {"min": -1, "max": 1},
    }
    entry.update(over)
    return entry


def test_packaged_catalog_has_signals_and_bounded_specs() -> None:
    catalog = load_catalog()
    assert len(catalog.signals) >= 6 and len(catalog.specs) >= 10
    assert all(e.limits is not None and e.writable for e in catalog.specs)
    assert not any(e.writable for e in catalog.signals)
    assert catalog.find("Scan Frame Height") is catalog.find("SCAN_FRAME_HEIGHT_M")
    assert catalog.find("zctrl_on").get.field == "on"  # YAML would read a bare `on` as True


def test_duplicate_label_names_both_entries() -> None:
    data = {"specs": [spec(), spec(name="bias2_v")]}
    with pytest.raises(ConfigError, match=r"spec 'Bias' reuses 'bias'.*spec 'Bias'"):
        parse_catalog(data)


def test_unknown_command_names_the_entry_and_the_command() -> None:
    data = {
        "specs": [spec(), spec(label="Gap", name="gap_m", get={"command": "Gap.Get", "field": "x"})]
    }
    with pytest.raises(ConfigError, match=r"spec #2 \('Gap'\).*'Gap\.Get' is not a known"):
        parse_catalog(data)


def test_unknown_field_lists_the_command_fields() -> None:
    data = {
        "signals": [{"label": "Y", "name": "y", "get": {"command": "Scan.FrameGet", "field": "y"}}]
    }
    with pytest.raises(ConfigError, match=r"signal #1 \('Y'\).*center_y_m"):
        parse_catalog(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"signals": [spec()]}, "a signal is read-only"),
        ({"specs": [spec(set=None)]}, "a spec needs 'set'"),
        ({"specs": [spec(limits=None)]}, "needs 'limits'"),
        ({"specs": [spec(limits={"min": 2, "max": 1})]}, "must be below max"),
        ({"specs": [spec(safety={"max_step": -1})]}, r"safety\.max_step"),
        ({"specs": [spec(name="Bias V")]}, "name"),
        ({"specs": [spec(colour="red")]}, "colour"),
        ({"gadgets": []}, "keys 'signals' and 'specs'"),
    ],
)
def test_invalid_entries_are_config_errors(data: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_catalog(data)


def test_catalog_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("signals: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_catalog(bad)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"specs": [spec()]}), encoding="utf-8")
    assert [e.name for e in load_catalog(good)] == ["bias_v"]


def test_unknown_name_lists_what_exists() -> None:
    with pytest.raises(NotFoundError, match="bias_v"):
        load_catalog().find("volts")
    with pytest.raises(NotFoundError, match="read-only"):
        load_catalog().spec("current_a")


def test_signals_and_frame_specs_are_read_in_two_round_trips(state_server: StateServer) -> None:
    catalog = load_catalog()
    entries = [catalog.find(n) for n in ("current_a", "z_m", "tip_x_m")]
    entries += [e for e in catalog.specs if e.get.command == "Scan.FrameGet"]
    with NanonisClient("127.0.0.1", state_server.port) as nanonis:
        nanonis.call(
            "Scan.FrameSet",
            {
                "center_x_m": 1.0,
                "center_y_m": 2.0,
                "width_m": 3.0,
                "height_m": 4.0,
                "angle_deg": 5.0,
            },
        )
        state_server.requests.clear()
        values = read_values(nanonis, entries)
        assert read_value(nanonis, catalog.find("bias_v")) == pytest.approx(0.1)
    assert values == {
        "current_a": 0.0,
        "z_m": 2.0,
        "tip_x_m": 3.0,
        "scan_frame_center_x_m": 1.0,
        "scan_frame_center_y_m": 2.0,
        "scan_frame_width_m": 3.0,
        "scan_frame_height_m": 4.0,
        "scan_frame_angle_deg": 5.0,
    }
    assert state_server.requests == [
        "Signals.NamesGet",
        "Signals.ValsGet",
        "Scan.FrameGet",
        "Bias.Get",
    ]
