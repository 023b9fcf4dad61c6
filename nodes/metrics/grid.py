"""Labelled image grids for comparing runs (prompts x seeds, samplers x steps, ...), drawn with PIL.

Row labels go in a left column, column labels in a top band, and an optional caption (e.g. the
prompt or a score) under each image. Text uses PIL's bundled font, wrapped to fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

from ._imaging import line_height, load_font, to_pil_list, wrap_text

Color = tuple[int, int, int]


def _grid_shape(
    n: int, rows: int | None, cols: int | None, row_labels: Sequence[str] | None, col_labels: Sequence[str] | None
) -> tuple[int, int]:
    cols = cols or (len(col_labels) if col_labels else None)
    rows = rows or (len(row_labels) if row_labels else None)
    if cols is None and rows is None:
        cols = math.ceil(math.sqrt(n))
    if cols is None:
        cols = math.ceil(n / rows)  # type: ignore[operator]
    if rows is None:
        rows = math.ceil(n / cols)
    if rows * cols < n:
        raise ValueError(f"a {rows}x{cols} grid cannot hold {n} images")
    return rows, cols


def image_grid(
    images: object,
    rows: int | None = None,
    cols: int | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    captions: Sequence[str] | None = None,
    font_size: int = 16,
    padding: int = 8,
    row_label_width: int | None = None,
    max_caption_lines: int = 3,
    background: Color = (255, 255, 255),
    text_color: Color = (20, 20, 20),
) -> Image.Image:
    """Images laid out row-major in a grid with optional row, column and per-image labels.

    images: float tensor [N,H,W,3] in 0..1, uint8 arrays or PIL images. Cells take the largest
    image size; smaller images are centred. Long labels wrap (captions up to `max_caption_lines`).
    """
    pil = to_pil_list(images)
    if not pil:
        raise ValueError("no images to put in a grid")
    rows, cols = _grid_shape(len(pil), rows, cols, row_labels, col_labels)
    for name, labels, count in (("row_labels", row_labels, rows), ("col_labels", col_labels, cols)):
        if labels is not None and len(labels) != count:
            raise ValueError(f"{name} has {len(labels)} entries for {count} {name.split('_')[0]}s")
    if captions is not None and len(captions) > len(pil):
        raise ValueError(f"{len(captions)} captions for {len(pil)} images")

    font = load_font(font_size)
    cell_w = max(im.width for im in pil)
    cell_h = max(im.height for im in pil)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pitch = line_height(font)

    caption_lines = [wrap_text(measure, c, font, cell_w, max_caption_lines) for c in (captions or [])]
    caption_h = pitch * max((len(c) for c in caption_lines), default=0)
    caption_h = caption_h + padding // 2 if caption_h else 0
    label_w = 0
    row_lines: list[list[str]] = []
    if row_labels:
        label_w = (
            row_label_width
            or min(max(int(measure.textlength(lab, font=font)) for lab in row_labels), max(cell_w // 2, 8 * font_size))
            + padding
        )
        row_lines = [wrap_text(measure, lab, font, label_w - padding, max(1, cell_h // pitch)) for lab in row_labels]
    col_lines = [wrap_text(measure, lab, font, cell_w, 3) for lab in (col_labels or [])]
    header_h = pitch * max((len(c) for c in col_lines), default=0)
    header_h = header_h + padding // 2 if header_h else 0

    step_x, step_y = cell_w + padding, cell_h + caption_h + padding
    width = padding + label_w + cols * step_x
    height = padding + header_h + rows * step_y
    canvas = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(canvas)
    origin_x, origin_y = padding + label_w, padding + header_h

    for c, lines in enumerate(col_lines):
        cx = origin_x + c * step_x + cell_w / 2
        top = padding + header_h - padding // 2 - pitch * len(lines)
        for i, line in enumerate(lines):
            draw.text((cx, top + i * pitch), line, fill=text_color, font=font, anchor="ma")
    for r, lines in enumerate(row_lines):
        cy = origin_y + r * step_y + cell_h / 2 - pitch * len(lines) / 2
        for i, line in enumerate(lines):
            draw.text((padding + label_w - padding, cy + i * pitch), line, fill=text_color, font=font, anchor="ra")
    for index, im in enumerate(pil):
        r, c = divmod(index, cols)
        x = origin_x + c * step_x
        y = origin_y + r * step_y
        canvas.paste(im, (x + (cell_w - im.width) // 2, y + (cell_h - im.height) // 2))
        if index < len(caption_lines):
            for i, line in enumerate(caption_lines[index]):
                draw.text(
                    (x + cell_w / 2, y + cell_h + padding // 2 + i * pitch),
                    line,
                    fill=text_color,
                    font=font,
                    anchor="ma",
                )
    return canvas


def grid_size(
    n: int, cell: tuple[int, int], rows: int | None = None, cols: int | None = None, padding: int = 8
) -> tuple[int, int]:
    """Size of an unlabelled grid of `n` cells of `cell` = (w, h): padding around and between cells."""
    rows, cols = _grid_shape(n, rows, cols, None, None)
    return padding + cols * (cell[0] + padding), padding + rows * (cell[1] + padding)
