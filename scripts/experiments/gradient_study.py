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

Draws: every setting is measured on ``--draws`` independent weight draws (draw ``d`` from
``fold_in(k_p, d)``; the input sequences are the same for every draw and setting). Draw 0 keeps
the full record (lag profile, bounds, heat map: the plots use it); every draw adds ``ρ̂``,
``exp(λ₁)``, ``‖W_hh‖`` and whether the bound held, summarised by median, min and max.

``λ₁`` is the top exponent of the full QR iteration (all ``H`` exponents,
``jrnn.diagnostics.lyapunov_exponents`` with its default start), averaged over the sequences.

``agree`` (per setting): ``|exp(λ₁) - ρ̂| <= AGREE_RTOL · ρ̂`` on every draw (``AGREE_RTOL`` 0.05).

Writes to ``--out``: ``results.json`` (every number in the plots and tables, the command, commit,
versions, the input sequences' SHA-256, seed and machine: the same bytes when the same command
runs again on the same machine), ``timing.json`` (wall and CPU seconds, load), ``results.md``
(the per-setting table over draws), ``norm_vs_lag.png``, ``heatmaps.png`` and ``rates.png``.
An existing ``results.json`` in ``--out`` is refused unless ``--overwrite``.

  python scripts/experiments/gradient_study.py --out docs/gradient_study
  python scripts/experiments/gradient_study.py --out /tmp/gs --quick   # seconds: what the test runs
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import statistics
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jrnn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # scripts/
from common import record  # noqa: E402  pylint: disable=wrong-import-position

FAMILIES = ("orthogonal", "gaussian", "identity")
AGREE_RTOL = 0.05  # |exp(λ₁) - ρ̂| <= AGREE_RTOL·ρ̂ on every draw
QUICK = dict(hidden=4, steps=6, batch=2, radii=[0.5, 1.5], heatmap_radii=[0.5, 1.5], draws=2)
DEFAULTS = dict(
  hidden=32,
  steps=60,
  batch=4,
  radii=[0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5],
  heatmap_radii=[0.5, 1.0, 1.5],
  draws=5,
)


def parse(argv: Sequence[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
  )
  p.add_argument("--out", type=pathlib.Path, required=True, help="output directory")
  p.add_argument(
    "--quick",
    action="store_true",
    help=f"a seconds-long run for tests: {QUICK} (explicit flags still win)",
  )
  p.add_argument("--hidden", type=int, default=None, help=f"H (default {DEFAULTS['hidden']})")
  p.add_argument("--inputs", type=int, default=4, help="I")
  p.add_argument(
    "--steps", type=int, default=None, help=f"T, sequence length (default {DEFAULTS['steps']})"
  )
  p.add_argument(
    "--batch",
    type=int,
    default=None,
    help=f"random sequences per setting (default {DEFAULTS['batch']})",
  )
  p.add_argument(
    "--radii",
    type=float,
    nargs="+",
    default=None,
    help=f"recurrent scales r (default {DEFAULTS['radii']})",
  )
  p.add_argument("--activations", nargs="+", default=["tanh", "relu"])
  p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
  p.add_argument(
    "--heatmap-radii",
    type=float,
    nargs="+",
    default=None,
    help=f"radii with a heat map (default {DEFAULTS['heatmap_radii']})",
  )
  p.add_argument(
    "--draws",
    type=int,
    default=None,
    help=f"independent W_hh draws per setting (default {DEFAULTS['draws']})",
  )
  p.add_argument(
    "--input-scale",
    type=float,
    default=0.1,
    help="std of the N(0, s²) inputs; larger inputs saturate tanh (smaller σ')",
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no-plot", action="store_true", help="skip the PNGs")
  p.add_argument(
    "--overwrite", action="store_true", help="replace results already in --out (otherwise refused)"
  )
  cfg = p.parse_args(argv)
  for name, value in (QUICK if cfg.quick else DEFAULTS).items():
    if getattr(cfg, name) is None:
      setattr(cfg, name, value)
  for name in ("hidden", "inputs", "steps", "batch", "draws"):
    if getattr(cfg, name) < 1:
      p.error(f"--{name} must be >= 1, got {getattr(cfg, name)}")
  if cfg.steps < 2:
    p.error(f"--steps must be >= 2 (the Lyapunov estimate skips a burn-in), got {cfg.steps}")
  refusal = record.refuse_existing(cfg.out, cfg.overwrite)
  if refusal:
    p.error(refusal)
  return cfg


def make_params(key, cfg, family: str, radius: float) -> jrnn.RNNParams:
  """A random RNN whose ``W_hh`` has recurrent scale ``radius`` in the given family."""
  scheme = {"orthogonal": "orthogonal", "gaussian": "spectral", "identity": "identity"}[family]
  params = jrnn.init_params(
    key,
    cfg.inputs,
    cfg.hidden,
    1,
    scheme=scheme,
    dtype=jnp.float64,
    scale=None if family == "gaussian" else radius,
    spectral_radius=radius if family == "gaussian" else None,
  )
  if family == "identity":  # IRNN draws tiny input weights; use Glorot-sized ones to drive it
    glorot = jrnn.init_params(key, cfg.inputs, cfg.hidden, 1, scheme="glorot", dtype=jnp.float64)
    params = params._replace(w_xh=glorot.w_xh)
  return params


def measure(params, xs, activation: str):
  """Norms and bounds for a batch of sequences ``xs (B, T, I)``: one jitted computation.

  Returns the norms ``(B, T+1, T+1)``, their lag profile, the largest |σ'| met, and ``λ₁`` of
  the full QR iteration (all ``H`` exponents) averaged over the sequences.
  """
  burn_in = min(10, xs.shape[1] - 1)

  def one(x):
    traj = jrnn.reference.trajectory(params, x, activation=activation)
    return (
      jrnn.diagnostics.jacobian_norms(traj),
      jrnn.diagnostics.trajectory_gamma(traj),
      jrnn.diagnostics.lyapunov_exponents(traj, burn_in=burn_in)[0],
    )

  norms, gammas, lyap = jax.vmap(one)(xs)
  return norms, jrnn.diagnostics.lag_profile(norms), jnp.max(gammas), jnp.mean(lyap)


def regime(rate: float, tol: float = 5e-3) -> str:
  """``vanishing`` (ρ̂ < 1 - tol), ``exploding`` (ρ̂ > 1 + tol) or ``neutral`` in between."""
  if rate < 1 - tol:
    return "vanishing"
  return "exploding" if rate > 1 + tol else "neutral"


def clean(x):
  """JSON-safe: arrays to lists, non-finite floats to None, floats to 9 significant digits."""
  if isinstance(x, dict):
    return {k: clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [clean(v) for v in x]
  if isinstance(x, (jax.Array, np.ndarray, np.generic)):
    return clean(np.asarray(x).tolist())
  if isinstance(x, float):  # 9 significant digits keep the file small and the plots exact
    return float(f"{x:.9g}") if math.isfinite(x) else None
  return x


def agrees(rate: float, growth: float) -> bool:
  """The stated criterion: ``|exp(λ₁) - ρ̂| <= AGREE_RTOL · ρ̂`` (False if either is not finite)."""
  if not (math.isfinite(rate) and math.isfinite(growth)):
    return False
  return abs(growth - rate) <= AGREE_RTOL * rate


def spread(values) -> dict:
  """Median, min and max of the finite values (``None`` if there are none) and how many were
  not finite."""
  finite = [v for v in values if math.isfinite(v)]
  if not finite:
    return {"median": None, "min": None, "max": None, "non_finite": len(values)}
  return {
    "median": statistics.median(finite),
    "min": min(finite),
    "max": max(finite),
    "non_finite": len(values) - len(finite),
  }


def measure_draw(params, xs, act, measure_jit, lags, *, full: bool, heatmap: bool) -> dict:
  """One weight draw of one setting; ``full`` keeps the lag profile, bounds and verdict."""
  norms, prof, gamma_traj, lyap = measure_jit(params, xs, act)
  spec = jrnn.diagnostics.weight_spectrum(params.w_hh)
  fit = jrnn.diagnostics.fit_rate(prof)
  w_norm = float(spec.spectral_norm)
  gamma_traj = float(gamma_traj)
  bound_holds = bool(np.all(np.asarray(prof.max) <= (w_norm * gamma_traj) ** lags * (1 + 1e-9)))
  entry = {
    "spectral_norm": w_norm,
    "spectral_radius": float(spec.spectral_radius),
    "bound_holds": bound_holds,
    "fit": {
      "rate": float(fit.rate),
      "log_slope": float(fit.log_slope),
      "log_intercept": float(fit.log_intercept),
      "num_lags": int(fit.num_lags),
      "regime": regime(float(fit.rate)),
    },
    "lyapunov_top": float(lyap),
    "lyapunov_growth_factor": math.exp(float(lyap)),
  }
  if not full:
    return entry
  gamma_sup = jrnn.get_activation(act).gamma
  verdict = jrnn.diagnostics.pascanu_conditions(params.w_hh, act)
  assert gamma_sup is not None  # pascanu_conditions refused an activation without a known γ
  entry.update(
    {
      "singular_values": spec.singular_values,
      "pascanu": {
        "sigma_max": float(verdict.sigma_max),
        "gamma": float(verdict.gamma),
        "threshold": float(verdict.threshold),
        "eta": float(verdict.eta),
        "vanishing_sufficient": bool(verdict.vanishing_sufficient),
        "exploding_necessary": bool(verdict.exploding_necessary),
        "summary": verdict.summary(),
      },
      "lag_profile": {
        "lag": prof.lag,
        "geo_mean": prof.geo_mean,
        "max": prof.max,
        "min": prof.min,
        "count": prof.count,
        "nonzero": prof.nonzero,
      },
      "bound_sup_gamma": {"gamma": gamma_sup, "per_lag": (w_norm * gamma_sup) ** lags},
      "bound_trajectory_gamma": {"gamma": gamma_traj, "per_lag": (w_norm * gamma_traj) ** lags},
    }
  )
  if heatmap:
    entry["heatmap_sequence0"] = norms[0]
  return entry


def inputs(cfg):
  """The input sequences ``(B, T, I)`` and the key of the weight draws."""
  k_x, k_p = jax.random.split(jax.random.key(cfg.seed))
  xs = cfg.input_scale * jax.random.normal(k_x, (cfg.batch, cfg.steps, cfg.inputs), jnp.float64)
  return xs, k_p


def run(cfg, xs, k_p) -> list:
  """Every setting's record (draw 0 in full, every draw summarised)."""
  measure_jit = jax.jit(measure, static_argnums=2)
  lags = np.arange(cfg.steps + 1).astype(float)
  settings = []
  for family in cfg.families:
    for act in cfg.activations:
      for radius in cfg.radii:
        heatmap = any(math.isclose(radius, r) for r in cfg.heatmap_radii)
        draws = [
          measure_draw(
            make_params(jax.random.fold_in(k_p, d), cfg, family, radius),
            xs,
            act,
            measure_jit,
            lags,
            full=d == 0,
            heatmap=heatmap,
          )
          for d in range(cfg.draws)
        ]
        entry = {"family": family, "activation": act, "radius": radius, **draws[0]}
        per = {
          "rate": [d["fit"]["rate"] for d in draws],
          "lyapunov_growth_factor": [d["lyapunov_growth_factor"] for d in draws],
          "spectral_norm": [d["spectral_norm"] for d in draws],
          "spectral_radius": [d["spectral_radius"] for d in draws],
          "bound_holds": [d["bound_holds"] for d in draws],
          "regime": [d["fit"]["regime"] for d in draws],
        }
        agree = [
          agrees(r, g) for r, g in zip(per["rate"], per["lyapunov_growth_factor"], strict=True)
        ]
        entry["draws"] = {**per, "agree": agree}
        entry["over_draws"] = {
          "num_draws": cfg.draws,
          **{
            name: spread(per[name]) for name in ("rate", "lyapunov_growth_factor", "spectral_norm")
          },
          "bound_holds": sum(per["bound_holds"]),
          "agree": sum(agree),
          "agree_all": all(agree),
        }
        settings.append(entry)
        s = entry["over_draws"]
        print(
          f"{family:10s} {act:5s} r={radius:<5} ‖W‖={s['spectral_norm']['median']:6.3f} "
          f"ρ̂={_fmt_spread(s['rate'])} exp(λ1)={_fmt_spread(s['lyapunov_growth_factor'])} "
          f"agree {s['agree']}/{cfg.draws}",
          flush=True,
        )
  return settings


def _fmt_spread(s: dict, digits: int = 3) -> str:
  """``median [min–max]`` (and how many were not finite)."""
  if s["median"] is None:
    text = "—"
  else:
    text = f"{s['median']:.{digits}f} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"
  return text + (f" ({s['non_finite']} not finite)" if s["non_finite"] else "")


def table(results: dict, timing: dict) -> str:
  """``results.md``: the command, machine and one row per setting, over draws."""
  cfg, m = results["config"], results["machine"]
  n = cfg["draws"]
  lines = [
    "# Gradient study: per-lag factor and top Lyapunov exponent over W_hh draws",
    "",
    f"Command: `{results['command']}` (commit {results['git']['commit']}"
    f"{', with local changes' if results['git']['dirty'] else ''})",
    "",
    f"Machine: `{m['model_name']}`, {m['cpus']} CPUs, shared (load average at start "
    f"{timing['loadavg_start']}, at end {timing['loadavg_end']}); {timing['wall_s']:.0f} s "
    f"wall, {timing['cpu_s']:.0f} s CPU; finished {timing['finished_utc']}.",
    "",
    f"H = {cfg['hidden']}, I = {cfg['inputs']}, T = {cfg['steps']}, {cfg['batch']} input "
    f"sequences x_t ~ N(0, {cfg['input_scale']}²) (seed {cfg['seed']}), zero biases, float64; "
    f"{n} W_hh draws per setting. ρ̂: the fitted per-lag factor; exp(λ₁): the top Lyapunov "
    "exponent's growth factor (full QR iteration, mean λ₁ over the sequences; 0 when the "
    "Jacobian product vanishes exactly). Cells: median [min–max] over the draws. "
    f"agree: |exp(λ₁) − ρ̂| ≤ {AGREE_RTOL}·ρ̂ on every draw (count of draws where it holds). "
    "bound: draws on which every measured norm lay below (‖W_hh‖·max|σ'|)^ℓ.",
    "",
    "| family | activation | r | ‖W_hh‖ median | ρ̂ median [range] | exp(λ₁) median [range] "
    "| agree? | bound |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for s in results["settings"]:
    o = s["over_draws"]
    agree = "yes" if o["agree_all"] else "no"
    lines.append(
      f"| {s['family']} | {s['activation']} | {s['radius']:g} | "
      f"{o['spectral_norm']['median']:.3f} | {_fmt_spread(o['rate'])} | "
      f"{_fmt_spread(o['lyapunov_growth_factor'])} | {agree} ({o['agree']}/{n}) | "
      f"{o['bound_holds']}/{n} |"
    )
  return "\n".join(lines) + "\n"


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

  fig, axes = plt.subplots(
    len(fams), len(acts), figsize=(5.5 * len(acts), 4.2 * len(fams)), squeeze=False
  )
  for i, fam in enumerate(fams):
    for j, act in enumerate(acts):
      ax = axes[i, j]
      for s in pick(fam, act):
        lag = np.asarray(s["lag_profile"]["lag"])
        geo = np.asarray(
          [np.nan if v is None or v == 0 else v for v in s["lag_profile"]["geo_mean"]]
        )
        bound = np.asarray([np.nan if v is None else v for v in s["bound_sup_gamma"]["per_lag"]])
        c = cmap(norm_r(s["radius"]))
        ax.semilogy(lag, geo, color=c, lw=2, label=f"r={s['radius']:g} (ρ̂={s['fit']['rate']:.2f})")
        ax.semilogy(lag, bound, color=c, lw=1, ls="--")
      ax.set_ylim(1e-12, 1e12)
      ax.axhline(1.0, color="k", lw=0.5)
      ax.set_title(
        f"{act}, W_hh {fam} (draw 0): ‖∂h_(k+ℓ)/∂h_k‖ (solid)\n"
        f"seed bound (‖W_hh‖·sup|σ'|)^ℓ (dashed)",
        fontsize=9,
      )
      ax.set_xlabel("lag ℓ = t - k")
      ax.set_ylabel("spectral norm (geometric mean over k, sequences)")
      ax.legend(fontsize=7, loc="lower left")
  fig.tight_layout()
  fig.savefig(out / "norm_vs_lag.png", dpi=110)
  plt.close(fig)

  maps = [s for s in settings if "heatmap_sequence0" in s]
  hr = sorted({s["radius"] for s in maps})
  cols = [(f, a) for f in fams for a in acts]
  fig, axes = plt.subplots(
    len(hr), len(cols), figsize=(3.0 * len(cols) + 1.5, 3.0 * len(hr)), squeeze=False
  )
  heat = plt.get_cmap("RdBu_r").with_extremes(bad="lightgray")
  image = None
  for i, r in enumerate(hr):
    for j, (fam, act) in enumerate(cols):
      ax = axes[i, j]
      match = [
        s
        for s in maps
        if s["family"] == fam and s["activation"] == act and math.isclose(s["radius"], r)
      ]
      if not match:
        ax.axis("off")
        continue
      m = np.asarray(
        [[np.nan if v is None else v for v in row] for row in match[0]["heatmap_sequence0"]]
      )
      t, k = np.indices(m.shape)
      with np.errstate(divide="ignore", invalid="ignore"):
        logm = np.where((t >= k) & (m > 0), np.log10(np.where(m > 0, m, 1.0)), np.nan)
      image = ax.imshow(logm, origin="lower", cmap=heat, vmin=-10, vmax=10, interpolation="nearest")
      ax.set_title(f"{act}, {fam}, r={r:g} (draw 0)", fontsize=9)
      ax.set_xlabel("k")
      ax.set_ylabel("t")
  if image is not None:
    fig.colorbar(image, ax=axes, shrink=0.8, label="log10 ‖∂h_t/∂h_k‖ (gray: t < k, or exactly 0)")
  fig.savefig(out / "heatmaps.png", dpi=90)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(6, 4.5))
  markers = {"orthogonal": "o", "gaussian": "s", "identity": "^"}
  styles = {"tanh": "-", "relu": "--"}
  for fam in fams:
    for act in acts:
      ss = pick(fam, act)
      med = [s["over_draws"]["rate"]["median"] for s in ss]
      lo_hi = np.asarray(
        [
          [m - s["over_draws"]["rate"]["min"], s["over_draws"]["rate"]["max"] - m]
          for s, m in zip(ss, med, strict=True)
        ]
      ).T
      ax.errorbar(
        [s["radius"] for s in ss],
        med,
        yerr=lo_hi,
        capsize=2,
        marker=markers.get(fam, "x"),
        ls=styles.get(act, ":"),
        label=f"{act}, {fam}",
      )
  lo, hi = min(radii), max(radii)
  ax.plot([lo, hi], [lo, hi], color="gray", lw=0.8, label="ρ = r (linear, orthogonal)")
  ax.axhline(1.0, color="k", lw=0.8)
  ax.set_xlabel("recurrent scale r (spectral radius of W_hh)")
  ax.set_ylabel(f"fitted per-lag factor ρ̂ (median, range over {cfg['draws']} draws)")
  ax.set_title("ρ̂ < 1: vanishing, ρ̂ > 1: exploding", fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out / "rates.png", dpi=110)
  plt.close(fig)


def main(argv: Sequence[str] = ()) -> dict:
  argv = list(argv)
  cfg = parse(argv)
  jax.config.update("jax_enable_x64", True)  # products of 60 Jacobians leave float32's range
  clock = record.start_clock(announce=False)
  xs, k_p = inputs(cfg)
  # Taken before the long computation: the commit (and dirty flag) of the code that runs.
  prov = record.provenance(
    "experiments/gradient_study.py", argv, seeds=[cfg.seed], data={"inputs": record.digest(xs)}
  )
  settings = run(cfg, xs, k_p)
  results = {**prov, "config": record.settings(cfg), "agree_rtol": AGREE_RTOL, "settings": settings}
  results = clean(results)
  timing = record.timing("experiments/gradient_study.py", argv, clock)
  record.write(cfg.out, results, timing)
  (cfg.out / "results.md").write_text(table(results, timing))
  written = ["results.json", "timing.json", "results.md"]
  if not cfg.no_plot:
    plot(results, cfg.out)
    written += ["norm_vs_lag.png", "heatmaps.png", "rates.png"]
  print(f"wrote {cfg.out}/: {', '.join(written)}")
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
