"""The image models a job may ask for, and what each can do: the one table every check reads.

Sources (read 2026-12; re-check when adding a model or when Google changes a preview model):
- [IU] Vertex AI, "Image understanding", supported-models table
  (https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/image-understanding):
  Gemini 2.5 Flash Image: "Maximum images per prompt: 3", "Maximum image size: 7 MB", "Maximum number of
  output images per prompt: 10"; Gemini 3 Pro Image Preview: "Maximum images per prompt: 14", "Maximum file
  size per file for inline data ...: 7 MB", "Maximum number of output images per prompt: Limited to 32,768
  output tokens".
- [SDK] google-genai 3.3.0, `types.ImageConfig.image_size`: "Supported values are `1K`, `2K`, `4K`. If not
  specified, the model will use default value `1K`." (sent as `generationConfig.imageConfig.imageSize`).
- [PRO] Vertex AI model page "Gemini 3 Pro Image" (docs.cloud.google.com/vertex-ai/generative-ai/docs/models/
  gemini/3-pro-image-preview): 1K, 2K and 4K output. Gemini 2.5 Flash Image renders 1024 px images (1K) and
  has no size option: a request naming one is refused (the local Vertex server does the same).
- [US] Our own call pattern (generator_vertex.py since the first release): Gemini 3 Pro Image answers one
  image per call, so N variants are N parallel calls of candidateCount 1; Gemini 2.5 Flash Image takes
  candidateCount up to our 4 variants in one call (its output limit is 10 [IU]).
"""

from __future__ import annotations

from dataclasses import dataclass

from nano_banana.errors import InvalidRequest

RESOLUTIONS = ("1K", "2K", "4K")
# The long edge of each size at 1:1 ([PRO]: 1K is 1024x1024, 2K 2048x2048, 4K 4096x4096).
LONG_EDGE = {"1K": 1024, "2K": 2048, "4K": 4096}


@dataclass(frozen=True, slots=True)
class ModelCapabilities:
    name: str
    # Images in one request, the input included [IU]; references are the rest.
    max_images: int
    # The sizes a job may ask for; `sends_image_size`: whether the model takes imageSize [SDK] (a model
    # with one fixed size accepts that size and is sent nothing).
    resolutions: tuple[str, ...]
    sends_image_size: bool
    # Candidates one call may return (>1: the variants come from one call) [US].
    candidates_per_call: int
    # Each inline image at most this many bytes [IU].
    inline_max_bytes: int

    @property
    def max_references(self) -> int:
        return self.max_images - 1


CAPABILITIES: dict[str, ModelCapabilities] = {
    m.name: m
    for m in (
        ModelCapabilities(
            name="gemini-2.5-flash-image",
            max_images=3,  # [IU]
            resolutions=("1K",),  # [PRO]: 1024 px, no size option
            sends_image_size=False,
            candidates_per_call=4,  # [US], within [IU]'s 10
            inline_max_bytes=7_000_000,  # [IU]
        ),
        ModelCapabilities(
            name="gemini-3-pro-image-preview",
            max_images=14,  # [IU]
            resolutions=RESOLUTIONS,  # [SDK], [PRO]
            sends_image_size=True,
            candidates_per_call=1,  # [US]
            inline_max_bytes=7_000_000,  # [IU]
        ),
    )
}


def capabilities(name: str) -> ModelCapabilities | None:
    return CAPABILITIES.get(name)


def image_size(model: str | None, resolution: str | None) -> str | None:
    """What to send as `imageConfig.imageSize`: the asked size for a model that takes one, else nothing
    (Vertex refuses the field for a model without sizes; its one size is its default)."""
    caps = CAPABILITIES.get(model or "")
    return resolution if caps is not None and caps.sends_image_size else None


def check_allowlist(names: tuple[str, ...]) -> None:
    """Startup check of NANO_BANANA_MODELS: every model is in the table (its limits are known)."""
    unknown = [name for name in names if name not in CAPABILITIES]
    if unknown:
        raise ValueError(
            f"NANO_BANANA_MODELS: {', '.join(unknown)} not in the capability table (nano_banana/models.py); "
            f"known: {', '.join(CAPABILITIES)}"
        )


def choose(allowed: tuple[str, ...], model: str | None, resolution: str | None, references: int) -> str:
    """The job's model (the first allowed one when none is asked), after checking that it is allowed and
    takes the asked resolution and this many references; InvalidRequest (422) naming the model otherwise."""
    name = model or allowed[0]
    if name not in allowed:
        raise InvalidRequest(
            f"model {name[:100]!r} is not offered here", details={"field": "model", "allowed": list(allowed)}
        )
    caps = CAPABILITIES[name]
    if resolution is not None and resolution not in caps.resolutions:
        raise InvalidRequest(
            f"model {name} does not render {resolution[:10]!r} images",
            details={"field": "resolution", "model": name, "allowed": list(caps.resolutions)},
        )
    if references > caps.max_references:
        raise InvalidRequest(
            f"model {name} takes at most {caps.max_references} reference images; {references} were sent",
            details={"field": "reference", "model": name, "maxReferences": caps.max_references},
        )
    return name
