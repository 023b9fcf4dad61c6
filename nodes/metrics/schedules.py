"""DDPM beta schedules -> alpha_bar(t) and sigma(t), and a PIL line chart of them (no matplotlib).

The arithmetic copies diffusers' DDPMScheduler step for step (float32 linspace, the GLIDE cosine
built in float64 then cast, float32 cumprod), so `alphas_cumprod` is bit-identical to
`DDPMScheduler(beta_schedule=...).alphas_cumprod`. sigma = sqrt((1 - alpha_bar) / alpha_bar) is the
noise level k-diffusion samplers (Euler, DPM++) step through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw

from ._imaging import line_height, load_font, text_size

SCHEDULE_NAMES = ("linear", "scaled_linear", "squaredcos_cap_v2")
ALIASES = {"cosine": "squaredcos_cap_v2"}
QUANTITIES = ("alpha_bar", "sigma", "log_snr")
PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75))


@dataclass
class NoiseSchedule:
    """One training noise schedule over t = 0..T-1."""

    name: str
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    @property
    def sigmas(self) -> torch.Tensor:
        """sqrt((1 - alpha_bar) / alpha_bar); inf where alpha_bar is 0 (zero terminal SNR)."""
        return ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5

    @property
    def log_snr(self) -> torch.Tensor:
        """log(alpha_bar / (1 - alpha_bar)) = -2 log sigma."""
        return torch.log(self.alphas_cumprod) - torch.log1p(-self.alphas_cumprod)

    def values(self, quantity: str) -> torch.Tensor:
        if quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
        if quantity == "alpha_bar":
            return self.alphas_cumprod
        return self.sigmas if quantity == "sigma" else self.log_snr


def _cosine_betas(steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """GLIDE/iDDPM cosine schedule: betas from alpha_bar(t) = cos^2(((t + s)/(1 + s)) pi/2), s = 0.008."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)]
    return torch.tensor(betas, dtype=torch.float32)


def _zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023: shift and scale sqrt(alpha_bar) so the last step is pure noise, keep the first."""
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    bar = root**2
    alphas = torch.cat([bar[0:1], bar[1:] / bar[:-1]])
    return 1 - alphas


def make_schedule(
    name: str,
    num_train_timesteps: int = 1000,
    beta_start: float = 0.0001,
    beta_end: float = 0.02,
    rescale_zero_terminal_snr: bool = False,
) -> NoiseSchedule:
    """betas and alpha_bar for 'linear', 'scaled_linear' (SD: beta 0.00085..0.012) or 'squaredcos_cap_v2'/'cosine'.

    Defaults are DDPMScheduler's (beta 1e-4..0.02); the cosine schedule ignores beta_start/end.
    """
    key = ALIASES.get(name, name)
    if key == "linear":
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    elif key == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    elif key == "squaredcos_cap_v2":
        betas = _cosine_betas(num_train_timesteps)
    else:
        raise ValueError(f"unknown beta schedule {name!r}; choose from {SCHEDULE_NAMES + tuple(ALIASES)}")
    if rescale_zero_terminal_snr:
        betas = _zero_terminal_snr(betas)
    label = key + (" (zero SNR)" if rescale_zero_terminal_snr else "")
    return NoiseSchedule(name=label, betas=betas, alphas_cumprod=torch.cumprod(1.0 - betas, dim=0))


# ----------------------------------------------------------------------------------------------- plotting


def nice_ticks(lo: float, hi: float, target: int = 6, cover: bool = False) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k steps) inside [lo, hi], or spanning it when `cover`."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(target - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = (math.floor if cover else math.ceil)(lo / step + (1e-9 if cover else -1e-9)) * step
    last = math.ceil(hi / step - 1e-9) * step if cover else hi
    ticks, value = [], first
    while value <= last + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _format_tick(value: float, log: bool) -> str:
    if log:
        exponent = round(math.log10(value))
        return f"1e{exponent}" if abs(exponent) > 3 else f"{10.0**exponent:g}"
    return f"{value:g}"


@dataclass
class _Axes:
    left: int
    top: int
    right: int
    bottom: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    log_y: bool

    def x(self, value: float) -> float:
        lo, hi = self.x_range
        return self.left + (value - lo) / (hi - lo) * (self.right - self.left)

    def y(self, value: float) -> float:
        lo, hi = self.y_range
        v = math.log10(value) if self.log_y else value
        lo, hi = (math.log10(lo), math.log10(hi)) if self.log_y else (lo, hi)
        return self.bottom - (v - lo) / (hi - lo) * (self.bottom - self.top)


def _y_limits(series: list[list[float]], log_y: bool) -> tuple[tuple[float, float], list[float]]:
    finite = [v for values in series for v in values if math.isfinite(v) and (v > 0 or not log_y)]
    if not finite:
        raise ValueError("nothing to plot: no finite (and, on a log axis, positive) values")
    lo, hi = min(finite), max(finite)
    if log_y:
        lo_e, hi_e = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        hi_e = max(hi_e, lo_e + 1)
        stride = max(1, math.ceil((hi_e - lo_e) / 8))
        return (10.0**lo_e, 10.0**hi_e), [10.0**e for e in range(lo_e, hi_e + 1, stride)]
    ticks = nice_ticks(lo, hi, cover=True)
    return (ticks[0], ticks[-1]), ticks


def plot_schedules(
    schedules: Sequence[NoiseSchedule],
    quantity: str = "alpha_bar",
    log_y: bool = False,
    size: tuple[int, int] = (768, 512),
    title: str | None = None,
    supersample: int = 2,
) -> Image.Image:
    """A line chart of `quantity` over timestep t for each schedule (axes, ticks, grid, legend).

    Drawn at `supersample` x the size and downscaled with Lanczos, which antialiases the lines.
    Non-finite points (sigma at a zero-SNR last step) and, on a log axis, non-positive ones are skipped.
    """
    if not schedules:
        raise ValueError("no schedules to plot")
    s = max(1, int(supersample))
    width, height = size[0] * s, size[1] * s
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = load_font(14 * s), load_font(12 * s)
    series = [sched.values(quantity).double().tolist() for sched in schedules]
    steps = max(len(v) for v in series)
    y_range, y_ticks = _y_limits(series, log_y)
    y_labels = [_format_tick(t, log_y) for t in y_ticks]
    label_w = max(text_size(draw, lab, small)[0] for lab in y_labels)
    title = title or {"alpha_bar": "alpha_bar(t)", "sigma": "sigma(t)", "log_snr": "log SNR(t)"}[quantity]
    title_h = line_height(font)
    axes = _Axes(
        left=label_w + 34 * s,
        top=title_h + 22 * s,
        right=width - 20 * s,
        bottom=height - 2 * line_height(small) - 24 * s,
        x_range=(0.0, float(max(steps - 1, 1))),
        y_range=y_range,
        log_y=log_y,
    )
    grid, ink = (225, 225, 225), (40, 40, 40)
    for tick, lab in zip(y_ticks, y_labels, strict=True):
        y = axes.y(tick)
        draw.line([(axes.left, y), (axes.right, y)], fill=grid, width=s)
        draw.text((axes.left - 8 * s, y), lab, fill=ink, font=small, anchor="rm")
    for tick in nice_ticks(0, steps - 1):
        x = axes.x(tick)
        draw.line([(x, axes.top), (x, axes.bottom)], fill=grid, width=s)
        draw.line([(x, axes.bottom), (x, axes.bottom + 5 * s)], fill=ink, width=s)
        lab = f"{tick:g}"
        draw.text((x, axes.bottom + 8 * s), lab, fill=ink, font=small, anchor="mt")
    draw.rectangle([axes.left, axes.top, axes.right, axes.bottom], outline=ink, width=s)
    xlabel = "timestep t"
    draw.text(((axes.left + axes.right) / 2, height - 8 * s), xlabel, fill=ink, font=font, anchor="md")
    full_title = title + ("  (log scale)" if log_y else "")
    draw.text((width / 2, 10 * s), full_title, fill=ink, font=font, anchor="mt")
    for index, values in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        run: list[tuple[float, float]] = []
        for t, v in enumerate(values):
            if math.isfinite(v) and (v > 0 or not log_y):
                run.append((axes.x(t), min(max(axes.y(v), axes.top), axes.bottom)))
                continue
            if len(run) > 1:
                draw.line(run, fill=color, width=3 * s, joint="curve")
            run = []
        if len(run) > 1:
            draw.line(run, fill=color, width=3 * s, joint="curve")
    _legend(draw, axes, [sched.name for sched in schedules], small, s, quantity, log_y)
    return image.resize(size, Image.Resampling.LANCZOS) if s > 1 else image


def _legend(
    draw: ImageDraw.ImageDraw, axes: _Axes, names: list[str], font: object, s: int, quantity: str, log_y: bool
) -> None:
    """Legend box in the corner the curves leave free (alpha_bar falls: top right; sigma rises: top left)."""
    pitch = line_height(font)  # type: ignore[arg-type]
    swatch = 22 * s
    box_w = max(text_size(draw, n, font)[0] for n in names) + swatch + 24 * s  # type: ignore[arg-type]
    box_h = pitch * len(names) + 12 * s
    left_corner = quantity == "sigma"
    x0 = axes.left + 12 * s if left_corner else axes.right - 12 * s - box_w
    y0 = axes.top + 12 * s
    draw.rectangle([x0, y0, x0 + box_w, y0 + box_h], fill="white", outline=(160, 160, 160), width=s)
    for i, name in enumerate(names):
        y = y0 + 6 * s + i * pitch + pitch / 2
        draw.line([(x0 + 8 * s, y), (x0 + 8 * s + swatch, y)], fill=PALETTE[i % len(PALETTE)], width=3 * s)
        draw.text((x0 + 14 * s + swatch, y), name, fill=(40, 40, 40), font=font, anchor="lm")  # type: ignore[arg-type]
