"""yambda_dl's Optuna sweeper for Hydra (`hydra/sweeper=yambda_optuna`), over a current Optuna (4.x and later).

Hydra finds plugins by importing every module under the `hydra_plugins` namespace package; this one registers its
config and its Sweeper class, and imports Optuna and yambda_dl only when a sweep starts (Hydra scans plugins on every
start). The work is in yambda_dl.tune.StudySweep.
"""
