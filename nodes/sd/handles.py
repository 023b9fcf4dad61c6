"""The values that flow between Stable Diffusion nodes: small typed handles, never bare modules.

A handle names a shared, cached model plus what a run wants done with it (LoRA patches, ControlNet
hints, embeddings). Handles are immutable: a node that "patches" a model returns a new handle, and the
node that runs the model applies the patches for that call only, so a cached model is never left
changed (InvokeAI's idea). Values that the editor inspects implement `__loom_summary__` and, for
latents, `__loom_preview__` (a cheap latent -> RGB projection).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

# Families: what a latent / conditioning was made for. Models of one family share latent space and
# text width; mixing families is the classic silent mistake, so every stage checks it.
FAMILY_NAMES = {"sd15": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sdxl-refiner": "SDXL refiner",
                "loom-shapes": "loom-shapes"}


def family_label(family: str | None) -> str:
    return FAMILY_NAMES.get(family or "", family or "unknown")


# SD 1.x and 2.x share one VAE, so their latents are interchangeable even though their text is not; so do the
# SDXL base and refiner (the refiner takes the base's latents, but its own OpenCLIP-G-only conditioning).
_LATENT_SPACE = {"sd15": "sd", "sd2": "sd", "sdxl-refiner": "sdxl"}


def latent_space(family: str | None) -> str | None:
    return _LATENT_SPACE.get(family or "", family)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _module_summary(module: torch.nn.Module) -> dict[str, Any]:
    p = next(module.parameters(), None)
    return {"class": type(module).__name__, "parameters": _params(module),
            "dtype": str(p.dtype).replace("torch.", "") if p is not None else None,
            "device": str(p.device) if p is not None else None}


@dataclass(frozen=True, eq=False)
class UNetHandle:
    """A denoising UNet plus what applies to it for a run (LoRA patches)."""

    model: torch.nn.Module
    family: str
    prediction_type: str
    scheduler_config: dict
    source: str = ""
    patches: tuple = ()  # LoRA patch descriptions, applied by the node that runs the model
    arch: str = ""
    hooks: tuple = ()  # changes to the forward pass (FreeU), installed by the node that runs the model
    cfg_rescale: float = 0.0  # ComfyUI's RescaleCFG multiplier: guidance rescaled in v space (0 = off)

    def with_patch(self, patch: Any) -> "UNetHandle":
        return replace(self, patches=self.patches + (patch,))

    def with_hook(self, hook: Any) -> "UNetHandle":
        return replace(self, hooks=self.hooks + (hook,))

    @property
    def in_channels(self) -> int:
        return int(self.model.config.in_channels)

    @property
    def is_sdxl(self) -> bool:
        return getattr(self.model.config, "addition_embed_type", None) == "text_time"

    def time_id_count(self, pooled_width: int) -> int | None:
        """How many SDXL time ids the add-embedding takes next to pooled text of this width: 6 (original size,
        crop, target size; base and inpainting) or 5 (original size, crop, aesthetic score; refiner)."""
        cfg = self.model.config
        per_id = getattr(cfg, "addition_time_embed_dim", None)
        total = getattr(cfg, "projection_class_embeddings_input_dim", None)
        if not per_id or not total or (total - pooled_width) % per_id:
            return None
        return (total - pooled_width) // per_id

    def __loom_summary__(self) -> dict[str, Any]:
        return {"kind": "handle", "model": "UNet", "family": family_label(self.family), "source": self.source,
                "prediction_type": self.prediction_type, "patches": [repr(p) for p in self.patches],
                "hooks": [repr(h) for h in self.hooks], **_module_summary(self.model)}

    def __loom_nbytes__(self) -> int:  # the model lives in the model cache, not the output cache
        return 256


@dataclass(frozen=True, eq=False)
class TextEncoderHandle:
    """Tokenizer(s) and text encoder(s): one pair for SD 1.x/2.x, two for SDXL."""

    tokenizers: tuple
    encoders: tuple
    family: str
    source: str = ""
    patches: tuple = ()
    embeddings: tuple = ()  # textual inversion embeddings to add for a run
    clip_skip: int = 0

    def with_patch(self, patch: Any) -> "TextEncoderHandle":
        return replace(self, patches=self.patches + (patch,))

    def __loom_summary__(self) -> dict[str, Any]:
        return {"kind": "handle", "model": "TextEncoder", "family": family_label(self.family), "source": self.source,
                "encoders": [_module_summary(e) for e in self.encoders], "clip_skip": self.clip_skip,
                "patches": [repr(p) for p in self.patches], "embeddings": [repr(e) for e in self.embeddings]}

    def __loom_nbytes__(self) -> int:
        return 256


@dataclass(frozen=True, eq=False)
class VAEHandle:
    model: torch.nn.Module
    family: str
    source: str = ""

    @property
    def scaling_factor(self) -> float:
        return float(self.model.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        return float(getattr(self.model.config, "shift_factor", None) or 0.0)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.model.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.model.config.latent_channels)

    def __loom_summary__(self) -> dict[str, Any]:
        return {"kind": "handle", "model": "VAE", "family": family_label(self.family), "source": self.source,
                "scaling_factor": self.scaling_factor, **_module_summary(self.model)}

    def __loom_nbytes__(self) -> int:
        return 256


# Approximate linear maps from 4 latent channels to RGB, for previews only (published community
# estimates); families without one get a per-channel normalisation of the first three channels.
_LATENT_RGB = {
    "sd15": ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),
    "sdxl": ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011]),
}
_LATENT_RGB["sd2"] = _LATENT_RGB["sd15"]
_LATENT_RGB["sdxl-refiner"] = _LATENT_RGB["sdxl"]


def latent_to_rgb(samples: torch.Tensor, family: str | None) -> torch.Tensor:
    """[B,C,h,w] model-space latents -> [B,h,w,3] in 0..1, cheaply (no VAE)."""
    x = samples.detach().float().cpu()
    if family in _LATENT_RGB and x.shape[1] == 4:
        w, b = _LATENT_RGB[family]
        rgb = torch.einsum("bchw,cr->bhwr", x, torch.tensor(w)) + torch.tensor(b)
        return ((rgb + 1) / 2).clamp(0, 1)
    c = x[:, :3] if x.shape[1] >= 3 else x[:, :1].repeat(1, 3, 1, 1)
    lo = c.amin(dim=(2, 3), keepdim=True)
    hi = c.amax(dim=(2, 3), keepdim=True)
    return ((c - lo) / (hi - lo + 1e-6)).permute(0, 2, 3, 1)


@dataclass(frozen=True, eq=False)
class Latent:
    """Latents in model space (already multiplied by the VAE's scaling factor), with their family.

    `noise_mask` ([B,1,h,w], 1 = repaint) makes samplers blend the original back where it is 0 (inpainting
    with a regular UNet). `inpaint` holds [mask, masked-image latents] for 9-channel inpainting UNets.
    """

    samples: torch.Tensor
    family: str | None = None
    noise_mask: torch.Tensor | None = None
    inpaint: torch.Tensor | None = None
    downscale: int = 8  # image pixels per latent pixel (the VAE's; every SD VAE: 8, loom-shapes: 4)

    def with_samples(self, samples: torch.Tensor) -> "Latent":
        return replace(self, samples=samples)

    def __loom_summary__(self) -> dict[str, Any]:
        s = self.samples
        return {"kind": "latent", "family": family_label(self.family), "shape": list(s.shape),
                "image_size": [s.shape[-1] * self.downscale, s.shape[-2] * self.downscale],
                "dtype": str(s.dtype).replace("torch.", ""), "device": str(s.device),
                "min": float(s.min()), "max": float(s.max()), "mean": float(s.float().mean()),
                "noise_mask": self.noise_mask is not None, "inpaint": self.inpaint is not None}

    def __loom_preview__(self):
        from PIL import Image

        rgb = latent_to_rgb(self.samples[:1], self.family)[0]
        return Image.fromarray((rgb.numpy() * 255).round().astype("uint8"))


@dataclass(frozen=True, eq=False)
class ControlHint:
    """One ControlNet applied to a conditioning: model, control image, strength and the step range."""

    controlnet: Any  # ControlNetHandle
    image: torch.Tensor  # [B,H,W,3] in 0..1
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    by_noise_level: bool = False  # start/end as ComfyUI's percentages of the noise levels, else of the steps (diffusers)


@dataclass(frozen=True, eq=False)
class Conditioning:
    """Text embeddings for one side of classifier-free guidance.

    `pooled` and the size fields are SDXL's extra conditioning; sizes left None mean "the size being
    generated", as diffusers' SDXL pipeline does. `aesthetic_score` is the SDXL refiner's (it replaces the
    target size); None means diffusers' defaults, 6.0 for the positive and 2.5 for the negative side.
    """

    embeds: torch.Tensor  # [B, tokens, width]
    family: str
    pooled: torch.Tensor | None = None
    original_size: tuple[int, int] | None = None
    crop_coords: tuple[int, int] = (0, 0)
    target_size: tuple[int, int] | None = None
    controls: tuple[ControlHint, ...] = ()
    aesthetic_score: float | None = None
    # ConditioningCombine: more prompts whose noise predictions are averaged with this one's, step by step
    combined: tuple["Conditioning", ...] = ()
    # ConditioningSetTimestepRange: the part of the noise levels this prompt takes part in, [start, end] (fractions of
    # the training timesteps from the noisy end, ComfyUI's percentages; see denoise.active_at)
    start: float = 0.0
    end: float = 1.0
    # ConditioningSetMask: where (mask [B|1, H, W] in pixels, 0..1) and how strongly this prompt counts when
    # combined prompts' predictions are mixed
    mask: torch.Tensor | None = None
    mask_bounds: bool = False  # ComfyUI's set_cond_area "mask bounds": the model sees the box around the mask only
    strength: float = 1.0
    # ConditioningSetArea: (x, y, width, height) in pixels; the model sees only that part of the latents
    area: tuple[int, int, int, int] | None = None
    # ConditioningSetAreaPercentage: the same as fractions of the image (at most one of the two is set)
    area_fraction: tuple[float, float, float, float] | None = None
    # ApplyIPAdapter: IP-Adapter image prompts (nodes/sd/ip_adapter.ImagePrompt), applied by the node that runs the
    # UNet to this conditioning's rows of each call (and, mirrored, to the other side's rows under guidance)
    image_prompts: tuple = ()

    def __loom_summary__(self) -> dict[str, Any]:
        e = self.embeds
        return {"kind": "conditioning", "family": family_label(self.family), "shape": list(e.shape),
                "dtype": str(e.dtype).replace("torch.", ""), "device": str(e.device),
                "min": float(e.min()), "max": float(e.max()), "mean": float(e.float().mean()),
                "pooled": list(self.pooled.shape) if self.pooled is not None else None,
                "controls": len(self.controls), "combined": len(self.combined), "image_prompts": len(self.image_prompts),
                "steps": [self.start, self.end]}


@dataclass(frozen=True)
class NoiseSpec:
    """A seed: the noise itself is drawn by the sampler, on the CPU, once the latent shape is known. `add` False
    (ComfyUI's DisableNoise) takes the latent as already noisy: nothing is added."""

    seed: int
    add: bool = True

    def generator(self) -> torch.Generator:
        return torch.Generator("cpu").manual_seed(self.seed)


@dataclass(frozen=True, eq=False)
class VFrame:
    """A step's latents in the model's (variance-preserving) scale with alpha_t and sigma_t, so a noise prediction
    can be written as a v prediction (Salimans & Ho 2022): v = (eps - sigma x) / alpha, eps = alpha v + sigma x."""

    multiplier: float
    sample: torch.Tensor  # x_t, as the UNet sees it
    alpha: float
    sigma: float
    prediction_type: str  # of the model output: epsilon or v_prediction

    def to_v(self, out: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "v_prediction":
            return out
        return (out - self.sigma * self.sample) / self.alpha

    def from_v(self, v: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "v_prediction":
            return v
        return self.alpha * v + self.sigma * self.sample


@dataclass(eq=False)
class NoisePrediction:
    """What the UNet predicted for one step: the conditional and (with CFG) unconditional halves."""

    cond: torch.Tensor
    uncond: torch.Tensor | None = None
    guided: torch.Tensor | None = None  # set by the guidance stage
    v_frame: VFrame | None = None  # set when the UNet asks for RescaleCFG: what converting to v space needs

    def result(self) -> torch.Tensor:
        if self.guided is not None:
            return self.guided
        return self.cond

    def __loom_summary__(self) -> dict[str, Any]:
        t = self.result()
        return {"kind": "tensor", "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                "device": str(t.device), "min": float(t.min()), "max": float(t.max()), "mean": float(t.float().mean()),
                "guided": self.guided is not None}


@dataclass(frozen=True)
class SchedulerSpec:
    """A configured scheduler (a recipe): algorithm, sigma spacing, steps and denoise strength.

    Diffusers schedulers hold state, so each sampling run builds its own instance from this recipe.
    """

    name: str
    class_name: str
    config: tuple  # sorted (key, value) pairs of the scheduler config, hashable
    steps: int
    denoise: float = 1.0
    eta: float = 0.0

    def config_dict(self) -> dict:
        return dict(self.config)

    def __loom_summary__(self) -> dict[str, Any]:
        return {"kind": "value", "scheduler": self.name, "class": self.class_name, "steps": self.steps,
                "denoise": self.denoise, "eta": self.eta,
                "prediction_type": self.config_dict().get("prediction_type")}


@dataclass(eq=False)
class SamplerState:
    """The live state of one denoise loop, passed to the loop body's stage nodes each step."""

    scheduler: Any
    timesteps: torch.Tensor
    generator: torch.Generator
    spec: SchedulerSpec
    device: torch.device
    dtype: torch.dtype
    step_kwargs: dict = field(default_factory=dict)
    init_latents: torch.Tensor | None = None  # for mask blending
    noise: torch.Tensor | None = None
    noise_mask: torch.Tensor | None = None
    inpaint: torch.Tensor | None = None
    image_size: tuple[int, int] = (0, 0)
    total: int = 0

    def __loom_summary__(self) -> dict[str, Any]:
        return {"kind": "value", "scheduler": type(self.scheduler).__name__, "steps": self.total,
                "timesteps": [float(t) for t in self.timesteps[:50]]}

    def __loom_nbytes__(self) -> int:
        return 1024
