"""Mask nodes, ComfyUI's mask family under its class names: load, convert, solid, invert, crop, composite,
feather, grow, threshold. Masks are [batch, height, width] in 0..1 (1 = change); a 2-D mask is one of batch 1."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.compat.comfy import UPLOAD, ComfyClass, register_comfy_class
from engine.node import Choices, NodeContext, NodeError, Outputs, Widget, node
from engine.types import IMAGE, MASK
from nodes.image import MAX_SIZE, _input_fingerprint, _input_images, read_input_image

LoadChannel = Literal["alpha", "red", "green", "blue"]  # ComfyUI's LoadImageMask order (alpha first: its default)
ImageChannel = Literal["red", "green", "blue", "alpha"]  # ComfyUI's ImageToMask order
Operation = Literal["multiply", "add", "subtract", "and", "or", "xor"]
Pixels = Annotated[int, Field(0, ge=0, le=MAX_SIZE)]  # an offset or a band width in pixels


def _masks(mask, name: str = "mask"):
    """A MASK as [batch, height, width]: 2-D masks (older files, other nodes) become a batch of 1."""
    import torch

    if not isinstance(mask, torch.Tensor):
        raise NodeError(f"{name} must be a mask tensor, got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[-1] == 0 or mask.shape[-2] == 0:
        raise NodeError(f"{name} must be a mask of shape [batch, height, width], got shape {tuple(mask.shape)}")
    return mask if mask.is_floating_point() else mask.float()


def _images(image, name: str = "image"):
    import torch

    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise NodeError(f"{name} must be an image of shape [batch, height, width, channels], got {shape}")
    return image


def _channel(channel: str, options: tuple[str, ...], name: str = "channel") -> int:
    if channel not in options:
        raise NodeError(f"{name} {channel!r} is not one of {', '.join(options)}")
    return ("red", "green", "blue", "alpha").index(channel)


def _at_least(value: int, low: int, name: str) -> None:
    """Range checks for values that arrive through links (literal widgets are checked before the run)."""
    if value < low:
        raise NodeError(f"{name} must be at least {low}, got {value}")


@node(category="mask", fingerprint=_input_fingerprint, display_name="Load Image (as Mask)")
def load_image_mask(image: Annotated[str, Choices(_input_images), Widget(upload="image")], ctx: NodeContext,
                    channel: LoadChannel = "alpha") -> MASK:
    """Load one channel of an image from the input folder as a MASK: alpha gives 1 - alpha (transparent = 1).

    A colour channel gives its value as is; an image without alpha asked for alpha gives zeros (nothing to
    change), as in ComfyUI. 16-bit greyscale keeps its full precision (value / 65535)."""
    index = _channel(channel, ("alpha", "red", "green", "blue"))
    rgb, mask = read_input_image(image, ctx)  # mask = 1 - alpha, zeros without alpha
    return mask if index == 3 else rgb[..., index].contiguous()


@node(category="mask", display_name="Convert Image to Mask")
def image_to_mask(image: IMAGE, channel: ImageChannel = "red") -> MASK:
    """One channel of an image as a MASK, its values as they are (alpha too: not inverted, unlike LoadImageMask)."""
    image = _images(image)
    index = _channel(channel, ("red", "green", "blue", "alpha"))
    if index >= image.shape[-1]:
        raise NodeError(f"channel {channel!r} needs an image with {index + 1} channels, this one has {image.shape[-1]} "
                        "(LoadImage gives an image's alpha as its mask output)")
    return image[..., index].contiguous()


@node(category="mask", display_name="Convert Mask to Image")
def mask_to_image(mask: MASK) -> IMAGE:
    """A MASK as a grey image (the mask in all three channels), to preview, save or composite it."""
    mask = _masks(mask)
    return mask[..., None].expand(-1, -1, -1, 3).contiguous()


@node(category="mask")
def image_color_to_mask(image: IMAGE, color: Annotated[int, Field(0, ge=0, le=0xFFFFFF, description="0xRRGGBB")] = 0) -> MASK:
    """1 where a pixel is exactly `color` (its RGB rounded to 0..255), 0 elsewhere: masks from flat-colour maps."""
    from nodes.impl.masks import color_match

    image = _images(image)
    if image.shape[-1] < 3:
        raise NodeError(f"image must have 3 colour channels to match a colour, this one has {image.shape[-1]}")
    if not 0 <= color <= 0xFFFFFF:
        raise NodeError(f"color must be 0x000000..0xFFFFFF, got {color}")
    return color_match(image, color)


@node(category="mask")
def solid_mask(value: Annotated[float, Field(1.0, ge=0.0, le=1.0), Widget(step=0.01)] = 1.0,
               width: Annotated[int, Field(512, ge=1, le=MAX_SIZE)] = 512,
               height: Annotated[int, Field(512, ge=1, le=MAX_SIZE)] = 512) -> MASK:
    """A mask of one value (1 = change everything): a base to composite other masks onto."""
    import torch

    _at_least(width, 1, "width")
    _at_least(height, 1, "height")
    return torch.full((1, height, width), float(value), dtype=torch.float32)


@node(category="mask")
def invert_mask(mask: MASK) -> MASK:
    """Swap what changes and what is kept (1 - mask)."""
    return 1.0 - _masks(mask)


@node(category="mask")
def crop_mask(mask: MASK,
              x: Pixels = 0,
              y: Pixels = 0,
              width: Annotated[int, Field(512, ge=1, le=MAX_SIZE)] = 512,
              height: Annotated[int, Field(512, ge=1, le=MAX_SIZE)] = 512) -> MASK:
    """Cut a rectangle out of the mask, clipped to the mask (as ComfyUI's CropMask)."""
    mask = _masks(mask)
    for value, low, name in ((x, 0, "x"), (y, 0, "y"), (width, 1, "width"), (height, 1, "height")):
        _at_least(value, low, name)
    h, w = mask.shape[-2:]
    if x >= w:
        raise NodeError(f"x {x} lies outside the {w}x{h} mask (it must be less than {w}): the crop would be empty")
    if y >= h:
        raise NodeError(f"y {y} lies outside the {w}x{h} mask (it must be less than {h}): the crop would be empty")
    return mask[:, y:y + height, x:x + width].clone()


@node(category="mask")
def mask_composite(destination: MASK, source: MASK,
                   x: Pixels = 0,
                   y: Pixels = 0,
                   operation: Operation = "multiply") -> MASK:
    """Combine `source` into `destination` at (x, y), clipped to the destination; the result is clamped to 0..1.

    and / or / xor round both masks to 0 or 1 first. A batch of 1 applies to every mask of the other input."""
    from nodes.impl.masks import OPERATIONS, composite

    destination, source = _masks(destination, "destination"), _masks(source, "source")
    _at_least(x, 0, "x")
    _at_least(y, 0, "y")
    if operation not in OPERATIONS:
        raise NodeError(f"operation {operation!r} is not one of {', '.join(OPERATIONS)}")
    bd, bs = destination.shape[0], source.shape[0]
    if bd != bs and 1 not in (bd, bs):
        raise NodeError(f"destination holds {bd} masks and source {bs}: the batches must match, or one must be 1")
    return composite(destination, source, x, y, operation)


@node(category="mask")
def feather_mask(mask: MASK,
                 left: Pixels = 0,
                 top: Pixels = 0,
                 right: Pixels = 0,
                 bottom: Pixels = 0) -> MASK:
    """Fade the mask linearly to 0 over the given number of pixels at each edge (the edge pixel keeps 1/n)."""
    from nodes.impl.masks import feather

    mask = _masks(mask)
    for value, name in ((left, "left"), (top, "top"), (right, "right"), (bottom, "bottom")):
        _at_least(value, 0, name)
    return feather(mask, left, top, right, bottom)


@node(category="mask")
def grow_mask(mask: MASK,
              expand: Annotated[int, Field(0, ge=-MAX_SIZE, le=MAX_SIZE, description="pixels; negative shrinks")] = 0,
              tapered_corners: bool = True) -> MASK:
    """Grow the mask by `expand` pixels, or shrink it when negative (e.g. to cover a seam around an object).

    Each pixel step takes the maximum (minimum, to shrink) over its 3x3 neighbours; `tapered_corners` leaves the
    diagonal ones out, so corners round off."""
    from nodes.impl.masks import grow

    return grow(_masks(mask), expand, tapered_corners)


@node(category="mask")
def threshold_mask(mask: MASK, value: Annotated[float, Field(0.5, ge=0.0, le=1.0), Widget(step=0.01)] = 0.5) -> MASK:
    """1 where the mask is above `value`, 0 elsewhere: a hard mask from a soft one."""
    return (_masks(mask) > value).float()


class ImageAndAlpha(Outputs):
    image: IMAGE
    mask: MASK


@node(category="mask/compositing")
def split_image_with_alpha(image: IMAGE) -> ImageAndAlpha:
    """An RGBA image as its RGB and a MASK of 1 - alpha (transparent = 1); without alpha, a zero mask
    (ComfyUI's SplitImageWithAlpha)."""
    import torch

    image = _images(image)
    if image.shape[-1] > 3:
        mask = 1.0 - image[..., 3]
    else:
        mask = torch.zeros(image.shape[:3], dtype=image.dtype)
    return ImageAndAlpha(image=image[..., :3].contiguous(), mask=mask.contiguous())


@node(category="mask/compositing", output_name="image")
def join_image_with_alpha(image: IMAGE, alpha: MASK) -> IMAGE:
    """An RGB image with an alpha channel of 1 - mask (so a MASK's 1 becomes transparent), resized to the image
    (bilinear) when the sizes differ; SaveImage writes it as an RGBA PNG (ComfyUI's JoinImageWithAlpha)."""
    import torch
    import torch.nn.functional as F

    image, alpha = _images(image), _masks(alpha, "alpha")
    if alpha.shape[-2:] != image.shape[1:3]:
        alpha = F.interpolate(alpha[:, None], size=image.shape[1:3], mode="bilinear", align_corners=False)[:, 0]
    b = max(image.shape[0], alpha.shape[0])
    rgb = image[..., :3].expand(b, -1, -1, -1)
    return torch.cat([rgb, (1.0 - alpha).to(image.dtype).expand(b, -1, -1)[..., None]], dim=-1)


# ComfyUI's widget order (what its editor saves in `widgets_values`), from comfy_extras/nodes_mask.py and nodes.py
# (LoadImageMask). The names and inputs are ComfyUI's, so API prompts need no translation; the entries pin the
# editor's positional order. InvertMask and MaskToImage have no widgets and run under their own names.
# ComfyUI's editor appends an upload button after the last required widget: after LoadImageMask's `channel`.
for _name, _outputs, _widgets in (
    ("LoadImageMask", ["mask"], ("image", "channel", UPLOAD)),
    ("ImageToMask", ["mask"], ("channel",)),
    ("ImageColorToMask", ["mask"], ("color",)),
    ("SolidMask", ["mask"], ("value", "width", "height")),
    ("CropMask", ["mask"], ("x", "y", "width", "height")),
    ("MaskComposite", ["mask"], ("x", "y", "operation")),
    ("FeatherMask", ["mask"], ("left", "top", "right", "bottom")),
    ("GrowMask", ["mask"], ("expand", "tapered_corners")),
    ("ThresholdMask", ["mask"], ("value",)),
):
    register_comfy_class(_name, ComfyClass(_name, inputs={"upload": None} if _name == "LoadImageMask" else {},
                                           outputs=_outputs, widgets=_widgets))
