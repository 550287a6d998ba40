"""Tuned constants of the classical baselines: written by scripts/tune_baselines.py (rerun it to
re-tune; docs/known_tasks.md records the result). Tuned on scikit-image training photos (never the
test photos astronaut / chelsea / coffee / rocket) with random kernels of dgunet.data.kernels.

lam(sigma) of the hyper-Laplacian HQS = exp(LOG_LAM[kind] + LAM_SLOPE[kind] * log(sigma_eff)),
sigma_eff = sqrt(sigma^2 + 1/(12 * 255^2)) (the noise std plus 8-bit rounding), kind "blur" or
"noise" (identity kernel). Non-local means: h = NLM_H_FACTOR * sigma. FISTA-TV for compressive
sensing: lam = TV_CS_LAM[ratio in percent] (noiseless, the fixed orthonormal 32x32 block matrix).
"""

LOG_LAM = {"blur": -0.5717, "noise": -0.1154}
LAM_SLOPE = {"blur": 1.5012, "noise": 1.3024}
NLM_H_FACTOR = 0.7
TV_CS_LAM = {10: 5.0988e-03, 25: 4.1911e-03, 50: 2.0619e-03}  # percent -> lam
