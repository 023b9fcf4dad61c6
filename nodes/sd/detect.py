"""Which model a checkpoint is, from its keys and shapes alone, and the configs that describe it.

Architectures (``ARCHS``): ``sd15``, ``sd15-inpaint``, ``sd2``, ``sd2-v``, ``sd2-inpaint``, ``sdxl``,
``sdxl-inpaint`` and ``sdxl-refiner``, each with a configs-only diffusers folder in ``configs/`` (no weights).
Detection reads the UNet's input channels, cross-attention width and added embeddings and the text encoders'
widths; sizes the weights do tell (channels, layers, transformer depths) are read off them, so narrow or
unusual files load with their own sizes; what they do not tell comes from the shipped config, from
``latentloom.config`` metadata, or from a guess. Nothing here loads weights: `loading.py` does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import ldm_convert as lc

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
ARCHS: tuple[str, ...] = lc.ARCHS
TEXT_ENCODER_NAMES = ("text_encoder", "text_encoder_2")

class CheckpointError(Exception):
    """A checkpoint could not be loaded; the message says what was found."""


class ModelNotFoundError(CheckpointError, FileNotFoundError):
    """A model file or folder (or a part of one) is missing; the message lists what the folder holds."""


class UnknownArchitectureError(CheckpointError, ValueError):
    """The weights are not one of ``ARCHS``; the message names the prefixes and sizes that were found."""



# ----------------------------------------------------------------------------------------------- configs

def config_dir(arch: str) -> Path:
    """The shipped configs-only diffusers folder for ``arch`` (usable as ``from_single_file(config=...)``)."""
    if arch not in ARCHS:
        raise UnknownArchitectureError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    return CONFIG_ROOT / arch


def component_configs(arch: str) -> dict[str, dict[str, Any]]:
    """Fresh copies of the shipped configs: ``model_index``, ``unet``, ``vae``, ``text_encoder[_2]``, ``scheduler``."""
    root = config_dir(arch)
    out = {"model_index": json.loads((root / "model_index.json").read_text())}
    for sub in ("unet", "vae", *TEXT_ENCODER_NAMES):
        if (root / sub / "config.json").is_file():
            out[sub] = json.loads((root / sub / "config.json").read_text())
    out["scheduler"] = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    return out



# ------------------------------------------------------------------------------------------ detection

Shapes = Mapping[str, Sequence[int]]




def _as_shapes(keys_and_shapes: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in keys_and_shapes.items()}


# ------------------------------------------------------------------------------------------- detection

def _prefix(key: str) -> str:
    parts = key.split(".")
    n = 3 if parts[0] == "conditioner" else 2 if parts[0] in ("model", "cond_stage_model") else 1
    return ".".join(parts[:n])


def _prefix_summary(shapes: Shapes, limit: int = 8) -> str:
    counts: dict[str, int] = {}
    for k in shapes:
        counts[_prefix(k)] = counts.get(_prefix(k), 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{p} ({n})" for p, n in top[:limit])
    return text + (f", ... ({len(top) - limit} more)" if len(top) > limit else "") if top else "(no tensors)"


def _sub(shapes: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}


def _distinct(keys: Any, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def _unet_facts(shapes: Shapes) -> dict[str, Any]:
    """What the UNet weights say, for detection and for error messages."""
    u = _sub(shapes, lc.UNET_PREFIX)
    facts: dict[str, Any] = {}
    if "input_blocks.0.0.weight" in u:
        facts["in_channels"] = u["input_blocks.0.0.weight"][1]
    ctx = next((v[1] for k, v in sorted(u.items()) if k.endswith("attn2.to_k.weight")), None)
    if ctx is not None:
        facts["context_dim"] = ctx
    proj = next((v for k, v in sorted(u.items()) if k.endswith("proj_in.weight")), None)
    if proj is not None:
        facts["linear_proj"] = len(proj) == 2
    facts["adm"] = "label_emb.0.0.weight" in u
    return facts


def _text_kind(shapes: Shapes) -> str | None:
    keys = list(shapes)
    if any(k.startswith("conditioner.embedders.") for k in keys):
        has0 = any(k.startswith(lc.SDXL_CLIP_PREFIX) for k in keys)
        has1 = any(k.startswith(lc.SDXL_OPENCLIP_PREFIX) for k in keys)
        refiner = any(k.startswith(lc.SDXL_REFINER_OPENCLIP_PREFIX) for k in keys)
        if has0 and has1 and not refiner:
            return "sdxl"
        if refiner and not has0 and not has1:
            return "sdxl-refiner"
        return "sdxl-other"
    if any(k.startswith(lc.SD2_OPENCLIP_PREFIX) for k in keys):
        return "openclip"
    if any(k.startswith(lc.SD_CLIP_PREFIX) for k in keys):
        return "clip"
    return None


def _metadata_config(metadata: Mapping[str, str] | None) -> dict[str, Any]:
    raw = (metadata or {}).get(lc.CONFIG_METADATA_KEY)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _normalise_prediction(value: Any) -> str | None:
    text = str(value).strip().lower() if value is not None else ""
    return {"v": "v_prediction", "v_prediction": "v_prediction", "v-prediction": "v_prediction",
            "epsilon": "epsilon", "eps": "epsilon", "sample": "sample", "true": "v_prediction",
            "false": "epsilon"}.get(text)


def _prediction_hint(metadata: Mapping[str, str] | None, source: str | Path | None) -> tuple[str | None, str]:
    """Prediction type from metadata or a sidecar yaml; (None, "") when nothing says."""
    meta = metadata or {}
    ours = _metadata_config(meta)
    sched = ours.get("scheduler") if isinstance(ours.get("scheduler"), dict) else {}
    if (p := _normalise_prediction(sched.get("prediction_type"))) is not None:
        return p, f"{lc.CONFIG_METADATA_KEY} metadata"
    if ours.get("arch") in ("sd2", "sd2-v"):
        return ("v_prediction" if ours["arch"] == "sd2-v" else "epsilon"), f"{lc.CONFIG_METADATA_KEY} metadata"
    if (p := _normalise_prediction(meta.get("modelspec.prediction_type"))) is not None:
        return p, "modelspec.prediction_type metadata"
    spec_arch = meta.get("modelspec.architecture", "")
    if spec_arch.endswith("-v") or "-v/" in spec_arch:
        return "v_prediction", "modelspec.architecture metadata"
    if "ss_v_parameterization" in meta:
        return _normalise_prediction(meta["ss_v_parameterization"]) or "epsilon", "ss_v_parameterization metadata"
    if source is not None:
        yaml = Path(source).with_suffix(".yaml")
        if yaml.is_file():
            text = yaml.read_text(errors="replace")
            if re.search(r"parameterization:\s*[\"']?v[\"']?\s*$", text, re.M):
                return "v_prediction", f"sidecar {yaml.name}"
            return "epsilon", f"sidecar {yaml.name}"
    return None, ""


def _sd2_prediction(source: str | Path | None) -> tuple[str, str]:
    name = Path(source).name.lower() if source is not None else ""
    if re.search(r"(?<!\d)768(?!\d)", name):
        return "v_prediction", "file name says 768"
    if re.search(r"(?<!\d)512(?!\d)|base", name):
        return "epsilon", "file name says 512/base"
    return "v_prediction", "SD2 default (768 v-prediction)"


_INPAINT_ARCH = {"sd15": "sd15-inpaint", "sd2": "sd2-inpaint", "sdxl": "sdxl-inpaint"}  # 9-channel UNets


def _family(shapes: Shapes) -> str:
    facts = _unet_facts(shapes)
    text = _text_kind(shapes)
    in_ch, ctx, linear = facts.get("in_channels"), facts.get("context_dim"), facts.get("linear_proj")

    def unknown(why: str) -> UnknownArchitectureError:
        found = ", ".join(f"{k}={v}" for k, v in facts.items() if k != "adm" or v)
        return UnknownArchitectureError(
            f"not a supported Stable Diffusion checkpoint ({why}); key prefixes: {_prefix_summary(shapes)}; "
            f"UNet: {found or 'none'}; text encoder layout: {text or 'none'}; supported: {', '.join(ARCHS)}"
        )

    if in_ch is None:
        hint = ""
        if any(k.startswith(("encoder.", "decoder.")) for k in shapes):
            hint = " - this looks like a standalone VAE, use load_vae()"
        elif any(k.startswith(("down_blocks.", "conv_in.")) for k in shapes):
            hint = " - this looks like a diffusers component file, not a whole checkpoint"
        raise unknown("no UNet under model.diffusion_model." + hint)
    if text == "sdxl-other":
        embedders = sorted({".".join(k.split(".")[:4]) for k in shapes if k.startswith("conditioner.embedders.")})
        raise unknown(f"conditioner.embedders holds {', '.join(embedders)}: neither CLIP-L + OpenCLIP-G "
                      f"(embedders.0.transformer + embedders.1.model, SDXL) nor OpenCLIP-G alone "
                      f"(embedders.0.model, SDXL refiner)")
    if text == "sdxl-refiner" or (text is None and facts["adm"] and ctx == 1280):
        family = "sdxl-refiner"
    elif text == "sdxl" or (text is None and facts["adm"] and ctx == 2048):
        family = "sdxl"
    elif facts["adm"]:
        raise unknown("UNet has a class/label embedding (label_emb) that no supported model uses")
    elif text == "openclip" or (text is None and (linear or ctx == 1024)):
        family = "sd2"
    elif text == "clip" or text is None:
        family = "sd15"
    else:  # pragma: no cover - all text kinds handled above
        raise unknown("unrecognised text encoder")
    if in_ch == 4:
        return family
    if in_ch == 9 and family in _INPAINT_ARCH:
        return _INPAINT_ARCH[family]
    raise unknown(f"UNet has {in_ch} input channels on the {family} architecture; supported: 4, and 9 "
                  f"(inpainting) for {', '.join(_INPAINT_ARCH)}")


def detect_architecture(
    keys_and_shapes: Mapping[str, Any],
    *,
    prediction_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
    source: str | Path | None = None,
) -> str:
    """One of ``ARCHS`` (``sd15``, ``sd2-v``, ``sdxl-refiner``...) from a single file's keys and shapes.

    ``keys_and_shapes`` maps key -> shape (or tensor). SD2 epsilon vs v follows the order in the module docstring;
    ``source`` (the file path) enables the file-name and sidecar-yaml hints.
    """
    shapes = _as_shapes(keys_and_shapes)
    family = _family(shapes)
    if family != "sd2":
        return family
    return "sd2-v" if _resolve_prediction("sd2", prediction_type, metadata, source)[0] == "v_prediction" else "sd2"


def _resolve_prediction(family: str, explicit: str | None, metadata: Mapping[str, str] | None,
                        source: str | Path | None, default: str = "epsilon") -> tuple[str, str]:
    if explicit is not None:
        p = _normalise_prediction(explicit)
        if p is None:
            raise ValueError(f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {explicit!r}")
        return p, "prediction_type argument"
    hint, why = _prediction_hint(metadata, source)
    if hint is not None:
        return hint, why
    if family == "sd2":
        return _sd2_prediction(source)
    return default, "shipped scheduler config"


# ------------------------------------------------------------------------------------- size inference

def _guess_heads(width: int, default: int | None = None) -> int:
    """Heads cannot be read from weights: head width 64 when it fits, else the default, else >= 8 per head."""
    if width % 64 == 0:
        return width // 64
    if default and width % default == 0:
        return default
    return max((h for h in range(1, width + 1) if width % h == 0 and width // h >= 8), default=1)


def _guess_unet_heads(channels: Sequence[int], default: Any) -> Any:
    if isinstance(default, int) and all(c % default == 0 for c in channels):
        return default
    if isinstance(default, (list, tuple)) and len(default) == len(channels) and all(
        c % h == 0 for c, h in zip(channels, default)
    ):
        return list(default)
    return [_guess_heads(c) for c in channels]


def _transformer_depth(u: Shapes, layers: list[int], down: list[str], base: Mapping[str, Any]) -> int | list[int]:
    """``transformer_layers_per_block`` from the per-level depths (1 where a level has no attention).

    diffusers gives the mid block the *last* entry's depth, so a last level without attention (the SDXL
    refiner's, 4 deep in the middle) must carry the mid block's depth. The shipped value wins when it builds the
    same model (the refiner ships ``4``), else: per level, 1 where no attention, one int when all are equal.
    """
    mid = _distinct(u, r"^middle_block\.1\.transformer_blocks\.(\d+)\.")
    attn = [i for i, kind in enumerate(down) if kind.startswith("CrossAttn")]
    shipped = base.get("transformer_layers_per_block", 1)
    expanded = [shipped] * len(down) if isinstance(shipped, int) else list(shipped)
    if len(expanded) == len(down) and all(expanded[i] == layers[i] for i in attn) and (not mid or expanded[-1] == mid):
        return shipped
    depth = list(layers)
    if mid and not down[-1].startswith("CrossAttn"):
        depth[-1] = mid
    return depth[0] if len(set(depth)) == 1 else depth


def _infer_unet(shapes: Shapes, base: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    u = _sub(shapes, lc.UNET_PREFIX)
    if "input_blocks.0.0.weight" not in u:
        return {}, {}
    facts: dict[str, Any] = {"in_channels": u["input_blocks.0.0.weight"][1]}
    if "out.2.weight" in u:
        facts["out_channels"] = u["out.2.weight"][0]
    blocks = {int(k.split(".")[1]) for k in u if k.startswith("input_blocks.")}
    ops = sorted(i for i in blocks if f"input_blocks.{i}.0.op.weight" in u)
    per_level = ops[0] - 1 if ops else max(blocks)
    stride = per_level + 1
    channels, down, up, layers = [], [], [], []
    for lvl in range(len(ops) + 1):
        first = 1 + lvl * stride
        channels.append(u[f"input_blocks.{first}.0.out_layers.3.weight"][0])
        n = _distinct(u, rf"^input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\.")
        down.append("CrossAttnDownBlock2D" if n else "DownBlock2D")
        layers.append(max(n, 1))
        n_up = _distinct(u, rf"^output_blocks\.{lvl * stride}\.1\.transformer_blocks\.(\d+)\.")
        up.append("CrossAttnUpBlock2D" if n_up else "UpBlock2D")
    facts.update(block_out_channels=channels, layers_per_block=per_level, down_block_types=down,
                 up_block_types=up, transformer_layers_per_block=_transformer_depth(u, layers, down, base))
    unet = _unet_facts(shapes)
    if "context_dim" in unet:
        facts["cross_attention_dim"] = unet["context_dim"]
    if "linear_proj" in unet:
        facts["use_linear_projection"] = unet["linear_proj"]
    if "label_emb.0.0.weight" in u:
        facts["projection_class_embeddings_input_dim"] = u["label_emb.0.0.weight"][1]
    guesses = {"attention_head_dim": _guess_unet_heads(channels, base.get("attention_head_dim"))}
    return facts, guesses


def _infer_vae(shapes: Shapes, prefix: str) -> dict[str, Any]:
    v = _sub(shapes, prefix)
    if "encoder.conv_in.weight" not in v:
        return {}
    ldm = any(k.startswith("encoder.down.") for k in v)
    pattern = r"^encoder\.down\.(\d+)\." if ldm else r"^encoder\.down_blocks\.(\d+)\."
    levels = _distinct(v, pattern)
    if ldm:
        per_level = _distinct(v, r"^encoder\.down\.0\.block\.(\d+)\.")
        channels = [v[f"encoder.down.{i}.block.0.conv2.weight"][0] for i in range(levels)]
        attn = "encoder.mid.attn_1.q.weight" in v
    else:
        per_level = _distinct(v, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\.")
        channels = [v[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"][0] for i in range(levels)]
        attn = "encoder.mid_block.attentions.0.to_q.weight" in v
    return {
        "block_out_channels": channels, "layers_per_block": per_level,
        "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
        "in_channels": v["encoder.conv_in.weight"][1], "out_channels": v["decoder.conv_out.weight"][0],
        "latent_channels": v["encoder.conv_out.weight"][0] // 2,
        "use_quant_conv": "quant_conv.weight" in v, "use_post_quant_conv": "post_quant_conv.weight" in v,
        "mid_block_add_attention": attn,
    }


def _infer_text(shapes: Shapes, kind: str, prefix: str, drop_last: bool, base: Mapping[str, Any]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    t = _sub(shapes, prefix)
    if kind == "clip":
        t = {k.removeprefix("text_model."): s for k, s in t.items()}
        tok, pos = t.get("embeddings.token_embedding.weight"), t.get("embeddings.position_embedding.weight")
        n_layers = _distinct(t, r"^encoder\.layers\.(\d+)\.")
        fc1 = t.get("encoder.layers.0.mlp.fc1.weight")
    else:
        tok, pos = t.get("token_embedding.weight"), t.get("positional_embedding")
        n_layers = _distinct(t, r"^transformer\.resblocks\.(\d+)\.")
        fc1 = t.get("transformer.resblocks.0.mlp.c_fc.weight")
    if tok is None or pos is None or fc1 is None or n_layers == 0:
        return {}, {}
    facts = {"vocab_size": tok[0], "hidden_size": tok[1], "max_position_embeddings": pos[0],
             "intermediate_size": fc1[0], "num_hidden_layers": max(n_layers - 1, 1) if drop_last else n_layers}
    if kind == "openclip" and "text_projection" in t and "WithProjection" in str(base.get("architectures")):
        facts["projection_dim"] = t["text_projection"][1]
    return facts, {"num_attention_heads": _guess_heads(tok[1], base.get("num_attention_heads"))}


def _infer(shapes: Shapes, arch: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    base = component_configs(arch)
    facts: dict[str, dict[str, Any]] = {}
    guesses: dict[str, dict[str, Any]] = {}
    facts["unet"], guesses["unet"] = _infer_unet(shapes, base["unet"])
    facts["vae"] = _infer_vae(shapes, lc.VAE_PREFIX)
    for name, (kind, prefix) in zip(lc.text_encoder_names(arch), lc.TEXT_ENCODER_LAYOUT[arch]):
        drop_last = kind == "openclip" and lc.is_sd2(arch)
        facts[name], guesses[name] = _infer_text(shapes, kind, prefix, drop_last, base[name])
    # SDXL: the add-embedding input is n time ids x addition_time_embed_dim + the pooled text width, with 6 ids
    # (original size, crop, target size) for the base and inpainting models, 5 (aesthetic score for the target
    # size) for the refiner
    pooled = facts.get("text_encoder_2", {}).get("projection_dim")
    add_in = facts["unet"].get("projection_class_embeddings_input_dim")
    n_ids = {"sdxl": 6, "sdxl-inpaint": 6, "sdxl-refiner": 5}.get(arch)
    if n_ids and pooled and add_in and (add_in - pooled) > 0 and (add_in - pooled) % n_ids == 0:
        facts["unet"]["addition_time_embed_dim"] = (add_in - pooled) // n_ids
    return facts, guesses


def infer_config_overrides(keys_and_shapes: Mapping[str, Any], arch: str) -> dict[str, dict[str, Any]]:
    """Per-component config values read (or, for heads, guessed) from the shapes of a single file."""
    facts, guesses = _infer(_as_shapes(keys_and_shapes), arch)
    return {c: {**guesses.get(c, {}), **facts.get(c, {})} for c in facts}


def _resolved_configs(shapes: Shapes, arch: str, metadata: Mapping[str, str] | None) -> dict[str, dict[str, Any]]:
    """shipped config <- guesses <- file metadata <- facts from the shapes (facts always win)."""
    configs = component_configs(arch)
    facts, guesses = _infer(shapes, arch)
    meta = _metadata_config(metadata)
    for comp, cfg in configs.items():
        if comp == "model_index":
            continue
        cfg.update(guesses.get(comp, {}))
        cfg.update({k: v for k, v in meta.get(comp, {}).items() if not k.startswith("_")} if isinstance(
            meta.get(comp), dict) else {})
        cfg.update(facts.get(comp, {}))
    return configs


# ----------------------------------------------------------------------------------------------- models
