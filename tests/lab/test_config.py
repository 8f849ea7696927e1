"""Demo presets: sizes a user can pick by name, each field overridable, bad names refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomlab.core.errors import InvalidInputError
from atomlab.lab import PRESETS, demo_config


def test_the_standard_preset_is_the_swarm_services_default_surface(tmp_path: Path) -> None:
    config = demo_config(home=tmp_path)
    assert (config.preset, config.surface_nm, config.defects, config.agents) == (
        "standard",
        20.0,
        12,
        16,
    )
    assert config.frame_nm == pytest.approx(25.0)
    assert config.scan_pixels % 16 == 0
    assert config.frame_nm / config.scan_pixels <= config.pixel_nm


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_and_serialises(tmp_path: Path, preset: str) -> None:
    config = demo_config(preset, seed=4, home=tmp_path, keep=True)
    data = config.to_dict()
    assert data["preset"] == preset and data["seed"] == 4 and data["keep"] is True
    assert data["home"] == str(tmp_path)


def test_an_unknown_preset_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as caught:
        demo_config("huge", home=tmp_path)
    assert "standard" in caught.value.message and "small" in caught.value.message
    assert caught.value.details == {"field": "preset", "value": "huge"}


def test_only_the_stages_off_the_spine_can_be_skipped(tmp_path: Path) -> None:
    config = demo_config(home=tmp_path, skip=["learning", "report"])
    assert config.skip == ("learning", "report")
    with pytest.raises(InvalidInputError) as caught:
        demo_config(home=tmp_path, skip=["survey"])
    assert "learning, triage, report" in caught.value.message
    assert caught.value.details == {"field": "skip", "value": ["survey"]}
