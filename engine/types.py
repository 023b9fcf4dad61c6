"""Socket types: the names that say what may flow along a link, and the rule for what may connect.

A socket type is a small frozen value, not a Python class of the data it carries: the engine never
inspects tensors, it only checks names. Node functions use the type objects directly as annotations
(`def vae_decode(vae: VAE, latent: LATENT) -> IMAGE`). The editor gets the same table (name, colour,
super-types) through `export_types()`, so its connection rule and ours are one rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SocketType:
    """A named socket type; `supertypes` lets e.g. an inpainting UNET connect where a UNET is expected."""

    name: str
    color: str = "#9e9e9e"
    description: str = ""
    supertypes: tuple[str, ...] = field(default=())

    def __repr__(self) -> str:  # shows up in error messages and docs
        return self.name

    def __or__(self, other: object) -> "OptionalSocket":
        """`MASK | None` declares an optional socket input."""
        if other is None:
            return OptionalSocket(self)
        return NotImplemented


@dataclass(frozen=True)
class OptionalSocket:
    """What `SOCKET | None` evaluates to: an input that may be left unconnected."""

    inner: SocketType


_TYPES: dict[str, SocketType] = {}


def socket_type(name: str, color: str = "#9e9e9e", description: str = "", supertypes: tuple[str, ...] = ()) -> SocketType:
    """Declare (or fetch, if identical) a socket type. Redeclaring a name differently is a bug, so it raises."""
    existing = _TYPES.get(name)
    new = SocketType(name, color, description, tuple(supertypes))
    if existing is not None:
        if existing != new:
            raise ValueError(f"socket type {name!r} is already declared differently: {existing!r}")
        return existing
    for parent in supertypes:
        if parent not in _TYPES:
            raise ValueError(f"socket type {name!r} names unknown super-type {parent!r}")
    _TYPES[name] = new
    _COMPAT_CACHE.clear()  # an answer cached before this declaration (e.g. "unknown -> False") is stale
    return new


def get_type(name: str) -> SocketType | None:
    return _TYPES.get(name)


def _ancestors(name: str) -> set[str]:
    seen: set[str] = set()
    stack = [name]
    while stack:
        t = _TYPES.get(stack.pop())
        if t is None:
            continue
        for parent in t.supertypes:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


_COMPAT_CACHE: dict[tuple[str, str], bool] = {}


def can_connect(output_type: str, input_type: str) -> bool:
    """May an output of `output_type` feed an input of `input_type`?

    Same type; ANY on either side; INT into FLOAT (widening, never the reverse); or a declared
    super-type of the output (a sub-type is usable wherever its parent is).
    """
    key = (output_type, input_type)
    hit = _COMPAT_CACHE.get(key)
    if hit is not None:
        return hit
    ok = (
        output_type == input_type
        or ANY.name in (output_type, input_type)
        or (output_type == INT.name and input_type == FLOAT.name)
        or input_type in _ancestors(output_type)
    )
    _COMPAT_CACHE[key] = ok
    return ok


def export_types() -> list[dict]:
    """The type table for the editor and the API: name, colour hint, super-types, description."""
    return [
        {"name": t.name, "color": t.color, "supertypes": list(t.supertypes), "description": t.description}
        for t in sorted(_TYPES.values(), key=lambda t: t.name)
    ]


# --- primitives: these may be literals (widgets) as well as links ----------------------------------------
ANY = socket_type("*", "#bdbdbd", "Anything; used by pass-through and debugging nodes.")
INT = socket_type("INT", "#7cb342", "An integer.")
FLOAT = socket_type("FLOAT", "#43a047", "A real number.")
STRING = socket_type("STRING", "#8d6e63", "Text.")
BOOLEAN = socket_type("BOOLEAN", "#5c6bc0", "True or false.")

PRIMITIVE_TYPES: dict[type, SocketType] = {int: INT, float: FLOAT, str: STRING, bool: BOOLEAN}

# --- data that flows between the stages of latent diffusion ---------------------------------------------
IMAGE = socket_type("IMAGE", "#64b5f6", "Images: float tensor [batch, height, width, channels] in 0..1.")
MASK = socket_type("MASK", "#81c784", "Masks: float tensor [batch, height, width] in 0..1 (1 = change).")
LATENT = socket_type("LATENT", "#ff80ab", "Latents with their model family and scale.")
NOISE = socket_type("NOISE", "#b0bec5", "Seeded noise, drawn on the CPU so a seed gives one image on any device.")
TOKENS = socket_type("TOKENS", "#ffb74d", "Token ids in 77-token windows, with weights.")
CONDITIONING = socket_type("CONDITIONING", "#ffa726", "Text embeddings (and SDXL's pooled / size conditioning).")
UNET = socket_type("UNET", "#b39ddb", "A denoising UNet handle (with any LoRA / ControlNet patches to apply).")
TEXT_ENCODER = socket_type("TEXT_ENCODER", "#ffd54f", "Tokenizer(s) + text encoder(s) handle.")
VAE = socket_type("VAE", "#ef5350", "An autoencoder handle.")
SCHEDULER = socket_type("SCHEDULER", "#4db6ac", "A configured scheduler: algorithm, sigmas, steps.")
TIMESTEP = socket_type("TIMESTEP", "#26a69a", "The current timestep of a denoise loop.")
SAMPLER = socket_type("SAMPLER", "#009688", "The live state of a denoise loop: scheduler instance, timesteps, noise generator.")
SAMPLER_ALGO = socket_type("SAMPLER_ALGO", "#80cbc4", "A sampling algorithm by name (ComfyUI's KSamplerSelect).")
SIGMAS = socket_type("SIGMAS", "#4dd0e1", "A sigma schedule: a recipe (spacing, steps, denoise: BasicScheduler) or an explicit sigma list (KarrasScheduler, ...), or a part of one (SplitSigmas).")
GUIDER = socket_type("GUIDER", "#ffab91", "A model with its conditioning and guidance scale (ComfyUI's CFGGuider).")
NOISE_PRED = socket_type("NOISE_PRED", "#ce93d8", "A model's prediction for one step (epsilon, v or sample).")
CONTROL_NET = socket_type("CONTROL_NET", "#00bcd4", "A ControlNet model handle.")
LORA = socket_type("LORA", "#9575cd", "A LoRA patch description.")
UPSCALE_MODEL = socket_type("UPSCALE_MODEL", "#ba68c8",
                            "An image upscaling model (ESRGAN, Real-ESRGAN, Real-ESRGAN Compact) and its scale.")
EMBEDDING = socket_type("EMBEDDING", "#ffcc80", "Textual inversion embeddings.")
CLIP_MODEL = socket_type("CLIP_MODEL", "#fff176", "A CLIP model for evaluation.")
METRICS = socket_type("METRICS", "#90a4ae", "Evaluation numbers (per item and summary).")
