"""Choose and build the provider the settings ask for (``llm.provider``; ``auto`` by default).

``auto`` picks Gemini when ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY`` is set, the OpenAI-compatible
provider when ``llm.base_url`` or ``OPENAI_API_KEY`` is set, else the offline provider, so
everything works the first time without a key::

    provider = make_provider(load_settings().settings.llm)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import httpx

from atomlab.core.errors import ConfigError
from atomlab.core.logging import get_logger
from atomlab.core.settings import LlmSettings
from atomlab.llm.provider import Provider

GEMINI_KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
OPENAI_KEY_VAR = "OPENAI_API_KEY"
DEFAULT_CASSETTE_SUBDIR = Path("llm") / "cassettes"

log = get_logger("atomlab.llm")


def resolve_provider_name(settings: LlmSettings, environ: Mapping[str, str]) -> str:
    """The concrete provider ``auto`` stands for in this environment (or the explicit one)."""
    if settings.provider != "auto":
        return settings.provider
    if any(environ.get(var) for var in GEMINI_KEY_VARS):
        return "gemini"
    if settings.base_url or environ.get(OPENAI_KEY_VAR):
        return "openai"
    return "offline"


def make_provider(
    settings: LlmSettings,
    *,
    environ: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    home: Path | None = None,
) -> Provider:
    """Build the provider ``settings`` name; ``transport`` replaces the network in tests.

    ``home`` is the atomlab data home; the replay provider's cassettes default to
    ``<home>/llm/cassettes`` when ``llm.cassette_dir`` is not set.
    """
    env = os.environ if environ is None else environ
    name = resolve_provider_name(settings, env)
    if name == "offline":
        from atomlab.llm.offline import OfflineProvider

        return OfflineProvider()
    if name == "replay":
        return _make_replay(settings, env, transport, home)
    return _make_online(name, settings, env, transport)


def _make_online(
    name: str,
    settings: LlmSettings,
    env: Mapping[str, str],
    transport: httpx.AsyncBaseTransport | None,
) -> Provider:
    if name == "gemini":
        from atomlab.llm.gemini import GeminiProvider

        key = next((env[var] for var in GEMINI_KEY_VARS if env.get(var)), None)
        if key is None:
            raise ConfigError(
                "llm.provider is 'gemini' but no API key is set; export GEMINI_API_KEY "
                "(or GOOGLE_API_KEY), or use llm.provider=offline",
                field="llm.provider",
            )
        return GeminiProvider(
            api_key=key, model=settings.model, timeout_s=settings.timeout_s, transport=transport
        )
    from atomlab.llm.openai_compat import OpenAICompatProvider

    if not settings.base_url and not env.get(OPENAI_KEY_VAR):
        raise ConfigError(
            "llm.provider is 'openai' but neither llm.base_url (ATOMLAB_LLM__BASE_URL, for a "
            "local server such as Ollama) nor OPENAI_API_KEY is set",
            field="llm.base_url",
        )
    return OpenAICompatProvider(
        base_url=settings.base_url,
        api_key=env.get(OPENAI_KEY_VAR),
        model=settings.model,
        timeout_s=settings.timeout_s,
        transport=transport,
    )


def _make_replay(
    settings: LlmSettings,
    env: Mapping[str, str],
    transport: httpx.AsyncBaseTransport | None,
    home: Path | None,
) -> Provider:
    from atomlab.llm.replay import ReplayProvider

    directory = settings.cassette_dir
    if directory is None:
        if home is None:
            raise ConfigError(
                "llm.provider is 'replay' but llm.cassette_dir is not set; "
                "set ATOMLAB_LLM__CASSETTE_DIR to the folder holding the cassettes",
                field="llm.cassette_dir",
            )
        directory = home / DEFAULT_CASSETTE_SUBDIR
    if not settings.record:
        return ReplayProvider(directory, model=settings.model)
    inner_name = resolve_provider_name(settings.model_copy(update={"provider": "auto"}), env)
    inner: Provider
    if inner_name == "offline":
        from atomlab.llm.offline import OfflineProvider

        inner = OfflineProvider()
        log.warning(
            "llm.recording_offline_answers",
            reason="no GEMINI_API_KEY, GOOGLE_API_KEY, OPENAI_API_KEY or llm.base_url is set",
            model=inner.model,
            effect=f"cassettes are recorded as the offline provider's ({inner.model!r}); replay "
            f"them with ATOMLAB_LLM__MODEL={inner.model}",
        )
    else:
        inner = _make_online(inner_name, settings, env, transport)
    # The cassette set is named after the model that really answers: offline answers recorded
    # without a key must never be replayed as if they were llm.model's (e.g. Gemini's).
    return ReplayProvider(directory, inner=inner, model=inner.model)
