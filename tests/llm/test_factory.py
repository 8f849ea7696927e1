"""make_provider: which provider the settings and the environment select."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from atomlab.core.errors import ConfigError
from atomlab.core.settings import LlmSettings, load_settings
from atomlab.llm import (
    CassetteMissError,
    GeminiProvider,
    GenerationRequest,
    OfflineProvider,
    OpenAICompatProvider,
    ReplayProvider,
    make_provider,
    resolve_provider_name,
)
from tests.llm.conftest import Triage


def test_without_any_key_the_default_is_offline() -> None:
    assert isinstance(make_provider(LlmSettings(), environ={}), OfflineProvider)


@pytest.mark.parametrize("var", ["GEMINI_API_KEY", "GOOGLE_API_KEY"])
def test_a_gemini_key_selects_gemini_with_the_model_setting(var: str) -> None:
    provider = make_provider(LlmSettings(model="gemini-2.5-pro"), environ={var: "k"})
    assert isinstance(provider, GeminiProvider)
    assert provider.model == "gemini-2.5-pro"


def test_a_base_url_selects_the_openai_compatible_provider() -> None:
    settings = LlmSettings(base_url="http://127.0.0.1:11434/v1", model="llama3.1")
    provider = make_provider(settings, environ={})
    assert isinstance(provider, OpenAICompatProvider)
    assert provider.base_url == "http://127.0.0.1:11434/v1"


def test_explicit_gemini_without_a_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
        make_provider(LlmSettings(provider="gemini"), environ={})


def test_explicit_offline_wins_over_a_key() -> None:
    settings = LlmSettings(provider="offline")
    assert resolve_provider_name(settings, {"GEMINI_API_KEY": "k"}) == "offline"


def test_replay_needs_a_cassette_folder() -> None:
    with pytest.raises(ConfigError, match="cassette_dir"):
        make_provider(LlmSettings(provider="replay"), environ={})


def test_replay_defaults_to_the_data_home(tmp_path: Path) -> None:
    provider = make_provider(LlmSettings(provider="replay"), environ={}, home=tmp_path)
    assert isinstance(provider, ReplayProvider)
    assert provider.directory == tmp_path / "llm" / "cassettes"
    assert not provider.recording


async def test_record_mode_records_from_the_real_provider_then_replays(tmp_path: Path) -> None:
    calls: list[httpx.Request] = []
    good = {
        "defect_class": "step_edge",
        "severity": 1,
        "confidence": 0.5,
        "rationale": "a monatomic step edge",
        "tags": ["line"],
        "score": {"level": 1, "label": "minor"},
    }

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        text = json.dumps(good)
        return httpx.Response(
            200, json={"choices": [{"message": {"content": text}, "finish_reason": "stop"}]}
        )

    base = {
        "provider": "replay",
        "cassette_dir": tmp_path,
        "model": "llama3.1",
        "base_url": "http://127.0.0.1:8000/v1",
    }
    recorder = make_provider(
        LlmSettings(**base, record=True), environ={}, transport=httpx.MockTransport(handler)
    )
    request = GenerationRequest(prompt="step", schema=Triage)
    recorded = await recorder.generate(request)
    player = make_provider(LlmSettings(**base), environ={})
    replayed = await player.generate(request)
    assert replayed.raw_text == recorded.raw_text
    assert len(calls) == 1
    with pytest.raises(CassetteMissError):
        await player.generate(GenerationRequest(prompt="other", schema=Triage))


def test_environment_variables_reach_the_llm_settings() -> None:
    loaded = load_settings(
        environ={
            "ATOMLAB_LLM__PROVIDER": "openai",
            "ATOMLAB_LLM__BUDGET_USD": "2.5",
            "ATOMLAB_LLM__MODEL": "qwen2.5",
        }
    )
    llm = loaded.settings.llm
    assert (llm.provider, llm.budget_usd, llm.model) == ("openai", 2.5, "qwen2.5")


def test_explicit_openai_without_url_or_key_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY") as caught:
        make_provider(LlmSettings(provider="openai"), environ={})
    assert "llm.base_url" in caught.value.message


def test_explicit_openai_with_a_key_targets_the_openai_api() -> None:
    provider = make_provider(
        LlmSettings(provider="openai", model="gpt-4o-mini"), environ={"OPENAI_API_KEY": "sk"}
    )
    assert isinstance(provider, OpenAICompatProvider)
    assert provider.base_url == "https://api.openai.com/v1"


def _only_cassette(folder: Path) -> dict[str, str]:
    (cassette,) = folder.glob("*/*.json")
    entry: dict[str, str] = json.loads(cassette.read_text())
    return entry


async def test_recording_without_a_key_is_labelled_offline_never_as_the_configured_model(
    tmp_path: Path,
) -> None:
    """It saved offline answers under llm.model ('gemini-2.5-flash') as if Gemini had given them."""
    settings = LlmSettings(provider="replay", cassette_dir=tmp_path, record=True)
    recorder = make_provider(settings, environ={})
    assert isinstance(recorder, ReplayProvider) and recorder.recording
    assert recorder.model == "offline-v1" != settings.model
    request = GenerationRequest(prompt="step", schema=Triage)
    await recorder.generate(request)
    entry = _only_cassette(tmp_path)
    assert (entry["provider"], entry["model"]) == ("offline", "offline-v1")
    # Replaying as llm.model finds nothing, and the miss says which recordings are there.
    player = make_provider(LlmSettings(provider="replay", cassette_dir=tmp_path), environ={})
    with pytest.raises(CassetteMissError, match=r"offline-v1 \(offline\)"):
        await player.generate(request)
    offline_player = make_provider(
        LlmSettings(provider="replay", cassette_dir=tmp_path, model="offline-v1"), environ={}
    )
    assert (await offline_player.generate(request)).raw_text == entry["raw_text"]
