"""The models the gateway offers: public name, Hugging Face Hub id, chat or base, defaults."""

from __future__ import annotations

from msgspec import Struct

from proxy.errors import UnknownModel


class ModelSpec(Struct, frozen=True):
    """One model of the catalogue and the generation defaults the gateway fills in for it."""

    name: str
    hub_id: str
    chat: bool
    context_length: int = 4096
    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    do_sample: bool = True


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("llama-2-7b-chat", "meta-llama/Llama-2-7b-chat-hf", chat=True),
    ModelSpec("llama-2-13b-chat", "meta-llama/Llama-2-13b-chat-hf", chat=True),
    ModelSpec("llama-2-7b", "meta-llama/Llama-2-7b-hf", chat=False),
    ModelSpec("llama-2-13b", "meta-llama/Llama-2-13b-hf", chat=False),
)


class Catalog:
    """Looks models up by public name or Hub id, case-insensitively."""

    def __init__(self, models: tuple[ModelSpec, ...] = MODELS, *, default: str) -> None:
        self.models = models
        self._index: dict[str, ModelSpec] = {}
        for spec in models:
            self._index[spec.name.lower()] = spec
            self._index[spec.hub_id.lower()] = spec
        self.default = self.resolve(default)

    def resolve(self, name: str | None) -> ModelSpec:
        """The model called ``name`` (the default when None); raises UnknownModel otherwise."""
        if name is None:
            return self.default
        spec = self._index.get(name.strip().lower())
        if spec is None:
            valid = ", ".join(m.name for m in self.models)
            raise UnknownModel(f"unknown model {name[:80]!r}; use one of: {valid}")
        return spec
