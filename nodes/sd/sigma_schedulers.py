"""Sampling a given sigma list (ComfyUI's SIGMAS) with diffusers' k-diffusion-family schedulers, and ComfyUI's
DPM++ 2S ancestral sampler, which diffusers lacks, as a scheduler with diffusers' interface.

Diffusers' EulerDiscreteScheduler takes `set_timesteps(sigmas=...)`; the other k-diffusion-family classes compute their
own sigmas only. `set_sigma_list` runs such a class on a given list: the scheduler first sets itself up for N steps
(its own schedule, so every attribute it keeps is reset), then the adapter for its class replaces the schedule with the
list, rebuilding each array the class derives from its sigmas exactly as its own `set_timesteps` builds it. Each
sigma is mapped to the timestep the UNet sees by the log-sigma interpolation over the training sigmas that diffusers
uses for karras sigmas (`_sigma_to_t`), exactly as EulerDiscreteScheduler maps its `sigmas=` (float32), so every
sampler shows the UNet the same timesteps for the same list.

Diffusers' two-evaluation schedulers (Heun, DPM2, DPM2 ancestral, DPM++ SDE) take a last step of one evaluation
because their schedules end at sigma 0 (k-diffusion: Euler to 0). A list that ends above 0 (FlipSigmas, unsampling)
gets its last step's second evaluation too, as k-diffusion takes it; the timesteps stay two per step, so callers
that cut them in units of `scheduler.order` still cut at step boundaries.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor


def training_sigma_table(scheduler: Any) -> np.ndarray:
    """The sigma of each training timestep 0..T-1, sqrt((1 - alphas_cumprod) / alphas_cumprod), in float32 as
    diffusers' k-diffusion schedulers compute it."""
    ac = scheduler.alphas_cumprod
    return (((1 - ac) / ac) ** 0.5).numpy()


def log_training_sigmas(scheduler: Any) -> np.ndarray:
    """log sigma of each training timestep 0..T-1 (float32), as EulerDiscreteScheduler computes it for `sigmas=`."""
    return np.log(training_sigma_table(scheduler))


def sigma_to_t(sigma: Any, log_sigmas: np.ndarray) -> np.ndarray:
    """The (fractional) training timestep whose sigma is `sigma`: linear interpolation in log sigma between the two
    training timesteps around it, clamped to [0, T-1]. The arithmetic of diffusers' `_sigma_to_t`, step for step."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low_idx = np.cumsum((dists >= 0), axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high_idx = low_idx + 1
    low, high = log_sigmas[low_idx], log_sigmas[high_idx]
    w = np.clip((low - log_sigma) / (low - high), 0, 1)
    t = (1 - w) * low_idx + w * high_idx
    return t.reshape(np.shape(sigma))


def list_timesteps(scheduler: Any, sigmas: np.ndarray) -> np.ndarray:
    """The timestep of each float32 sigma (float64 values, as EulerDiscreteScheduler computes them before casting)."""
    log_sigmas = log_training_sigmas(scheduler)
    return np.array([sigma_to_t(s, log_sigmas) for s in np.asarray(sigmas, dtype=np.float32)])


def _pairs(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """[first[0], second[0], first[1], second[1], ...] (the second may be one shorter)."""
    out = torch.stack((first[: len(second)], second), dim=-1).flatten()
    return torch.cat([out, first[len(second):]])


# ---------------------------------------------------------------------------------------------------
# Adapters: (scheduler after its own set_timesteps(N), float32 sigmas [N+1], base timesteps [N], device)
# ---------------------------------------------------------------------------------------------------


def _euler_ancestral(s: Any, sig: np.ndarray, ts: np.ndarray, device: Any) -> None:
    # step() derives sigma_up / sigma_down from consecutive `sigmas`; nothing else is kept
    dtype = s.timesteps.dtype
    s.sigmas = torch.from_numpy(sig).to(device=device).to("cpu")
    s.timesteps = torch.from_numpy(ts).to(device=device, dtype=dtype)


def _lms(s: Any, sig: np.ndarray, ts: np.ndarray, device: Any) -> None:
    # the multistep coefficients integrate over `sigmas`; past derivatives start empty
    dtype = s.timesteps.dtype
    s.sigmas = torch.from_numpy(sig).to(device=device).to("cpu")
    s.timesteps = torch.from_numpy(ts).to(device=device, dtype=dtype)
    s.derivatives = []


def _heun(s: Any, sig: np.ndarray, ts: np.ndarray, device: Any) -> None:
    # sigmas [s0, s1, s1, ..., s_N-1, s_N-1, s_N], timesteps [t0, t1, t1, ..., t_N-1, t_N-1]: the second evaluation
    # of step k is at sigma (and timestep) k+1
    dtype = s.timesteps.dtype
    sigmas = torch.from_numpy(sig).to(device=device)
    s.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]]).to("cpu")
    t = torch.from_numpy(ts)
    if sig[-1] > 0:  # the last step's second evaluation, at the last sigma
        t = torch.cat([t, torch.from_numpy(list_timesteps(s, sig[-1:]))])
    count = 2 * len(ts) - (1 if sig[-1] == 0 else 0)
    s.timesteps = torch.cat([t[:1], t[1:].repeat_interleave(2)])[:count].to(device=device, dtype=dtype)
    s.prev_derivative = None
    s.dt = None


def _interleaved(t: torch.Tensor) -> torch.Tensor:
    """[a, b, c] -> [a, b, b, c, c]: KDPM2's layout, every value after the first twice (two evaluations a step)."""
    return torch.cat([t[:1], t[1:].repeat_interleave(2), t[-1:]])


def _class_timesteps(s: Any, sigmas: torch.Tensor, device: Any, dtype: Any) -> torch.Tensor:
    """The timesteps of `sigmas` by the scheduler class's own `_sigma_to_t` over its `log_sigmas`."""
    log_sigmas = s.log_sigmas.cpu()
    t = np.array([s._sigma_to_t(si, log_sigmas) for si in sigmas.cpu()])
    return torch.from_numpy(t).to(device, dtype=dtype)


def _dpm2(s: Any, sig: np.ndarray, ts: np.ndarray, device: Any) -> None:
    # sigmas and the log-midpoints `sigmas_interpol` (sqrt(s_k-1 s_k)) interleaved as KDPM2 keeps them; the second
    # evaluation of step k is at the midpoint between sigma k and k+1, its timestep mapped by the class's own
    # `_sigma_to_t` over its `log_sigmas`
    dtype = s.timesteps.dtype
    sigmas = torch.from_numpy(sig).to(device=device)
    interpol = sigmas.log().lerp(sigmas.roll(1).log(), 0.5).exp()
    s.sigmas, s.sigmas_interpol = _interleaved(sigmas), _interleaved(interpol)
    timesteps = torch.from_numpy(ts).to(device, dtype=dtype)
    t_interpol = _class_timesteps(s, interpol, device, dtype)
    last = len(interpol) if sig[-1] > 0 else -1  # a list ending above 0: the last step's midpoint too
    s.timesteps = torch.cat([timesteps[:1], _pairs(t_interpol[1:last], timesteps[1:])])
    s.sample = None
    s.sigmas = s.sigmas.to("cpu")


def _dpm2_ancestral(s: Any, sig: np.ndarray, ts: np.ndarray, device: Any) -> None:
    # as DPM2, with the ancestral step's sigma_up / sigma_down and the midpoints towards sigma_down, all interleaved
    dtype = s.timesteps.dtype
    sigmas = torch.from_numpy(sig).to(device=device)
    sigmas_next = sigmas.roll(-1)
    sigmas_next[-1] = 0.0
    sigmas_up = (sigmas_next**2 * (sigmas**2 - sigmas_next**2) / sigmas**2) ** 0.5
    sigmas_down = (sigmas_next**2 - sigmas_up**2) ** 0.5
    sigmas_down[-1] = 0.0
    interpol = sigmas.log().lerp(sigmas_down.log(), 0.5).exp()
    zero_from = -2 if sig[-1] == 0 else -1  # a list ending above 0: its last step has a midpoint
    interpol[zero_from:] = 0.0
    s.sigmas, s.sigmas_interpol = _interleaved(sigmas), _interleaved(interpol)
    s.sigmas_up, s.sigmas_down = _interleaved(sigmas_up), _interleaved(sigmas_down)
    timesteps = torch.from_numpy(ts).to(device, dtype=dtype)
    t_interpol = _class_timesteps(s, interpol, device, dtype)
    # [t0, ti0, t1, ti1, ..., t_N-1] (and ti_N-1 for a list ending above 0): step k's midpoint is ti_k
    s.timesteps = _pairs(timesteps, t_interpol[: len(ts) - (1 if sig[-1] == 0 else 0)])
    s.sample = None
    s.sigmas = s.sigmas.to("cpu")


def _dpmpp_sde(s: Any, sig: np.ndarray, ts: np.ndarray, device: Any) -> None:
    # sigmas interleaved as Heun's; the second evaluation of step k at the log-midpoint of sigmas k and k+1 (the
    # class's `_second_order_timesteps`); the Brownian-tree noise sampler is rebuilt from the new sigmas on first step
    dtype = s.timesteps.dtype
    sigmas = torch.from_numpy(sig).to(device=device)
    s.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]]).to("cpu")
    log_sigmas = log_training_sigmas(s)
    mids = s._second_order_timesteps(sig if sig[-1] > 0 else sig[:-1], log_sigmas)
    s.timesteps = _pairs(torch.from_numpy(ts), torch.from_numpy(mids)).to(device=device, dtype=dtype)
    s.sample = None
    s.mid_point_sigma = None
    s.noise_sampler = None


ADAPTERS: dict[str, Callable[[Any, np.ndarray, np.ndarray, Any], None]] = {
    "EulerAncestralDiscreteScheduler": _euler_ancestral,
    "HeunDiscreteScheduler": _heun,
    "KDPM2DiscreteScheduler": _dpm2,
    "KDPM2AncestralDiscreteScheduler": _dpm2_ancestral,
    "LMSDiscreteScheduler": _lms,
    "DPMSolverSDEScheduler": _dpmpp_sde,
}

# classes whose own set_timesteps takes `sigmas=`
NATIVE = ("EulerDiscreteScheduler", "DPMPP2SAncestralScheduler")

# classes that divide by the difference of consecutive sigmas (LMS's coefficients, the Brownian tree's increments):
# a list that repeats a sigma gives NaN
DISTINCT = ("LMSDiscreteScheduler", "DPMSolverSDEScheduler")

# classes that add fresh noise at every step (sigma_up from sigma^2 - sigma_next^2): a rising list breaks them
NOISY = ("EulerAncestralDiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler",
         "DPMPP2SAncestralScheduler")


def set_sigma_list(scheduler: Any, sigmas: Any, device: Any = None, timesteps: Any = None) -> None:
    """Set `scheduler` up to sample `sigmas` (N+1 values, the last usually 0): its state is what its own
    `set_timesteps` would leave for a schedule of exactly these (float32) sigmas. `timesteps` (N values) replaces
    the log-sigma mapping of sigmas to timesteps (tests hand a scheduler's own timesteps back to it)."""
    name = type(scheduler).__name__
    sig = np.asarray([float(v) for v in sigmas], dtype=np.float32)
    if isinstance(scheduler, DPMPP2SAncestralScheduler) and timesteps is not None:
        scheduler._build(sig, np.asarray(timesteps), device)
        return
    if name in NATIVE:
        scheduler.set_timesteps(sigmas=[float(v) for v in sigmas], device=device)
        return
    adapter = ADAPTERS.get(name)
    if adapter is None:
        raise ValueError(f"{name} cannot sample a given sigma list")
    if len(sig) < 2:
        raise ValueError("a sigma list needs at least two sigmas (one step)")
    n = len(sig) - 1
    scheduler.set_timesteps(n, device=device)
    ts = list_timesteps(scheduler, sig[:-1]) if timesteps is None else np.asarray(timesteps)
    if len(ts) != n:
        raise ValueError(f"{len(ts)} timesteps for {n} steps")
    adapter(scheduler, sig, ts, device)
    scheduler.num_inference_steps = n
    scheduler._step_index = None
    scheduler._begin_index = None


# ---------------------------------------------------------------------------------------------------
# DPM++ 2S ancestral
# ---------------------------------------------------------------------------------------------------


def ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_down, sigma_up): step deterministically down to sigma_down, then add fresh noise of sigma_up so the
    result is at sigma_to (k-diffusion's get_ancestral_step). A rising step (sigma_to > sigma_from) has no real
    sigma_up; as k-diffusion's min() lets it, sigma_up is then sigma_to and sigma_down 0."""
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    up = eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    sigma_up = sigma_to if bool(torch.isnan(up)) or not bool(up < sigma_to) else up
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


class DPMPP2SAncestralScheduler(SchedulerMixin, ConfigMixin):
    """DPM-Solver++(2S) with ancestral noise (k-diffusion / ComfyUI `sample_dpmpp_2s_ancestral`, eta 1, s_noise 1).

    Each step from sigma to sigma_next: the data prediction D at sigma; an ancestral split of the step into a
    deterministic step down to sigma_down and fresh noise of sigma_up; then, in half-log-SNR t = -log sigma with
    h = t(sigma_down) - t(sigma) and the midpoint s = t + h/2,

        x_2 = (sigma_s / sigma) x - expm1(-h/2) D(x, sigma)
        x'  = (sigma_down / sigma) x - expm1(-h) D(x_2, sigma_s)
        x_next = x' + sigma_up * noise             (noise ~ N(0, 1) from the step's generator)

    A step to sigma_down 0 (the last, to sigma 0) is one Euler step. (With eta 1, sigma_down = sigma_next^2 / sigma,
    so the midpoint sigma_s is sigma_next itself, up to rounding.)

    Two model evaluations per step, so `order` is 2 and, as in diffusers' Heun / DPM2, each evaluation is one
    `scale_model_input` + `step` call: timesteps [t(s0), t(mid0), t(s1), t(mid1), ..., t(s_N-1)] (and t(mid_N-1) when
    the list ends above 0), `sigmas` the sigma of each evaluation and then the last sigma. Every step but the last has
    two entries, so start / end steps cut in units of `order` fall on step boundaries; the first call of a step
    returns the midpoint sample the second call's model input is made from. Noise comes from the `generator` passed
    to `step` (the sampler state's), one draw per step that ends above sigma 0.

    The sigmas of a schedule are the ones EulerDiscreteScheduler computes for the same config (default, karras,
    exponential or beta spacing); `set_timesteps(sigmas=...)` samples a given list.
    """

    _compatibles: list = []
    order = 2

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Any = None, prediction_type: str = "epsilon",
                 use_karras_sigmas: bool = False, use_exponential_sigmas: bool = False, use_beta_sigmas: bool = False,
                 timestep_spacing: str = "linspace", steps_offset: int = 0, rescale_betas_zero_snr: bool = False,
                 eta: float = 1.0, s_noise: float = 1.0) -> None:
        if sum([use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas]) > 1:
            raise ValueError("only one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas can be set")
        euler = self._euler()
        self.betas = euler.betas
        self.alphas = euler.alphas
        self.alphas_cumprod = euler.alphas_cumprod
        self.num_inference_steps: int | None = None
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self.sample: torch.Tensor | None = None
        # until set_timesteps: the training sigmas and timesteps, as diffusers' k-diffusion schedulers start
        sigmas = training_sigma_table(self)
        self.sigmas = torch.from_numpy(np.concatenate([sigmas[::-1], [0.0]]).astype(np.float32))
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.float32)
        self._plan: list[dict] = []
        self._eval_at: list[tuple[int, bool]] = []

    def _euler(self) -> Any:
        from diffusers import EulerDiscreteScheduler

        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
                "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "timestep_spacing", "steps_offset",
                "rescale_betas_zero_snr")
        return EulerDiscreteScheduler.from_config({k: self.config[k] for k in keys})

    # --- schedule ---

    def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None, sigmas: Any = None) -> None:
        """The schedule for `num_inference_steps` steps (the sigmas EulerDiscreteScheduler computes for this config),
        or for a given sigma list (N+1 values, the last usually 0)."""
        if sigmas is not None:
            sig = np.array([float(v) for v in sigmas], dtype=np.float32)
            if len(sig) < 2:
                raise ValueError("a sigma list needs at least two sigmas (one step)")
            base_t = list_timesteps(self, sig[:-1])
        else:
            if num_inference_steps is None:
                raise ValueError("pass num_inference_steps or sigmas")
            euler = self._euler()
            euler.set_timesteps(num_inference_steps)
            sig = euler.sigmas.numpy().astype(np.float32)
            base_t = euler.timesteps.numpy().astype(np.float64)
        self._build(sig, base_t, device)

    def _build(self, sig: np.ndarray, base_t: np.ndarray, device: Any) -> None:
        """Each step's constants (computed as k-diffusion computes them, in float32) and the evaluations' layout."""
        n = len(sig) - 1
        s = torch.from_numpy(sig.copy())
        eta = float(self.config.eta)
        log_sigmas = log_training_sigmas(self)
        plan: list[dict] = []
        eval_sigmas: list[torch.Tensor] = []
        eval_t: list[float] = []
        eval_at: list[tuple[int, bool]] = []  # (step, first evaluation)
        for k in range(n):
            sigma, sigma_next = s[k], s[k + 1]
            sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
            step = {"sigma": sigma, "sigma_next": sigma_next, "sigma_down": sigma_down, "sigma_up": sigma_up,
                    "two": bool(sigma_down != 0)}
            eval_sigmas.append(sigma)
            eval_t.append(float(base_t[k]))
            eval_at.append((k, True))
            if step["two"]:
                t = sigma.log().neg()
                t_next = sigma_down.log().neg()
                h = t_next - t
                r = 1 / 2
                s_mid = t + r * h
                sigma_s = s_mid.neg().exp()
                step.update(c_mid=sigma_s / t.neg().exp(), e_mid=(-h * r).expm1(),
                            c_end=t_next.neg().exp() / t.neg().exp(), e_end=(-h).expm1(), sigma_s=sigma_s)
                eval_sigmas.append(sigma_s)
                eval_t.append(float(sigma_to_t(sigma_s.numpy(), log_sigmas)))
                eval_at.append((k, False))
            plan.append(step)
        for k, step in enumerate(plan[:-1]):
            if not step["two"]:
                raise ValueError(f"step {k} of the sigma list ({float(step['sigma']):g} -> {float(step['sigma_next']):g}) "
                                 "takes one model evaluation: DPM++ 2S ancestral takes two per step except the last "
                                 "(a rising list, or sigma 0 before the end)")
        self._plan = plan
        self._eval_at = eval_at
        self.sigmas = torch.stack(eval_sigmas + [s[n]]).to("cpu")
        self.timesteps = torch.from_numpy(np.array(eval_t, dtype=np.float64).astype(np.float32)).to(device=device)
        self.num_inference_steps = n
        self._step_index = None
        self._begin_index = None
        self.sample = None

    # --- diffusers' scheduler interface ---

    @property
    def init_noise_sigma(self) -> torch.Tensor:
        max_sigma = self.sigmas.max()
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return max_sigma
        return (max_sigma**2 + 1) ** 0.5

    @property
    def step_index(self) -> int | None:
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    @property
    def state_in_first_order(self) -> bool:
        return self.sample is None

    def index_for_timestep(self, timestep: Any, schedule_timesteps: torch.Tensor | None = None) -> int:
        if schedule_timesteps is None:
            schedule_timesteps = self.timesteps
        indices = (schedule_timesteps == timestep).nonzero()
        return indices[1 if len(indices) > 1 else 0].item()

    def _init_step_index(self, timestep: Any) -> None:
        if self.begin_index is None:
            if isinstance(timestep, torch.Tensor):
                timestep = timestep.to(self.timesteps.device)
            self._step_index = self.index_for_timestep(timestep)
        else:
            self._step_index = self._begin_index

    def scale_model_input(self, sample: torch.Tensor, timestep: Any) -> torch.Tensor:
        """The model sees x / sqrt(sigma^2 + 1) at this evaluation's sigma (the step's, or its midpoint's)."""
        if self.step_index is None:
            self._init_step_index(timestep)
        sigma = self.sigmas[self.step_index]
        return sample / ((sigma**2 + 1) ** 0.5)

    def _denoised(self, model_output: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The data prediction D(x, sigma), as ComfyUI's EPS / V_PREDICTION compute it (sigma_data 1)."""
        prediction = self.config.prediction_type
        if prediction == "epsilon":
            return sample - model_output * sigma
        if prediction == "v_prediction":
            return sample / (sigma**2 + 1) - model_output * sigma / (sigma**2 + 1) ** 0.5
        if prediction == "sample":
            return model_output
        raise ValueError(f"prediction_type {prediction!r} must be one of epsilon, v_prediction or sample")

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor,
             generator: torch.Generator | None = None, return_dict: bool = True) -> Any:
        """One model evaluation's part of the step: the first returns the midpoint sample x_2 (the next call's
        model input), the second the step's result with its ancestral noise (the last step: one Euler call)."""
        if not self._plan:
            raise ValueError("set_timesteps must be called before step")
        if self.step_index is None:
            self._init_step_index(timestep)
        k, first = self._eval_at[self.step_index]
        p = self._plan[k]
        out_dtype = model_output.dtype
        x = sample.to(torch.float32)
        eps = model_output.to(torch.float32)
        if first:
            denoised = self._denoised(eps, x, p["sigma"])
            if p["two"]:
                self.sample = x
                prev = p["c_mid"] * x - p["e_mid"] * denoised
            else:  # Euler to sigma_down (0 at the end)
                d = (x - denoised) / p["sigma"]
                prev = x + d * (p["sigma_down"] - p["sigma"])
                prev = self._noise(prev, p, generator)
        else:
            denoised = self._denoised(eps, x, p["sigma_s"])
            prev = p["c_end"] * self.sample - p["e_end"] * denoised
            self.sample = None
            prev = self._noise(prev, p, generator)
        self._step_index += 1
        prev = prev.to(out_dtype)
        if not return_dict:
            return prev, denoised
        from diffusers.schedulers.scheduling_utils import SchedulerOutput

        return SchedulerOutput(prev_sample=prev)

    def _noise(self, x: torch.Tensor, p: dict, generator: torch.Generator | None) -> torch.Tensor:
        if not bool(p["sigma_next"] > 0):
            return x
        noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        return x + noise * float(self.config.s_noise) * p["sigma_up"]

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x + sigma noise at the evaluation's sigma (the step's start, or after a first evaluation its midpoint)."""
        sigmas = self.sigmas.to(device=original_samples.device, dtype=original_samples.dtype)
        schedule_timesteps = self.timesteps.to(original_samples.device)
        timesteps = timesteps.to(original_samples.device)
        if self.begin_index is None:
            indices = [self.index_for_timestep(t, schedule_timesteps) for t in timesteps]
        elif self.step_index is not None:
            indices = [self.step_index] * timesteps.shape[0]
        else:
            indices = [self.begin_index] * timesteps.shape[0]
        sigma = sigmas[indices].flatten()
        while len(sigma.shape) < len(original_samples.shape):
            sigma = sigma.unsqueeze(-1)
        return original_samples + noise * sigma

    def __len__(self) -> int:
        return self.config.num_train_timesteps


OWN_SCHEDULERS: dict[str, type] = {"DPMPP2SAncestralScheduler": DPMPP2SAncestralScheduler}

__all__ = ["ADAPTERS", "DISTINCT", "DPMPP2SAncestralScheduler", "NATIVE", "NOISY", "OWN_SCHEDULERS", "ancestral_step",
           "list_timesteps", "log_training_sigmas", "set_sigma_list", "sigma_to_t", "training_sigma_table"]
