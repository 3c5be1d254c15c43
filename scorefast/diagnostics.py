"""Convergence diagnostics for MCMC draws: rank-normalised split R-hat, bulk and tail effective sample size.

Definitions from Vehtari, Gelman, Simpson, Carpenter and Bürkner (2021), "Rank-normalization, folding, and
localization: an improved R-hat for assessing convergence of MCMC", Bayesian Analysis 16(2), 667-718,
computed as ArviZ 0.23 computes them (``arviz.rhat(method="rank")``, ``arviz.ess(method="bulk")``,
``arviz.ess(method="tail")``), in PyTorch on the draws' device.

Shapes: ``draws`` is (chains, draws) or (chains, draws, *event). Each function returns one float64 value per
coordinate, a tensor of shape ``event`` (0-d for (chains, draws) input) on the draws' device; the draws are
converted to float64 first.

ArviZ's conventions, kept here:

* Each chain is split in two halves; with an odd number of draws the middle draw is dropped.
* A coordinate with any NaN draw gives NaN.
* A constant coordinate gives an R-hat of NaN (zero between- and within-chain variance) and an ESS equal to
  the number of split draws, chains * 2 * (draws // 2).
* Split chains that are each constant but not all equal give an R-hat of inf (zero within-chain variance), as
  ArviZ's numpy path does; its numba path's one-pass variance turns this into a rounding-dependent value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

__all__ = ["ChainDiagnostics", "ChainSummary", "ess_bulk", "ess_tail", "split_rhat", "summarize"]


def _coords(draws, min_chains: int) -> tuple[torch.Tensor, torch.Size]:
    """Checked draws as float64 (coords, chains, draws), and the event shape."""
    if not isinstance(draws, torch.Tensor):
        raise TypeError(f"draws must be a torch.Tensor, got {type(draws).__name__}")
    if draws.dim() < 2:
        raise ValueError(f"draws must have shape (chains, draws, *event), got {tuple(draws.shape)}")
    chains, n, *event = draws.shape
    if chains < min_chains:
        raise ValueError(f"draws must have at least {min_chains} chains (dim 0), got {chains}")
    if n < 4:
        raise ValueError(f"draws must have at least 4 draws per chain (dim 1), got {n}")
    x = draws.to(torch.float64).reshape(chains, n, math.prod(event)).permute(2, 0, 1)
    return x, torch.Size(event)


def _finish(values: torch.Tensor, x: torch.Tensor, event: torch.Size) -> torch.Tensor:
    """Per-coordinate values with NaN where the coordinate has a NaN draw, shaped ``event``."""
    nan = x.isnan().flatten(-2).any(-1)
    return torch.where(nan, torch.nan, values).reshape(event)


def _split_chains(x: torch.Tensor) -> torch.Tensor:
    """(..., chains, n) -> (..., 2 chains, n // 2): first halves, then second halves."""
    n = x.shape[-1]
    half = n // 2
    return torch.cat([x[..., :half], x[..., n - half :]], dim=-2)


def _sorted(x: torch.Tensor) -> torch.Tensor:
    """All chains' draws of each coordinate, sorted: (..., chains, n) -> (..., chains * n)."""
    return x.flatten(-2).sort(dim=-1).values.contiguous()


def _z_scale(x: torch.Tensor) -> torch.Tensor:
    """Rank normalisation over all chains together: average ranks for ties, Blom's offset 3/8."""
    flat = x.flatten(-2).contiguous()
    ordered = _sorted(x)
    below = torch.searchsorted(ordered, flat, right=False)
    upto = torch.searchsorted(ordered, flat, right=True)
    rank = (below + upto + 1).to(torch.float64) / 2  # mean of the ranks below + 1, ..., upto
    size, c = flat.shape[-1], 3 / 8
    return torch.special.ndtri((rank - c) / (size - 2 * c + 1)).reshape(x.shape)


def _median(x: torch.Tensor) -> torch.Tensor:
    """numpy's median over all chains (the mean of the two middle values), so ties fold alike."""
    ordered = _sorted(x)
    size = ordered.shape[-1]
    return (ordered[..., (size - 1) // 2] + ordered[..., size // 2]) / 2


def _quantile(x: torch.Tensor, p: float) -> torch.Tensor:
    """ArviZ's quantile over all chains: scipy's mquantiles with alphap = betap = 1 (R's type 7)."""
    ordered = _sorted(x)
    size = ordered.shape[-1]
    # mquantiles' own arithmetic: the indicator x <= quantile is exact, so its rounding must match too.
    aleph = size * p + (1.0 - p)
    k = math.floor(min(max(aleph, 1), size - 1))
    gamma = min(max(aleph - k, 0.0), 1.0)
    return (1.0 - gamma) * ordered[..., k - 1] + gamma * ordered[..., k]


def _rhat(x: torch.Tensor) -> torch.Tensor:
    """Potential scale reduction of (..., chains, n) draws (Gelman et al., BDA3)."""
    n = x.shape[-1]
    between = n * x.mean(-1).var(-1)
    within = x.var(-1).mean(-1)
    return torch.sqrt((between / within + n - 1) / n)


def _ess(x: torch.Tensor) -> torch.Tensor:
    """Effective sample size of (..., chains, n) draws: Geyer's initial monotone sequence (ArviZ's ``_ess``)."""
    chains, n = x.shape[-2:]
    centred = x - x.mean(-1, keepdim=True)
    spectrum = torch.fft.rfft(centred, n=2 * n)  # zero padding to 2n: linear, not circular, lags
    acov = (torch.fft.irfft(spectrum * spectrum.conj(), n=2 * n)[..., :n] / n).mean(-2)
    mean_var = acov[..., 0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if chains > 1:
        var_plus = var_plus + x.mean(-1).var(-1)
    rho = 1.0 - (mean_var[..., None] - acov) / var_plus[..., None]
    rho[..., 0] = 1.0  # the sequence starts from exactly 1, not from the ddof-scaled lag-0 term

    # Pairs (rho[2k], rho[2k+1]) are read until a pair sum is <= 0 or lag n - 3 is passed;
    # ``last`` is the index of the last pair read.
    pairs = max(1, (n - 1) // 2)
    even, odd = rho[..., 0 : 2 * pairs : 2], rho[..., 1 : 2 * pairs : 2]
    pair_sum = even + odd
    leading_positive = (pair_sum > 0).long().cumprod(-1).sum(-1)
    last = leading_positive.clamp(max=pairs - 1)
    # Pairs before the last are kept, made non-increasing (the monotone sequence).
    kept = torch.arange(pairs, device=x.device) < last[..., None]
    monotone = torch.where(kept, pair_sum.cummin(-1).values, 0.0).sum(-1)
    # The last pair adds its even term once, if that pair was stored or the term is positive.
    last_even = even.gather(-1, last[..., None]).squeeze(-1)
    last_sum = pair_sum.gather(-1, last[..., None]).squeeze(-1)
    last_even = torch.where((last_sum >= 0) | (last_even > 0), last_even, 0.0)
    tau = -1.0 + 2.0 * monotone + last_even

    size = chains * n
    floor = 1.0 / math.log10(size)  # bounds the ESS of antithetic chains by size * log10(size)
    tau = torch.where(floor > tau, floor, tau)
    constant = (x.amax((-2, -1)) - x.amin((-2, -1))) < torch.finfo(torch.float64).resolution
    return torch.where(constant, float(size), size / tau)


def split_rhat(draws: torch.Tensor) -> torch.Tensor:
    """Rank-normalised split R-hat (Vehtari et al. 2021; ArviZ's ``rhat(method="rank")``).

    The larger of the bulk R-hat (rank-normalised split chains) and the tail R-hat (rank-normalised
    folded split draws |x - median|). Values near 1 indicate mixing; Vehtari et al. suggest 1.01 as a bound.

    Args:
        draws: tensor (chains, draws) or (chains, draws, *event), any real dtype and device; at least
            2 chains and 4 draws per chain.

    Returns:
        float64 tensor of shape ``event``: NaN where a coordinate has a NaN draw or is constant.
    """
    x, event = _coords(draws, min_chains=2)
    split = _split_chains(x)
    bulk = _rhat(_z_scale(split))
    tail = _rhat(_z_scale((split - _median(split)[..., None, None]).abs()))
    # Python's max(bulk, tail), as ArviZ takes it: a NaN bulk value wins, a NaN tail value loses.
    return _finish(torch.where(tail > bulk, tail, bulk), x, event)


def ess_bulk(draws: torch.Tensor) -> torch.Tensor:
    """Bulk effective sample size (Vehtari et al. 2021; ArviZ's ``ess(method="bulk")``).

    The ESS of the rank-normalised split chains.

    Args:
        draws: tensor (chains, draws) or (chains, draws, *event), any real dtype and device; at least
            1 chain and 4 draws per chain.

    Returns:
        float64 tensor of shape ``event``: NaN where a coordinate has a NaN draw; the number of split
        draws where it is constant.
    """
    x, event = _coords(draws, min_chains=1)
    return _finish(_ess(_z_scale(_split_chains(x))), x, event)


def ess_tail(draws: torch.Tensor, prob: float | Sequence[float] = (0.05, 0.95)) -> torch.Tensor:
    """Tail effective sample size (Vehtari et al. 2021; ArviZ's ``ess(method="tail")``).

    The smaller of the ESS of the split-chain indicators x <= q for the two quantiles q of ``prob``,
    each computed over all (unsplit) draws of the coordinate with scipy's ``mquantiles(alphap=1, betap=1)``.

    Args:
        draws: tensor (chains, draws) or (chains, draws, *event), any real dtype and device; at least
            1 chain and 4 draws per chain.
        prob: the two quantile levels (low, high), default (0.05, 0.95); a single level p means (p, 1 - p).

    Returns:
        float64 tensor of shape ``event``: NaN where a coordinate has a NaN draw.
    """
    if not isinstance(prob, Sequence):
        prob = (prob, 1 - prob)
    if len(prob) != 2 or not all(0.0 <= float(p) <= 1.0 for p in prob):
        raise ValueError(f"prob must be a level in [0, 1] or two of them, got {prob!r}")
    x, event = _coords(draws, min_chains=1)
    low, high = (_ess(_split_chains((x <= _quantile(x, float(p))[..., None, None]).to(x.dtype))) for p in prob)
    # Python's min(low, high), as ArviZ takes it.
    return _finish(torch.where(high < low, high, low), x, event)


class ChainSummary(NamedTuple):
    """Diagnostics of a record (chains, draws, coords): rank-normalised split R-hat, bulk and tail ESS,
    each a float64 tensor (coords,); the number of chains and draws they were computed from."""

    rhat: torch.Tensor
    ess_bulk: torch.Tensor
    ess_tail: torch.Tensor
    chains: int
    draws: int

    def as_dict(self) -> dict:
        """Plain numbers (JSON-ready): per-coordinate lists, the largest R-hat and the smallest ESS
        (None where every coordinate is NaN)."""

        def worst(values: torch.Tensor, largest: bool):
            finite = values[~values.isnan()]
            if finite.numel() == 0:
                return None
            return float(finite.max() if largest else finite.min())

        return {
            "rhat": self.rhat.tolist(),
            "ess_bulk": self.ess_bulk.tolist(),
            "ess_tail": self.ess_tail.tolist(),
            "rhat_max": worst(self.rhat, True),
            "ess_bulk_min": worst(self.ess_bulk, False),
            "ess_tail_min": worst(self.ess_tail, False),
            "chains": self.chains,
            "draws": self.draws,
        }


def summarize(record: torch.Tensor) -> ChainSummary:
    """R-hat, bulk and tail ESS of a record (chains, draws, coords), e.g. ``ChainDiagnostics.record()``,
    or the concatenation over dim 0 of several processes' records (the chains of every rank).

    Values are NaN where a statistic is undefined: fewer than 4 draws, or (R-hat) fewer than 2 chains.
    """
    if not isinstance(record, torch.Tensor) or record.dim() != 3:
        shape = list(record.shape) if isinstance(record, torch.Tensor) else type(record).__name__
        raise ValueError(f"record must be a tensor (chains, draws, coords), got {shape}")
    chains, n, coords = record.shape
    nan = torch.full((coords,), torch.nan, dtype=torch.float64, device=record.device)
    if chains == 0 or n < 4:
        return ChainSummary(nan, nan.clone(), nan.clone(), chains, n)
    rhat = split_rhat(record) if chains >= 2 else nan
    return ChainSummary(rhat, ess_bulk(record), ess_tail(record), chains, n)


def _check_count(value, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return value


class ChainDiagnostics:
    """R-hat and bulk/tail ESS of a running sampler, kept in memory bounded by the settings.

    A sampler (``chain_diagnostics=`` of scorefast.samplers and gmm_chain) offers it the state x (N, *event)
    after its steps. It keeps, for the first ``max_chains`` particles (the chains) and the first
    ``max_coords`` coordinates of each flattened particle, the states after the steps past ``burn_in``
    that are multiples of ``thin`` in a float64 buffer of ``max_draws`` draws. ``thin`` starts at ``every``;
    when the buffer is full and a draw is due, the kept draws that are not at multiples of 2 thin (every
    second one) are dropped and ``thin`` doubles. So memory is O(max_chains * max_draws * max_coords)
    whatever the number of steps, and the record is always the chain thinned at a regular stride.

    "Streaming" means that bounded memory, not an online estimator: ``summary()`` computes the exact
    Vehtari et al. (2021) statistics (``split_rhat``, ``ess_bulk``, ``ess_tail`` above, equal to ArviZ's) of
    the kept draws, so the ESS is counted in kept draws. Until the buffer first fills (about
    burn_in + every * max_draws steps) nothing is thinned beyond ``every``. The steps are the chain's
    (1-based), so a fused chain recording at multiples of ``every`` and a stepwise one keep the same.

    Args:
        max_chains: chains tracked, the first particles (default 64).
        max_coords: coordinates tracked per chain, the first of the flattened particle (default 8).
        max_draws: M, the buffer's draws per chain; even and >= 4 (default 1024).
        every: the initial stride in steps (default 1: every step).
        burn_in: states after steps <= burn_in are not kept (default 0).

    For several processes (each running its own particles): every rank offers the same steps, so their
    records have the same draws; ``summarize(torch.cat(gathered_records))`` gives the diagnostics over
    all their chains. ``state_dict()`` / ``load_state_dict()`` carry the state through checkpoints.
    """

    _KIND = "scorefast.ChainDiagnostics"
    _SETTINGS = ("max_chains", "max_coords", "max_draws", "every", "burn_in")

    def __init__(
        self, *, max_chains: int = 64, max_coords: int = 8, max_draws: int = 1024, every: int = 1, burn_in: int = 0
    ):
        self.max_chains = _check_count(max_chains, "max_chains", 1)
        self.max_coords = _check_count(max_coords, "max_coords", 1)
        self.max_draws = _check_count(max_draws, "max_draws", 4)
        if max_draws % 2:
            raise ValueError(f"max_draws must be even (the buffer is halved when full), got {max_draws}")
        self.every = _check_count(every, "every", 1)
        self.burn_in = _check_count(burn_in, "burn_in", 0)
        self.thin = self.every
        self.last_step = 0  # the last step offered
        self.count = 0  # draws kept
        self._buf: torch.Tensor | None = None  # (chains, max_draws, coords) float64

    def due(self, step: int) -> bool:
        """Whether the state after ``step`` falls on the current stride (``update`` may keep it)."""
        return step > self.burn_in and step % self.thin == 0

    def update(self, x: torch.Tensor, step: int | None = None) -> None:
        """Offer the state x (N, *event) after the chain's step ``step`` (1-based, increasing; default: the
        last offered step + 1). x is read, not kept; N and the flattened event may not shrink between calls."""
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
            raise ValueError("x must be a tensor (N, *event) with N >= 1")
        step = self.last_step + 1 if step is None else int(step)
        if step <= self.last_step:
            raise ValueError(f"step must increase: got {step} after {self.last_step}")
        self.last_step = step
        flat = x.detach().reshape(x.shape[0], -1)
        if self._buf is None:
            chains, coords = min(flat.shape[0], self.max_chains), min(flat.shape[1], self.max_coords)
            self._buf = torch.empty((chains, self.max_draws, coords), dtype=torch.float64, device=x.device)
        chains, _, coords = self._buf.shape
        if flat.shape[0] < chains or flat.shape[1] < coords:
            raise ValueError(f"x has {flat.shape[0]} particles of {flat.shape[1]} values; {chains} x {coords} tracked")
        if not self.due(step):
            return
        if self.count == self.max_draws:
            self._halve()
            if not self.due(step):
                return
        if self._buf.device != x.device:
            self._buf = self._buf.to(x.device)
        self._buf[:, self.count].copy_(flat[:chains, :coords])
        self.count += 1

    def _halve(self) -> None:
        """Keep the draws at multiples of 2 * thin (every second one): half the buffer."""
        half = self.max_draws // 2
        first = (self.burn_in // self.thin + 1) * self.thin  # the step of the first kept draw
        self._buf[:, :half] = self._buf[:, (first // self.thin) % 2 :: 2].clone()
        self.count = half
        self.thin *= 2

    def record(self) -> torch.Tensor:
        """The kept draws, float64 (chains, draws, coords) on the device of the states (a copy); (0, 0, 0)
        before the first state."""
        if self._buf is None:
            return torch.empty((0, 0, 0), dtype=torch.float64)
        return self._buf[:, : self.count].clone()

    def summary(self) -> ChainSummary:
        """R-hat, bulk and tail ESS (per tracked coordinate) of the kept draws: ``summarize(self.record())``."""
        return summarize(self.record())

    def state_dict(self) -> dict:
        """The settings and kept draws (CPU tensors, ints, strings): what a checkpoint stores."""
        return {
            "kind": self._KIND,
            **{name: getattr(self, name) for name in self._SETTINGS},
            "thin": self.thin,
            "last_step": self.last_step,
            "record": self.record().cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``; its settings must equal this accumulator's (ValueError naming one)."""
        if not isinstance(state, dict) or state.get("kind") != self._KIND:
            raise ValueError("not a ChainDiagnostics state")
        for name in self._SETTINGS:
            if state.get(name) != getattr(self, name):
                raise ValueError(
                    f"the saved chain diagnostics have {name}={state.get(name)!r}, "
                    f"this accumulator has {name}={getattr(self, name)!r}"
                )
        record, thin, last = state.get("record"), state.get("thin"), state.get("last_step")
        if not (isinstance(record, torch.Tensor) and record.dim() == 3 and record.shape[1] <= self.max_draws):
            raise ValueError("the saved chain diagnostics have no valid record")
        if not (isinstance(thin, int) and isinstance(last, int) and thin >= self.every and last >= 0):
            raise ValueError("the saved chain diagnostics have an invalid stride or step")
        chains, n, coords = record.shape
        self.thin, self.last_step, self.count = thin, last, n
        self._buf = None
        if chains:
            self._buf = torch.empty((chains, self.max_draws, coords), dtype=torch.float64)
            self._buf[:, :n] = record
