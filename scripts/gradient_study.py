"""Vanishing and exploding gradients, measured: sweep the recurrent scale for tanh and ReLU.

For every (W_hh family, activation, radius) it runs a few random input sequences through a random
RNN and measures, exactly (SVD of the explicit Jacobian products, float64), every
``‖∂h_t/∂h_k‖₂``; summarises them by lag ``t - k`` (geometric mean over pairs and sequences);
fits the per-lag factor ``ρ`` in ``‖∂h_{k+ℓ}/∂h_k‖ ≈ C ρ^ℓ`` (``ρ < 1`` vanishing, ``ρ > 1``
exploding); and puts beside it the seed's bound ``(‖W_hh‖ γ)^ℓ``, the Pascanu et al. verdict and
the top Lyapunov exponent.

W_hh families: ``orthogonal`` is ``r·Q`` with ``Q`` random orthogonal, so its spectral norm and
spectral radius both equal ``r``; ``gaussian`` is ``N(0, 1/H)`` rescaled to spectral radius ``r``
(its spectral norm is about ``2r``); ``identity`` is ``r·I`` (the IRNN family).

Writes to ``--out``: ``norm_vs_lag.png``, ``heatmaps.png``, ``rates.png`` and ``results.json``
(every number in the plots). The default run takes well under a minute on 2 CPU cores.

  python scripts/gradient_study.py --out docs/gradient_study
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jrnn

FAMILIES = ("orthogonal", "gaussian", "identity")


def parse(argv: Sequence[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--out", type=pathlib.Path, required=True, help="output directory")
  p.add_argument("--hidden", type=int, default=32, help="H")
  p.add_argument("--inputs", type=int, default=4, help="I")
  p.add_argument("--steps", type=int, default=60, help="T, sequence length")
  p.add_argument("--batch", type=int, default=4, help="random sequences per setting")
  p.add_argument("--radii", type=float, nargs="+",
                 default=[0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5], help="recurrent scales r")
  p.add_argument("--activations", nargs="+", default=["tanh", "relu"])
  p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
  p.add_argument("--heatmap-radii", type=float, nargs="+", default=[0.5, 1.0, 1.5])
  p.add_argument("--input-scale", type=float, default=0.1,
                 help="std of the N(0, s²) inputs; larger inputs saturate tanh (smaller σ')")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def make_params(key, cfg, family: str, radius: float) -> jrnn.RNNParams:
  """A random RNN whose ``W_hh`` has recurrent scale ``radius`` in the given family."""
  scheme = {"orthogonal": "orthogonal", "gaussian": "spectral", "identity": "identity"}[family]
  params = jrnn.init_params(key, cfg.inputs, cfg.hidden, 1, scheme=scheme, dtype=jnp.float64,
                            scale=None if family == "gaussian" else radius,
                            spectral_radius=radius if family == "gaussian" else None)
  if family == "identity":  # IRNN draws tiny input weights; use Glorot-sized ones to drive it
    glorot = jrnn.init_params(key, cfg.inputs, cfg.hidden, 1, scheme="glorot", dtype=jnp.float64)
    params = params._replace(w_xh=glorot.w_xh)
  return params


def measure(params, xs, activation: str):
  """Norms and bounds for a batch of sequences ``xs (B, T, I)``: one jitted computation."""
  def one(x):
    traj = jrnn.reference.trajectory(params, x, activation=activation)
    return (jrnn.diagnostics.jacobian_norms(traj), jrnn.diagnostics.trajectory_gamma(traj),
            jrnn.diagnostics.lyapunov_exponents(traj, num_exponents=1, burn_in=min(10, x.shape[0] - 1))[0])
  norms, gammas, lyap = jax.vmap(one)(xs)
  return norms, jrnn.diagnostics.lag_profile(norms), jnp.max(gammas), jnp.mean(lyap)


def regime(rate: float, tol: float = 5e-3) -> str:
  """``vanishing`` (ρ̂ < 1 - tol), ``exploding`` (ρ̂ > 1 + tol) or ``neutral`` in between."""
  if rate < 1 - tol:
    return "vanishing"
  return "exploding" if rate > 1 + tol else "neutral"


def clean(x):
  """JSON-safe: arrays to lists, non-finite floats to None."""
  if isinstance(x, dict):
    return {k: clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [clean(v) for v in x]
  if isinstance(x, (jax.Array, np.ndarray, np.generic)):
    return clean(np.asarray(x).tolist())
  if isinstance(x, float):  # 9 significant digits keep the file small and the plots exact
    return float(f"{x:.9g}") if math.isfinite(x) else None
  return x


def run(cfg) -> dict:
  key = jax.random.key(cfg.seed)
  k_x, k_p = jax.random.split(key)
  xs = cfg.input_scale * jax.random.normal(k_x, (cfg.batch, cfg.steps, cfg.inputs), jnp.float64)
  measure_jit = jax.jit(measure, static_argnums=2)
  lags = np.arange(cfg.steps + 1)
  settings = []
  for family in cfg.families:
    for act in cfg.activations:
      gamma_sup = jrnn.get_activation(act).gamma
      for radius in cfg.radii:
        params = make_params(k_p, cfg, family, radius)
        norms, prof, gamma_traj, lyap = measure_jit(params, xs, act)
        spec = jrnn.diagnostics.weight_spectrum(params.w_hh)
        verdict = jrnn.diagnostics.pascanu_conditions(params.w_hh, act)
        fit = jrnn.diagnostics.fit_rate(prof)
        w_norm = float(spec.spectral_norm)
        entry = {
            "family": family, "activation": act, "radius": radius,
            "spectral_norm": w_norm, "spectral_radius": float(spec.spectral_radius),
            "singular_values": spec.singular_values,
            "pascanu": {"sigma_max": float(verdict.sigma_max), "gamma": float(verdict.gamma),
                        "threshold": float(verdict.threshold), "eta": float(verdict.eta),
                        "vanishing_sufficient": bool(verdict.vanishing_sufficient),
                        "exploding_necessary": bool(verdict.exploding_necessary),
                        "summary": verdict.summary()},
            "lag_profile": {"lag": prof.lag, "geo_mean": prof.geo_mean, "max": prof.max,
                            "min": prof.min, "count": prof.count, "nonzero": prof.nonzero},
            "bound_sup_gamma": {"gamma": gamma_sup,
                                "per_lag": (w_norm * gamma_sup) ** lags.astype(float)},
            "bound_trajectory_gamma": {"gamma": float(gamma_traj),
                                       "per_lag": (w_norm * float(gamma_traj)) ** lags.astype(float)},
            "bound_holds": bool(np.all(np.asarray(prof.max) <= (w_norm * float(gamma_traj))
                                       ** lags * (1 + 1e-9))),
            "fit": {"rate": float(fit.rate), "log_slope": float(fit.log_slope),
                    "log_intercept": float(fit.log_intercept), "num_lags": int(fit.num_lags),
                    "regime": regime(float(fit.rate))},
            "lyapunov_top": float(lyap), "lyapunov_growth_factor": math.exp(float(lyap)),
        }
        if any(math.isclose(radius, r) for r in cfg.heatmap_radii):
          entry["heatmap_sequence0"] = norms[0]
        settings.append(entry)
        print(f"{family:10s} {act:5s} r={radius:<5} ‖W‖={w_norm:6.3f} rate={float(fit.rate):.4f} "
              f"exp(λ1)={math.exp(float(lyap)):.4f} {entry['fit']['regime']}", flush=True)
  config = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(cfg).items()}
  return {"config": config, "settings": settings}


def plot(results: dict, out: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib import colors

  cfg = results["config"]
  settings = results["settings"]
  fams, acts, radii = cfg["families"], cfg["activations"], cfg["radii"]
  cmap = plt.get_cmap("coolwarm")
  norm_r = colors.Normalize(min(radii), max(radii))

  def pick(fam, act):
    return [s for s in settings if s["family"] == fam and s["activation"] == act]

  fig, axes = plt.subplots(len(fams), len(acts), figsize=(5.5 * len(acts), 4.2 * len(fams)),
                           squeeze=False)
  for i, fam in enumerate(fams):
    for j, act in enumerate(acts):
      ax = axes[i, j]
      for s in pick(fam, act):
        lag = np.asarray(s["lag_profile"]["lag"])
        geo = np.asarray([np.nan if v is None or v == 0 else v for v in s["lag_profile"]["geo_mean"]])
        bound = np.asarray([np.nan if v is None else v for v in s["bound_sup_gamma"]["per_lag"]])
        c = cmap(norm_r(s["radius"]))
        ax.semilogy(lag, geo, color=c, lw=2, label=f"r={s['radius']:g} (ρ̂={s['fit']['rate']:.2f})")
        ax.semilogy(lag, bound, color=c, lw=1, ls="--")
      ax.set_ylim(1e-12, 1e12)
      ax.axhline(1.0, color="k", lw=0.5)
      ax.set_title(f"{act}, W_hh {fam}: ‖∂h_(k+ℓ)/∂h_k‖ (solid)\n"
                   f"seed bound (‖W_hh‖·sup|σ'|)^ℓ (dashed)", fontsize=9)
      ax.set_xlabel("lag ℓ = t - k")
      ax.set_ylabel("spectral norm (geometric mean over k, sequences)")
      ax.legend(fontsize=7, loc="lower left")
  fig.tight_layout()
  fig.savefig(out / "norm_vs_lag.png", dpi=110)
  plt.close(fig)

  maps = [s for s in settings if "heatmap_sequence0" in s]
  hr = sorted({s["radius"] for s in maps})
  cols = [(f, a) for f in fams for a in acts]
  fig, axes = plt.subplots(len(hr), len(cols), figsize=(3.0 * len(cols) + 1.5, 3.0 * len(hr)),
                           squeeze=False)
  heat = plt.get_cmap("RdBu_r").with_extremes(bad="lightgray")
  image = None
  for i, r in enumerate(hr):
    for j, (fam, act) in enumerate(cols):
      ax = axes[i, j]
      match = [s for s in maps if s["family"] == fam and s["activation"] == act
               and math.isclose(s["radius"], r)]
      if not match:
        ax.axis("off")
        continue
      m = np.asarray([[np.nan if v is None else v for v in row]
                      for row in match[0]["heatmap_sequence0"]])
      t, k = np.indices(m.shape)
      with np.errstate(divide="ignore", invalid="ignore"):
        logm = np.where((t >= k) & (m > 0), np.log10(np.where(m > 0, m, 1.0)), np.nan)
      image = ax.imshow(logm, origin="lower", cmap=heat, vmin=-10, vmax=10,
                        interpolation="nearest")
      ax.set_title(f"{act}, {fam}, r={r:g}", fontsize=9)
      ax.set_xlabel("k")
      ax.set_ylabel("t")
  if image is not None:
    fig.colorbar(image, ax=axes, shrink=0.8,
                 label="log10 ‖∂h_t/∂h_k‖ (gray: t < k, or exactly 0)")
  fig.savefig(out / "heatmaps.png", dpi=90)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(6, 4.5))
  markers = {"orthogonal": "o", "gaussian": "s", "identity": "^"}
  styles = {"tanh": "-", "relu": "--"}
  for fam in fams:
    for act in acts:
      ss = pick(fam, act)
      ax.plot([s["radius"] for s in ss], [s["fit"]["rate"] for s in ss],
              marker=markers.get(fam, "x"), ls=styles.get(act, ":"), label=f"{act}, {fam}")
  lo, hi = min(radii), max(radii)
  ax.plot([lo, hi], [lo, hi], color="gray", lw=0.8, label="ρ = r (linear, orthogonal)")
  ax.axhline(1.0, color="k", lw=0.8)
  ax.set_xlabel("recurrent scale r (spectral radius of W_hh)")
  ax.set_ylabel("fitted per-lag factor ρ̂")
  ax.set_title("ρ̂ < 1: vanishing, ρ̂ > 1: exploding", fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out / "rates.png", dpi=110)
  plt.close(fig)


def main(argv: Sequence[str] = ()) -> dict:
  cfg = parse(list(argv))
  jax.config.update("jax_enable_x64", True)  # products of 60 Jacobians leave float32's range
  cfg.out.mkdir(parents=True, exist_ok=True)
  results = run(cfg)
  results["command"] = "python scripts/gradient_study.py " + " ".join(argv)
  (cfg.out / "results.json").write_text(json.dumps(clean(results), allow_nan=False) + "\n")
  plot(results, cfg.out)
  print(f"wrote {cfg.out}/results.json, norm_vs_lag.png, heatmaps.png, rates.png")
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
