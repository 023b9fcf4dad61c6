"""Image nodes that need no model: load, save, preview, resize, crop, pad, composite, invert, blur."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.node import Choices, FileRef, NodeContext, NodeError, NodeUI, Outputs, Widget, node
from engine.types import IMAGE, MASK

MAX_SIZE = 16384


def _input_images(settings) -> list[str]:
    from nodes.impl.files import list_images

    return list_images(settings.folders().input) if settings is not None else []


def _input_fingerprint(inputs: dict, settings) -> str:
    from nodes.impl.files import safe_join

    try:
        p = safe_join(settings.folders().input, inputs["image"])
        st = p.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    except Exception as exc:
        return f"missing:{exc}"


class LoadedImage(Outputs):
    image: IMAGE
    mask: MASK


@node(category="image", fingerprint=_input_fingerprint)
def load_image(image: Annotated[str, Choices(_input_images), Widget(upload="image")], ctx: NodeContext) -> LoadedImage:
    """Load an image from the input folder; its alpha channel becomes a MASK (transparent = 1)."""
    t, m = read_input_image(image, ctx)
    return LoadedImage(image=t, mask=m)


def read_input_image(image: str, ctx: NodeContext):
    """(RGB [1,H,W,3], mask [1,H,W] = 1 - alpha) of a file in the input folder; errors name the file."""
    from PIL import UnidentifiedImageError

    from nodes.impl.images import UnsafePath, list_images, read_image_file, safe_join

    try:
        path = safe_join(ctx.folders.input, image)
    except UnsafePath as exc:
        raise NodeError(f"image: {exc}") from None
    if not path.is_file():
        have = list_images(ctx.folders.input)
        raise NodeError(f"image {image!r} not found in {ctx.folders.input}; it holds: {have[:20] or 'nothing'}")
    try:
        return read_image_file(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise NodeError(f"image {path.name!r} is not an image Pillow can read: {exc}") from None


def _save(images, ctx: NodeContext, prefix: str, kind: str) -> NodeUI:
    from nodes.impl.filenames import expand_prefix
    from nodes.impl.images import UnsafePath, atomic_save_png, next_counter, png_info, safe_join, tensor_to_pils

    root = ctx.folders.folder_of(kind)
    root.mkdir(parents=True, exist_ok=True)
    prefix = expand_prefix(prefix, width=int(images.shape[2]), height=int(images.shape[1]), workflow=ctx.workflow)
    try:
        target = safe_join(root, prefix + ".png")
    except UnsafePath as exc:
        raise NodeError(str(exc)) from None
    folder, stem = target.parent, target.name[:-4]
    subfolder = folder.relative_to(root.resolve()).as_posix() if folder != root.resolve() else ""
    info = png_info(ctx.workflow, ctx.prompt)
    refs = []
    counter = next_counter(folder, stem)
    for img in tensor_to_pils(images):
        while True:  # never replace an earlier image: another run may have taken this counter meanwhile
            name = f"{stem}_{counter:05d}_.png"
            try:
                atomic_save_png(img, folder / name, info, compress_level=4 if kind == "output" else 1, overwrite=False)
                break
            except FileExistsError:
                counter += 1
        refs.append(FileRef(filename=name, subfolder=subfolder, type=kind))
        counter += 1
    return NodeUI(images=refs)


@node(category="image", output_node=True)
def save_image(images: IMAGE, ctx: NodeContext,
               filename_prefix: Annotated[str, Field(description="file name start; may include a sub-folder and ComfyUI's "
                                                                 "%date:yyyy-MM-dd%, %width%, %Node.input% placeholders")] = "loom") -> NodeUI:
    """Save PNGs to the output folder, with the workflow embedded (ComfyUI-compatible text chunks). The prefix takes
    ComfyUI's placeholders: %date:FORMAT%, %year% .. %second%, %width% / %height%, %NodeTitle.input%."""
    return _save(images, ctx, filename_prefix, "output")


@node(category="image", output_node=True, deterministic=True)
def preview_image(images: IMAGE, ctx: NodeContext) -> NodeUI:
    """Show images without keeping them (written to the temporary folder)."""
    return _save(images, ctx, f"preview_{ctx.run_id[:8]}_{ctx.node_id}", "temp")


Interp = Literal["nearest", "bilinear", "bicubic", "area", "lanczos"]


@node(category="image/transform")
def image_resize(
    image: IMAGE,
    width: Annotated[int, Field(512, ge=1, le=MAX_SIZE)] = 512,
    height: Annotated[int, Field(512, ge=1, le=MAX_SIZE)] = 512,
    method: Interp = "bilinear",
    crop: Literal["disabled", "center"] = "disabled",
) -> IMAGE:
    """Resize to an exact size; `center` crop keeps the aspect ratio by cutting the overflow first."""
    from nodes.impl.transform import resize_image

    return resize_image(image, width, height, method, crop)


@node(category="image/transform", output_name="image")
def image_scale_to_total_pixels(image: IMAGE, method: Interp = "bilinear",
                                megapixels: Annotated[float, Field(1.0, ge=0.01, le=16.0), Widget(step=0.01)] = 1.0) -> IMAGE:
    """Resize, keeping the aspect ratio, to about `megapixels` x 1024 x 1024 pixels (SDXL's native area is 1)."""
    import math

    from nodes.impl.transform import resize_image

    h, w = image.shape[1:3]
    scale = math.sqrt(megapixels * 1024 * 1024 / (w * h))
    return resize_image(image, max(1, round(w * scale)), max(1, round(h * scale)), method, "disabled")


@node(category="image/transform", output_name="image")
def image_scale_to_max_dimension(image: IMAGE, method: Interp = "area",
                                 largest_size: Annotated[int, Field(512, ge=1, le=MAX_SIZE)] = 512) -> IMAGE:
    """Resize, keeping the aspect ratio, so the longer side is `largest_size` (ComfyUI's ImageScaleToMaxDimension)."""
    from nodes.impl.transform import resize_image

    h, w = image.shape[1:3]
    if h > w:
        w, h = max(1, round(w / h * largest_size)), largest_size
    elif w > h:
        w, h = largest_size, max(1, round(h / w * largest_size))
    else:
        w = h = largest_size
    return resize_image(image, w, h, method, "disabled")


@node(category="image/transform")
def image_scale_by(image: IMAGE, scale: Annotated[float, Field(2.0, ge=0.01, le=16.0), Widget(step=0.05)] = 2.0,
                   method: Interp = "bilinear") -> IMAGE:
    """Resize by a factor."""
    from nodes.impl.transform import resize_image

    h, w = image.shape[1:3]
    return resize_image(image, max(1, round(w * scale)), max(1, round(h * scale)), method, "disabled")


@node(category="image/transform")
def image_crop(
    image: IMAGE,
    width: Annotated[int, Field(512, ge=1, le=MAX_SIZE)] = 512,
    height: Annotated[int, Field(512, ge=1, le=MAX_SIZE)] = 512,
    x: Annotated[int, Field(0, ge=0, le=MAX_SIZE)] = 0,
    y: Annotated[int, Field(0, ge=0, le=MAX_SIZE)] = 0,
) -> IMAGE:
    """Cut a rectangle out of the image (clipped to the image)."""
    h, w = image.shape[1:3]
    if x >= w or y >= h:
        raise NodeError(f"crop origin ({x}, {y}) lies outside the {w}x{h} image")
    return image[:, y:min(h, y + height), x:min(w, x + width), :].clone()


class Padded(Outputs):
    image: IMAGE
    mask: MASK


@node(category="image/transform")
def image_pad(
    image: IMAGE,
    left: Annotated[int, Field(0, ge=0, le=MAX_SIZE)] = 0,
    top: Annotated[int, Field(0, ge=0, le=MAX_SIZE)] = 0,
    right: Annotated[int, Field(0, ge=0, le=MAX_SIZE)] = 0,
    bottom: Annotated[int, Field(0, ge=0, le=MAX_SIZE)] = 0,
    value: Annotated[float, Field(0.0, ge=0.0, le=1.0), Widget(step=0.01)] = 0.0,
    mode: Literal["constant", "edge", "reflect"] = "constant",
    feathering: Annotated[int, Field(0, ge=0, le=MAX_SIZE, description="pixels of the original faded into the mask "
                                                                       "along padded sides")] = 0,
) -> Padded:
    """Add borders (e.g. to outpaint); the MASK marks the new area with 1.

    `feathering` > 0 lets the mask reach into the original along the padded sides, so the sampler blends the
    seam: ComfyUI's ImagePadForOutpaint ramp, ((feathering - d) / feathering)^2 at distance d from a padded
    side; ignored, as there, unless the image is more than twice `feathering` wide and high."""
    import torch
    import torch.nn.functional as F

    x = image.movedim(-1, 1)
    pad = (left, right, top, bottom)
    h, w = image.shape[1:3]
    if mode == "reflect" and (max(left, right) >= w or max(top, bottom) >= h):
        raise NodeError(f"reflect padding needs borders smaller than the {w}x{h} image (got left={left}, right={right}, "
                        f"top={top}, bottom={bottom}); use mode 'edge' or 'constant'")
    if mode == "constant":
        out = F.pad(x, pad, mode="constant", value=value)
    else:
        out = F.pad(x, pad, mode="replicate" if mode == "edge" else "reflect")
    b, _, h, w = out.shape
    mask = torch.ones((b, h, w), dtype=image.dtype)
    mask[:, top:top + image.shape[1], left:left + image.shape[2]] = _outpaint_feather(
        image.shape[1], image.shape[2], left, top, right, bottom, feathering).to(image.dtype)
    return Padded(image=out.movedim(1, -1).contiguous(), mask=mask)


def _outpaint_feather(ih: int, iw: int, left: int, top: int, right: int, bottom: int, feathering: int):
    """The mask over the original image ([ih, iw]): 0, or ComfyUI's ImagePadForOutpaint fade next to padded sides.
    Its distances are asymmetric as ComfyUI's are: row i is i from the top but ih - i (not ih - 1 - i) from the
    bottom, so the first row next to a top pad gets 1 and the last row next to a bottom pad ((f - 1) / f)^2."""
    import torch

    if feathering <= 0 or 2 * feathering >= ih or 2 * feathering >= iw:
        return torch.zeros((ih, iw))
    rows = torch.arange(ih, dtype=torch.float64)[:, None]
    cols = torch.arange(iw, dtype=torch.float64)[None, :]
    far_r, far_c = torch.full_like(rows, ih), torch.full_like(cols, iw)  # an unpadded side never counts
    d = torch.minimum(torch.minimum(rows if top else far_r, ih - rows if bottom else far_r),
                      torch.minimum(cols if left else far_c, iw - cols if right else far_c))
    v = ((feathering - d) / feathering).clamp(min=0)
    return (v * v).float()


Rotation = Literal["none", "90 degrees", "180 degrees", "270 degrees"]
FlipMethod = Literal["x-axis: vertically", "y-axis: horizontally"]


def quarter_turns(rotation: str) -> int:
    """ComfyUI's rotation choices as clockwise quarter turns."""
    return {"none": 0, "90 degrees": 1, "180 degrees": 2, "270 degrees": 3}[rotation]


@node(category="image/transform", output_name="image")
def image_flip(image: IMAGE, flip_method: FlipMethod = "x-axis: vertically") -> IMAGE:
    """Mirror the image: `x-axis` turns it upside down, `y-axis` mirrors left and right (ComfyUI's ImageFlip)."""
    import torch

    return torch.flip(image, dims=[1] if flip_method.startswith("x") else [2])


@node(category="image/transform", output_name="image")
def image_rotate(image: IMAGE, rotation: Rotation = "none") -> IMAGE:
    """Turn the image clockwise by quarter turns (90 and 270 degrees swap width and height), as ComfyUI's ImageRotate."""
    import torch

    k = quarter_turns(rotation)
    return torch.rot90(image, k=k, dims=[2, 1]).contiguous() if k else image


@node(category="image/compose")
def image_composite(
    destination: IMAGE,
    source: IMAGE,
    x: Annotated[int, Field(0, ge=-MAX_SIZE, le=MAX_SIZE)] = 0,
    y: Annotated[int, Field(0, ge=-MAX_SIZE, le=MAX_SIZE)] = 0,
    mask: MASK | None = None,
    resize_source: bool = False,
) -> IMAGE:
    """Paste `source` onto `destination` at (x, y), optionally through a mask (1 = take the source, resized to the
    source bilinearly); `resize_source` first scales the source to the destination's size (ComfyUI's
    ImageCompositeMasked)."""
    import torch.nn.functional as F

    from nodes.impl.transform import composite

    if resize_source and source.shape[1:3] != destination.shape[1:3]:
        source = F.interpolate(source.movedim(-1, 1), size=destination.shape[1:3], mode="bilinear",
                               align_corners=False).movedim(1, -1)
    return composite(destination, source, x, y, mask)


@node(category="image/adjust")
def image_invert(image: IMAGE) -> IMAGE:
    """Turn every pixel into its complement (1 - value)."""
    return 1.0 - image


@node(category="image/adjust")
def image_blur(
    image: IMAGE,
    radius: Annotated[int, Field(2, ge=1, le=64)] = 2,
    sigma: Annotated[float, Field(1.0, ge=0.1, le=32.0), Widget(step=0.1)] = 1.0,
) -> IMAGE:
    """Gaussian blur with a (2*radius+1)-wide kernel; edges are reflected, so borders do not darken."""
    from nodes.impl.transform import gaussian_blur

    return gaussian_blur(image, radius, sigma)


@node(category="image/batch", output_name="image")
def image_batch(image1: IMAGE, image2: IMAGE) -> IMAGE:
    """One batch from two (image2 resized to image1's size, centre-cropped, when they differ)."""
    import torch

    from nodes.impl.transform import resize_image

    h, w = image1.shape[1:3]
    if image2.shape[1:3] != (h, w):
        image2 = resize_image(image2, w, h, "bilinear", "center")
    if image2.shape[-1] != image1.shape[-1]:
        raise NodeError(f"image1 has {image1.shape[-1]} channels, image2 {image2.shape[-1]}")
    return torch.cat([image1, image2.to(image1.dtype)])


class ImageSize(Outputs):
    width: int
    height: int
    batch_size: int


@node(category="image")
def get_image_size(image: IMAGE) -> ImageSize:
    """The width, height and batch size of an image, to feed sizes elsewhere (ComfyUI's GetImageSize)."""
    return ImageSize(width=int(image.shape[2]), height=int(image.shape[1]), batch_size=int(image.shape[0]))


@node(category="image/batch", output_name="image")
def repeat_image_batch(image: IMAGE, amount: Annotated[int, Field(1, ge=1, le=4096)] = 1) -> IMAGE:
    """The batch repeated `amount` times (ComfyUI's RepeatImageBatch)."""
    return image.repeat(amount, 1, 1, 1)


@node(category="image/batch", output_name="image")
def image_from_batch(image: IMAGE, batch_index: Annotated[int, Field(0, ge=0, le=4095)] = 0,
                     length: Annotated[int, Field(1, ge=1, le=4096)] = 1) -> IMAGE:
    """`length` images from `batch_index` on, clipped to the batch as ComfyUI's ImageFromBatch does (an index past
    the end takes the last image)."""
    start = min(image.shape[0] - 1, batch_index)
    return image[start:start + min(image.shape[0] - start, length)].clone()


@node(category="image", output_name="image")
def empty_image(width: Annotated[int, Field(512, ge=1, le=MAX_SIZE)] = 512,
                height: Annotated[int, Field(512, ge=1, le=MAX_SIZE)] = 512,
                batch_size: Annotated[int, Field(1, ge=1, le=64)] = 1,
                color: Annotated[int, Field(0, ge=0, le=0xFFFFFF, description="0xRRGGBB")] = 0,
                ) -> IMAGE:
    """Images of one colour (a canvas for compositing, a blank ControlNet hint)."""
    import torch

    rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 255.0
    return rgb.expand(batch_size, height, width, 3).contiguous()


BlendMode = Literal["normal", "multiply", "screen", "overlay", "soft_light", "difference"]


@node(category="image/compose", output_name="image")
def image_blend(image1: IMAGE, image2: IMAGE,
                blend_factor: Annotated[float, Field(0.5, ge=0.0, le=1.0), Widget(step=0.01)] = 0.5,
                blend_mode: BlendMode = "normal") -> IMAGE:
    """image1 mixed with (image1 `blend_mode` image2) by blend_factor, as ComfyUI's ImageBlend (image2 resized to
    image1's size, centre-cropped, when they differ)."""
    import torch

    from nodes.impl.transform import resize_image

    h, w = image1.shape[1:3]
    if image2.shape[1:3] != (h, w):
        image2 = resize_image(image2, w, h, "bicubic", "center")
    a, b = image1, image2.to(image1.dtype)
    if blend_mode == "normal":
        mixed = b
    elif blend_mode == "multiply":
        mixed = a * b
    elif blend_mode == "screen":
        mixed = 1 - (1 - a) * (1 - b)
    elif blend_mode == "overlay":
        mixed = torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    elif blend_mode == "soft_light":
        g = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, torch.sqrt(a))
        mixed = torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (g - a))
    else:  # difference
        mixed = a - b
    return torch.clamp(a * (1 - blend_factor) + mixed * blend_factor, 0, 1)
