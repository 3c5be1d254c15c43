"""Diagnostics of sharded particles reduced over every rank, equal to the one-process values.

Counts are summed as integers (per-mode fractions, non-finite and diverged particles: exact);
sums of floats in float64 (mean, covariance, mean acceptance, score norms: equal up to the
rounding of the summation order); R-hat and ESS gather the chains' draws and compute on the
whole (bit for bit). Every function is a collective: all ranks of ``group`` call it.
"""

from __future__ import annotations

import torch

from .. import diagnostics
from ..samplers import Diagnostics
from . import _collectives


def _rows(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise TypeError(f"{name} must be a tensor (n_local, ...), got {type(x).__name__}")
    return x.reshape(x.shape[0], -1)


def mode_fractions(x: torch.Tensor, target, group=None) -> torch.Tensor:
    """The fraction of all ranks' particles nearest (by responsibility) to each of ``target``'s
    modes: float64 (K,). ``x``: this rank's particles (n_local, D); particles with a non-finite
    coordinate are not counted (all fractions 0 when no particle is finite)."""
    flat = _rows(x)
    finite = flat[torch.isfinite(flat).all(1)].double()
    k = target.responsibilities(finite.to(target.means.device)).argmax(1)
    counts = _collectives.all_reduce_sum(torch.bincount(k, minlength=target.num_components).to(x.device), group)
    return counts.double() / max(1, int(counts.sum()))


def mean_and_covariance(x: torch.Tensor, group=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) (divisor N - 1) of all ranks' particles, float64.

    ``x``: this rank's particles (n_local, ...), flattened to D coordinates. Two passes, as
    torch.cov: the global mean first, then the summed products of deviations from it. NaN in
    any particle gives NaN; the covariance of fewer than 2 particles is NaN."""
    flat = _rows(x).double()
    count = int(_collectives.all_reduce_sum(torch.tensor(flat.shape[0]), group))
    mean = _collectives.all_reduce_sum(flat.sum(0), group) / max(count, 1)
    if count == 0:
        mean = torch.full_like(mean, float("nan"))
    dev = flat - mean
    products = _collectives.all_reduce_sum(dev.T @ dev, group)
    cov = products / (count - 1) if count > 1 else torch.full_like(products, float("nan"))
    return mean, cov


def mean_acceptance_rate(acceptance_rate: torch.Tensor, group=None) -> float:
    """The mean over all ranks' particles of MALA's per-particle acceptance rates (n_local,)."""
    rates = _rows(acceptance_rate, "acceptance_rate")
    local = torch.stack([rates.double().sum(), rates.new_tensor(rates.shape[0], dtype=torch.float64)])
    total = _collectives.all_reduce_sum(local, group)
    return float(total[0] / total[1])


def reduce_diagnostics(diag: dict, num_particles: int, group=None) -> Diagnostics:
    """A sampler's diagnostics of this rank's ``num_particles`` particles, made the whole run's:
    nan_particles and diverged summed, score_norm (per-step means) the particle-weighted mean
    over ranks (float64), acceptance_rate (per particle) gathered in global particle order on
    every rank. Keys it does not know are left as they are."""
    out = Diagnostics(diag)
    for key in ("nan_particles", "diverged"):
        if key in diag:
            out[key] = int(_collectives.all_reduce_sum(torch.tensor(int(diag[key])), group))
    if diag.get("score_norm") is not None:
        local = torch.tensor(diag["score_norm"], dtype=torch.float64) * num_particles
        weights = _collectives.all_reduce_sum(torch.tensor(float(num_particles)), group)
        out["score_norm"] = (_collectives.all_reduce_sum(local, group) / weights).tolist()
    if diag.get("acceptance_rate") is not None:
        out["acceptance_rate"] = _collectives.gather_rows(diag["acceptance_rate"], dst=None, group=group)
    return out


def rhat_and_ess(draws: torch.Tensor, *, chain_dim: int = 0, dst: int | None = None, group=None, prob=(0.05, 0.95)):
    """Split R-hat, bulk and tail ESS (scorefast.diagnostics) of every rank's chains together.

    Args:
        draws: this rank's chains' draws, chains along ``chain_dim`` (e.g. (chains, draws, *event),
            or gmm_chain's trajectory (draws, chains, D) with chain_dim=1).
        dst: the global rank that computes them (None: every rank).
        prob: ess_tail's quantile levels.

    Returns:
        {"split_rhat", "ess_bulk", "ess_tail"}: float64 tensors of shape ``event``, equal to the
        one-process values of the gathered chains bit for bit (split_rhat None with a single
        chain in all); None on ranks other than ``dst``.
    """
    if not isinstance(draws, torch.Tensor):
        raise TypeError(f"draws must be a torch.Tensor, got {type(draws).__name__}")
    whole = _collectives.gather_rows(draws, dst=dst, group=group, dim=chain_dim)
    if whole is None:
        return None
    whole = whole.movedim(chain_dim, 0)
    result = {"ess_bulk": diagnostics.ess_bulk(whole), "ess_tail": diagnostics.ess_tail(whole, prob)}
    result["split_rhat"] = diagnostics.split_rhat(whole) if whole.shape[0] >= 2 else None
    return result
