"""The replay provider: answers from cassettes on disk, byte for byte; records them when asked.

A cassette entry is one JSON file per request, keyed by the request's fingerprint (model, system,
prompt, schema, generation settings; never the request id)::

    recorder = ReplayProvider(tmp / "cassettes", inner=GeminiProvider(...))   # record mode
    player = ReplayProvider(tmp / "cassettes")                                # replay only

In replay mode a missing entry is a :class:`CassetteMissError` naming the key and the folder;
the provider never calls out. The answer's ``raw_text`` is stored exactly as the real provider
returned it and checked against its SHA-256 on read, so replays are byte-identical.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from atomlab.core.errors import NotFoundError
from atomlab.llm.provider import (
    Generation,
    GenerationRequest,
    InvalidResponseError,
    ModelT,
    Provider,
    ProviderError,
    TokenUsage,
    parse_output,
)

REPLAY_PROVIDER_NAME = "replay"
CASSETTE_FORMAT = 1
PROMPT_PREVIEW_CHARS = 80
RECORDED_SAMPLE = 64  # cassette files looked at to name the recorded models on a miss


class CassetteMissError(ProviderError, NotFoundError):
    """Replay mode found no cassette entry for a request."""

    type_name = "cassette_miss"


class ReplayProvider:
    """Replays recorded answers; with ``inner`` set, records every miss by calling ``inner``.

    ``model`` names the cassette set (default: the inner provider's model, else ``"replay"``);
    it is part of every key, so cassettes of different models never mix.
    """

    name = REPLAY_PROVIDER_NAME

    def __init__(
        self,
        directory: Path | str,
        *,
        inner: Provider | None = None,
        model: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.inner = inner
        self.model = model or (inner.model if inner is not None else REPLAY_PROVIDER_NAME)
        self.recorded = 0
        self.replayed = 0

    @property
    def recording(self) -> bool:
        return self.inner is not None

    def key_for(self, request: GenerationRequest[Any]) -> str:
        """The cassette key of ``request`` (a SHA-256 hex digest)."""
        return request.fingerprint(provider=REPLAY_PROVIDER_NAME, model=self.model)

    def path_for(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    async def generate(self, request: GenerationRequest[ModelT]) -> Generation[ModelT]:
        key = self.key_for(request)
        entry = self._read(key, request)
        if entry is None:
            if self.inner is None:
                raise self._miss(key, request)
            generation = await self.inner.generate(request)
            self._write(key, generation)
            self.recorded += 1
            return generation
        self.replayed += 1
        return self._generation(entry, request)

    def _generation(
        self, entry: dict[str, Any], request: GenerationRequest[ModelT]
    ) -> Generation[ModelT]:
        raw_text: str = entry["raw_text"]
        value = parse_output(
            raw_text,
            request.schema,
            provider=self.name,
            model=self.model,
            request_id=request.request_id,
        )
        usage = entry.get("usage", {})
        return Generation(
            value=value,
            usage=TokenUsage(
                int(usage.get("prompt_tokens", 0)), int(usage.get("output_tokens", 0))
            ),
            request_id=request.request_id,
            model=str(entry.get("model", self.model)),
            provider=self.name,
            raw_text=raw_text,
        )

    def _read(self, key: str, request: GenerationRequest[Any]) -> dict[str, Any] | None:
        path = self.path_for(key)
        try:
            entry: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return self._corrupt(path, key, request, f"unreadable JSON ({exc})")
        raw = entry.get("raw_text")
        if not isinstance(raw, str) or _sha256(raw) != entry.get("raw_sha256"):
            return self._corrupt(path, key, request, "raw_text does not match raw_sha256")
        return entry

    def _corrupt(
        self, path: Path, key: str, request: GenerationRequest[Any], why: str
    ) -> dict[str, Any] | None:
        if self.recording:
            # A corrupt entry is re-recorded rather than trusted.
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        raise InvalidResponseError(
            f"cassette entry {path} is corrupt: {why}; delete it and record again "
            "(ATOMLAB_LLM__RECORD=true with a real provider)",
            provider=self.name,
            model=self.model,
            request_id=request.request_id,
            key=key,
        )

    def _write(self, key: str, generation: Generation[Any]) -> None:
        entry = {
            "format": CASSETTE_FORMAT,
            "key": key,
            "provider": generation.provider,
            "model": generation.model,
            "request_id": generation.request_id,
            "usage": {
                "prompt_tokens": generation.usage.prompt_tokens,
                "output_tokens": generation.usage.output_tokens,
            },
            "raw_sha256": _sha256(generation.raw_text),
            "raw_text": generation.raw_text,
        }
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(entry, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            Path(tmp).replace(path)
        except BaseException:
            with contextlib.suppress(OSError):
                Path(tmp).unlink()
            raise

    def recorded_sets(self, *, sample: int = RECORDED_SAMPLE) -> list[str]:
        """``"model (provider)"`` of the cassettes in the folder (from up to ``sample`` files)."""
        found: set[str] = set()
        with contextlib.suppress(OSError):
            for count, path in enumerate(self.directory.glob("*/*.json")):
                if count >= sample:
                    break
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    entry = json.loads(path.read_text(encoding="utf-8"))
                    found.add(f"{entry['model']} ({entry['provider']})")
        return sorted(found)

    def _miss(self, key: str, request: GenerationRequest[Any]) -> CassetteMissError:
        preview = request.prompt[:PROMPT_PREVIEW_CHARS]
        recorded = self.recorded_sets()
        other = [name for name in recorded if not name.startswith(f"{self.model} (")]
        hint = (
            f"; this folder holds cassettes of {', '.join(other)}: set ATOMLAB_LLM__MODEL to "
            "replay those"
            if other
            else ""
        )
        return CassetteMissError(
            f"no cassette entry {key} in {self.directory} (model {self.model!r}, prompt starts "
            f"{preview!r}){hint}; record it with ATOMLAB_LLM__RECORD=true and a real provider, "
            "or use llm.provider=offline",
            provider=self.name,
            model=self.model,
            request_id=request.request_id,
            key=key,
            path=str(self.path_for(key)),
        )

    async def aclose(self) -> None:
        """Close the recording provider's connections, if any."""
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()

    def __repr__(self) -> str:
        mode = "record" if self.recording else "replay"
        return f"ReplayProvider({str(self.directory)!r}, mode={mode}, model={self.model!r})"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
