"""ComfyUI class types -> our nodes, for `POST /prompt` and `loom run` on ComfyUI API-format files.

The sampler and scheduler vocabularies differ: ComfyUI's `sampler_name` is our scheduler algorithm and
its `scheduler` is our sigma spacing; the tables live in nodes/sd/schedulers.py (documented in README).
"""

from __future__ import annotations

from engine.compat.comfy import CONTROL_AFTER_GENERATE, ComfyClass, register_comfy_class


def _sampler(value: str) -> str:
    from nodes.sd.schedulers import COMFY_SAMPLERS

    if value not in COMFY_SAMPLERS:
        raise ValueError(f"ComfyUI sampler_name {value!r} is not supported; supported: {', '.join(sorted(COMFY_SAMPLERS))}")
    return COMFY_SAMPLERS[value]


def _sigmas(value: str) -> str:
    from nodes.sd.schedulers import COMFY_SCHEDULERS

    if value not in COMFY_SCHEDULERS:
        raise ValueError(f"ComfyUI scheduler {value!r} is not supported; supported: {', '.join(sorted(COMFY_SCHEDULERS))}")
    return COMFY_SCHEDULERS[value]


def _ksampler(inputs: dict) -> dict:
    if "scheduler" in inputs:
        inputs["scheduler"] = _sampler(inputs["scheduler"])
    if "sigmas" in inputs:
        inputs["sigmas"] = _sigmas(inputs["sigmas"])
    return inputs


def _ksampler_advanced(inputs: dict) -> dict:
    inputs = _ksampler(inputs)
    if "add_noise" in inputs:
        inputs["add_noise"] = inputs["add_noise"] in ("enable", True)
    return inputs


def _clip_layer(inputs: dict) -> dict:
    stop = inputs.pop("stop_at_clip_layer", -1)
    inputs["clip_skip"] = max(0, -int(stop) - 1)
    return inputs


def _upscale(inputs: dict) -> dict:
    method = inputs.get("method")
    if method is not None:
        inputs["method"] = {"bislerp": "bilinear"}.get(method, method)
    return inputs


def _select(inputs: dict) -> dict:
    inputs["name"] = _sampler(inputs["name"])
    return inputs


def _basic_scheduler(inputs: dict) -> dict:
    inputs["sigmas"] = _sigmas(inputs["sigmas"])
    return inputs


def _custom(inputs: dict) -> dict:
    if "add_noise" in inputs:
        inputs["add_noise"] = bool(inputs["add_noise"])
    return inputs


def _tiled(inputs: dict) -> dict:
    inputs.setdefault("tiled", True)  # a client built on our /object_info may send it itself
    return inputs


def _comfy_samplers() -> list:
    from nodes.sd.schedulers import COMFY_SAMPLERS

    return list(COMFY_SAMPLERS)


def _comfy_schedulers() -> list:
    from nodes.sd.schedulers import COMFY_SCHEDULERS

    return list(COMFY_SCHEDULERS)


_VOCAB = {"sampler_name": _comfy_samplers, "scheduler": _comfy_schedulers}

_SAMPLE_INPUTS = {"model": "unet", "latent_image": "latent", "sampler_name": "scheduler", "scheduler": "sigmas"}
_ADVANCED_INPUTS = {**_SAMPLE_INPUTS, "noise_seed": "seed", "start_at_step": "start_step", "end_at_step": "end_step",
                    "return_with_leftover_noise": None}

# `widgets`: ComfyUI's widget order (what its editor saves in `widgets_values`), from INPUT_TYPES / define_schema in
# ComfyUI's nodes.py (loaders, CLIPTextEncode, CLIPSetLastLayer, EmptyLatentImage, KSampler*, VAE*, SetLatentNoiseMask,
# LatentUpscale*, LatentFromBatch, RepeatLatentBatch, LatentComposite, LatentBlend, SaveLatent, LoadLatent),
# comfy_extras/nodes_latent.py
# (LatentBatch), comfy_extras/nodes_clip_sdxl.py (CLIPTextEncodeSDXL*) and comfy_extras/nodes_custom_sampler.py
# (KSamplerSelect, BasicScheduler, CFGGuider, RandomNoise, SamplerCustom*). Its editor adds a control_after_generate
# widget after every `seed` / `noise_seed`.
# VAEDecodeTiled / VAEEncodeTiled (nodes.py): current ComfyUI saves tile_size, overlap, temporal_size, temporal_overlap,
# older versions tile_size alone (the missing ones are no inputs of ours). We tile as diffusers does, tiles overlapping by
# a quarter, so `overlap` is dropped; the temporal ones are for video VAEs only. LatentFlip, LatentRotate, LatentCrop
# (nodes.py) take `samples` where ours take `latent`; ConditioningZeroOut (nodes.py) is our ZeroConditioning.
_CAG = CONTROL_AFTER_GENERATE
_TILED_DROPPED = {"overlap": None, "temporal_size": None, "temporal_overlap": None}

TABLE = {
    "CheckpointLoaderSimple": ComfyClass("LoadCheckpoint", {"ckpt_name": "name"}, ["unet", "text_encoder", "vae"],
                                         widgets=("ckpt_name",)),
    # the legacy loader with an LDM yaml: the architecture is detected from the weights here, so the yaml is not needed
    "CheckpointLoader": ComfyClass("LoadCheckpoint", {"ckpt_name": "name", "config_name": None}, ["unet", "text_encoder", "vae"],
                                   widgets=("config_name", "ckpt_name")),
    "CLIPTextEncode": ComfyClass("EncodeText", {"clip": "text_encoder"}, ["conditioning"], widgets=("text",)),
    "CLIPTextEncodeSDXL": ComfyClass("EncodeTextSDXL", {"clip": "text_encoder", "width": "original_width",
                                                        "height": "original_height", "crop_w": "crop_left",
                                                        "crop_h": "crop_top"}, ["conditioning"],
                                     widgets=("width", "height", "crop_w", "crop_h", "target_width", "target_height",
                                              "text_g", "text_l")),
    "CLIPTextEncodeSDXLRefiner": ComfyClass("EncodeTextSDXL", {"clip": "text_encoder", "text": "text_g",
                                                               "ascore": "aesthetic_score", "width": "original_width",
                                                               "height": "original_height"}, ["conditioning"],
                                            widgets=("ascore", "width", "height", "text")),
    "CLIPSetLastLayer": ComfyClass("SetClipSkip", {"clip": "text_encoder"}, ["text_encoder"], convert=_clip_layer,
                                   widgets=("stop_at_clip_layer",)),
    "EmptyLatentImage": ComfyClass("EmptyLatent", {}, ["latent"], widgets=("width", "height", "batch_size")),
    "KSampler": ComfyClass("Sample", _SAMPLE_INPUTS, ["latent"], convert=_ksampler, choices=_VOCAB,
                           widgets=("seed", _CAG, "steps", "cfg", "sampler_name", "scheduler", "denoise")),
    "KSamplerAdvanced": ComfyClass("Sample", _ADVANCED_INPUTS, ["latent"], convert=_ksampler_advanced, choices=_VOCAB,
                                   widgets=("add_noise", "noise_seed", _CAG, "steps", "cfg", "sampler_name", "scheduler",
                                            "start_at_step", "end_at_step", "return_with_leftover_noise")),
    "VAEDecode": ComfyClass("VAEDecode", {"samples": "latent"}, ["image"]),
    "VAEEncode": ComfyClass("VAEEncode", {"pixels": "image"}, ["latent"]),
    "VAEDecodeTiled": ComfyClass("VAEDecode", {"samples": "latent", **_TILED_DROPPED}, ["image"], convert=_tiled,
                                 widgets=("tile_size", "overlap", "temporal_size", "temporal_overlap")),
    "VAEEncodeTiled": ComfyClass("VAEEncode", {"pixels": "image", **_TILED_DROPPED}, ["latent"], convert=_tiled,
                                 widgets=("tile_size", "overlap", "temporal_size", "temporal_overlap")),
    "LatentFlip": ComfyClass("LatentFlip", {"samples": "latent"}, ["latent"], widgets=("flip_method",)),
    "LatentRotate": ComfyClass("LatentRotate", {"samples": "latent"}, ["latent"], widgets=("rotation",)),
    "LatentCrop": ComfyClass("LatentCrop", {"samples": "latent"}, ["latent"], widgets=("width", "height", "x", "y")),
    "ConditioningZeroOut": ComfyClass("ZeroConditioning", {}, ["conditioning"]),
    "VAEEncodeForInpaint": ComfyClass("VAEEncodeForInpaint", {"pixels": "image"}, ["latent"], widgets=("grow_mask_by",)),
    "SetLatentNoiseMask": ComfyClass("SetLatentNoiseMask", {"samples": "latent"}, ["latent"]),
    "LatentFromBatch": ComfyClass("LatentFromBatch", {"samples": "latent"}, ["latent"], widgets=("batch_index", "length")),
    "RepeatLatentBatch": ComfyClass("RepeatLatentBatch", {"samples": "latent"}, ["latent"], widgets=("amount",)),
    "LatentBatch": ComfyClass("LatentBatch", {"samples1": "latent1", "samples2": "latent2"}, ["latent"]),
    "SaveLatent": ComfyClass("SaveLatent", {"samples": "latent"}, [], output_node=True, widgets=("filename_prefix",)),
    "LoadLatent": ComfyClass("LoadLatent", {}, ["latent"], widgets=("latent",)),
    "LatentComposite": ComfyClass("LatentComposite", {"samples_to": "latent_to", "samples_from": "latent_from"}, ["latent"],
                                  widgets=("x", "y", "feather")),
    "LatentBlend": ComfyClass("LatentBlend", {"samples1": "latent1", "samples2": "latent2"}, ["latent"],
                              widgets=("blend_factor",)),
    "VAELoader": ComfyClass("LoadVAE", {"vae_name": "name"}, ["vae"], widgets=("vae_name",)),
    "LatentUpscale": ComfyClass("LatentUpscale", {"samples": "latent", "upscale_method": "method", "crop": None}, ["latent"],
                                convert=_upscale, widgets=("upscale_method", "width", "height", "crop")),
    "LatentUpscaleBy": ComfyClass("LatentUpscaleBy", {"samples": "latent", "upscale_method": "method", "scale_by": "scale"},
                                  ["latent"], convert=_upscale, widgets=("upscale_method", "scale_by")),
    "KSamplerSelect": ComfyClass("SamplerSelect", {"sampler_name": "name"}, ["sampler"], convert=_select, choices=_VOCAB,
                                 widgets=("sampler_name",)),
    "BasicScheduler": ComfyClass("SigmaSchedule", {"model": "unet", "scheduler": "sigmas"}, ["sigmas"], convert=_basic_scheduler,
                                 choices=_VOCAB, widgets=("scheduler", "steps", "denoise")),
    "CFGGuider": ComfyClass("CFGGuider", {"model": "unet"}, ["guider"], widgets=("cfg",)),
    "RandomNoise": ComfyClass("Noise", {"noise_seed": "seed"}, ["noise"], widgets=("noise_seed", _CAG)),
    "SamplerCustom": ComfyClass("SampleParts", {"model": "unet", "noise_seed": "seed", "latent_image": "latent"}, ["latent", "latent"],
                                convert=_custom, widgets=("add_noise", "noise_seed", _CAG, "cfg")),
    "SamplerCustomAdvanced": ComfyClass("SampleGuided", {"latent_image": "latent"}, ["latent", "latent"]),
    # comfy_extras/nodes_custom_sampler.py's sigma generators: KarrasScheduler, ExponentialScheduler,
    # PolyexponentialScheduler, VPScheduler, FlipSigmas and SetFirstSigma are our nodes of the same names and inputs;
    # SDTurboScheduler takes the model as `unet`.
    "SDTurboScheduler": ComfyClass("SDTurboScheduler", {"model": "unet"}, ["sigmas"], widgets=("steps", "denoise")),
}

for _name, _spec in TABLE.items():
    register_comfy_class(_name, _spec)
