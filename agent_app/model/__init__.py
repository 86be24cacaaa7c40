"""Model backends: the offline deterministic model and OpenAI-compatible endpoints."""

from __future__ import annotations

from agent_app.config import Settings
from agent_app.model.base import ModelBackend


def backend_from_settings(settings: Settings) -> ModelBackend:
    if settings.model_backend == "openai":
        from agent_app.model.openai_compat import OpenAICompatible

        assert settings.model_base_url  # checked by Settings
        return OpenAICompatible(
            base_url=settings.model_base_url,
            model=settings.model_name,
            api_key=settings.model_api_key.get_secret_value() if settings.model_api_key else None,
        )
    from agent_app.model.offline import OfflineModel

    return OfflineModel()
