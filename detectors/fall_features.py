"""Pure feature functions of the accelerometer fall detector (:mod:`detectors.fall`).

The detector first puts every device's stream on one fixed time grid (:func:`resample`), so the
features below see the same thing whatever the device's rate (20-200 Hz) or jitter. A fall is then
described by four physical features around an impact candidate, each read from a window of the
grid at fixed offsets from the impact sample (:class:`Windows`):

- impact: the largest peak of the acceleration magnitude within ±``peak`` samples;
- free fall: the lowest magnitude in the ``freefall`` samples before the impact;
- descent speed: in the same samples, the largest speed gained while the body was not fully
  supported, ``g * integral of (1 - |a| / g_ref) dt`` over the best interval (the trunk's velocity
  at impact; it does not depend on sampling a short peak). ``g_ref`` is the device's own reading
  of 1 g (the magnitude of its mean vector before the event: a sensor that reads 0.95 g at rest
  would otherwise "descend" 0.5 m/s every second), and deviations within ``rotation_band_g`` of
  it count as nothing: a trunk turning (rolling over in bed) moves the magnitude that much with
  no descent at all (module ``detectors.fall``, ``FallParams.rotation_band_g``);
- orientation change: the angle between the mean acceleration (the gravity direction, as the
  person is near rest) ``before`` and ``after`` the impact;
- stillness: the spread of the acceleration vector ``after`` the impact;
- posture: the trunk's tilt before and after, from the device's own upright direction learned
  while its wearer walked (NaN until learned);
- rhythm: the largest other peak in the seconds before the impact (jogging, hopping and brisk
  stairs repeat their impacts; a fall's impact comes alone).

Windows are 2-D arrays (one row per candidate, one column per offset) with a validity mask, since
a window may run past the start or end of a contiguous segment of the stream. Nothing here keeps
state, reads a clock or does I/O.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


class Windows(NamedTuple):
    """Feature windows in grid samples relative to the impact sample (bounds inclusive)."""

    peak: int                  # the impact is the largest peak within [-peak, +peak]
    freefall: int              # free fall is looked for in [-freefall, -1]
    before: tuple[int, int]    # posture before: [-before[0], -before[1]]
    after: tuple[int, int]     # posture and stillness after: [after[0], after[1]]
    min_count: int             # fewer valid samples than this: the feature is unknown

    @property
    def back(self) -> int:
        """How far back (samples) the features look."""
        return max(self.peak, self.freefall, self.before[0])

    @property
    def ahead(self) -> int:
        """How far ahead (samples) the features look: the decision delay."""
        return max(self.peak, self.after[1])


class ImpactFeatures(NamedTuple):
    """Features of ``k`` impact candidates; NaN where a window held too few valid samples."""

    peak_g: F32                    # (k,) impact magnitude, g
    freefall_min_g: F64            # (k,) lowest magnitude before the impact, g
    descent_mps: F64               # (k,) speed gained before the impact, m/s
    orientation_change_deg: F64    # (k,) angle between the gravity directions before and after
    post_std_g: F64                # (k,) RMS deviation of the acceleration vector after, g
    tilt_before_deg: F64           # (k,) trunk tilt from upright before (NaN: axis not learned)
    tilt_after_deg: F64            # (k,) trunk tilt from upright after
    prior_peak_g: F64              # (k,) largest peak in the rhythm window before the impact, g


def resample(t: I64, t_prev: I64, xyz: F32, xyz_prev: F32, *,
             grid_ms: int) -> tuple[I64, I64, F32]:
    """Linearly interpolate raw sample pairs onto the grid of multiples of ``grid_ms``.

    Pair ``j`` spans ``(t_prev[j], t[j]]`` and yields the grid points in that half-open interval,
    so consecutive pairs never yield a point twice, and a stream cut into chunks anywhere yields
    the same grid as the whole stream (the grid is anchored to absolute time, not to a chunk).

    Parameters
    ----------
    t, t_prev : (n,) int64
        End and start time of each pair, ms; ``t > t_prev``.
    xyz, xyz_prev : (n, 3) float32
        Acceleration at ``t`` and at ``t_prev``, g.
    grid_ms : int
        Grid step, ms.

    Returns
    -------
    pair : (m,) int64
        Index of the pair each grid point came from (non-decreasing).
    g : (m,) int64
        Grid times, ms.
    v : (m, 3) float32
        Interpolated acceleration, g.
    """
    cnt = t // grid_ms - t_prev // grid_ms
    m = int(cnt.sum())
    pair = np.repeat(np.arange(len(t), dtype=np.int64), cnt)
    # First grid point of each pair, shifted back by the points before it, plus a global ramp.
    first = (t_prev // grid_ms + 1) * grid_ms
    offset = first - (np.cumsum(cnt) - cnt) * grid_ms
    g = np.repeat(offset, cnt) + np.arange(m, dtype=np.int64) * grid_ms
    inv_dt = (1.0 / (t - t_prev)).astype(np.float32)
    w = (g - np.repeat(t_prev, cnt)).astype(np.float32) * np.repeat(inv_dt, cnt)
    a = xyz_prev[pair]
    v = a + w[:, None] * (xyz[pair] - a)
    return pair, g, v


def gather(values: F32, centres: I64, lo: int, hi: int, seg_lo: I64,
           seg_hi: I64) -> tuple[F32, Bools]:
    """Windows ``[c + lo, c + hi]`` of ``values`` around each centre, masked to its segment.

    Parameters
    ----------
    values : (N,) float32
        A grid stream (e.g. magnitude, g).
    centres, seg_lo, seg_hi : (k,) int64
        Centre index and the first and last index of the centre's contiguous segment.

    Returns
    -------
    win : (k, W) float32
        ``W = hi - lo + 1``; positions outside the segment hold arbitrary values.
    valid : (k, W) bool
    """
    idx = centres[:, None] + np.arange(lo, hi + 1, dtype=np.int64)[None, :]
    valid = (idx >= seg_lo[:, None]) & (idx <= seg_hi[:, None])
    return values[np.clip(idx, 0, len(values) - 1)], valid


def local_peaks(hi: F32, centres: I64, seg_lo: I64, seg_hi: I64, half: int) -> Bools:
    """Which centres are the first, largest value of ``hi`` within ``±half`` samples (k,) bool.

    Bounces and a second contact after an impact are then part of the same impact.
    """
    h, valid = gather(hi, centres, -half, half, seg_lo, seg_hi)
    peak = hi[centres][:, None]
    earlier = valid & (np.arange(-half, half + 1) < 0)[None, :]
    first_largest: Bools = ~np.any(valid & (h > peak), axis=1) & ~np.any(
        earlier & (h >= peak), axis=1)
    return first_largest


def _window_mean(cs: F64, centres: I64, lo: int, hi: int, seg_lo: I64, seg_hi: I64,
                 min_count: int) -> F64:
    """Mean of the rows of a stream over ``[c + lo, c + hi]`` clipped to the segment, from its
    prefix sums ``cs`` (N + 1, C); (k, C), NaN where fewer than ``min_count`` samples."""
    a = np.clip(centres + lo, seg_lo, seg_hi + 1)
    b = np.clip(centres + hi + 1, a, seg_hi + 1)
    n = b - a
    with np.errstate(invalid="ignore", divide="ignore"):
        mean: F64 = (cs[b] - cs[a]) / n[:, None]
    mean[n < min_count] = np.nan
    return mean


#: Standard gravity, m/s^2.
G0 = 9.80665


def descent_speed(mag: F32, valid: Bools, dt_s: float, g_ref: F64 | None = None,
                  band_g: float = 0.0) -> F64:
    """Largest speed (m/s) a body gains over any interval of each row of a magnitude window.

    While the magnitude ``|a|`` is under 1 g the body is not fully supported and accelerates
    downwards by ``(1 - |a|) g``; over the interval where that gains the most (the maximum
    subarray sum, from prefix sums and their running minimum) it is the speed at the end of the
    descent. Invalid samples add nothing. NaN where a row has no valid sample.

    ``g_ref`` (k,): each row's own reading of 1 g (default 1); ``band_g``: deviations from it
    smaller than this add nothing, in either direction (the magnitude a turning trunk shows
    without descending: see ``FallParams.rotation_band_g``).
    """
    ref = np.ones(len(mag)) if g_ref is None else g_ref
    deficit = 1.0 - mag.astype(np.float64) / ref[:, None]
    deficit = np.where(valid & (np.abs(deficit) > band_g), deficit, 0.0)
    prefix = np.zeros((len(mag), mag.shape[1] + 1))
    np.cumsum(deficit, axis=1, out=prefix[:, 1:])
    gain: F64 = (prefix - np.minimum.accumulate(prefix, axis=1)).max(axis=1) * (G0 * dt_s)
    gain[~valid.any(axis=1)] = np.nan
    return gain


def _angle_deg(u: F64, v: F64) -> F64:
    """Angle (degrees) between the rows of ``u`` and ``v``; NaN where either is NaN or zero."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.einsum("ki,ki->k", u, v) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    angle: F64 = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return angle


def impact_features(hi: F32, xyz: F32, centres: I64, seg_lo: I64, seg_hi: I64,
                    w: Windows, *, grid_s: float, up: F64 | None = None,
                    rotation_band_g: float = 0.0, rhythm: tuple[int, int] = (0, 0)
                    ) -> ImpactFeatures:
    """Evaluate the fall features for ``k`` impact candidates.

    Window means and spreads come from prefix sums over the stream, so each candidate costs
    O(1) however long its windows; only the free-fall minimum reads a (k, freefall) window.

    Parameters
    ----------
    hi : (N,) float32
        Peak magnitude per grid cell (max of the raw samples in it and the interpolation), g.
    xyz : (N, 3) float32
        Interpolated acceleration on the grid, g.
    centres, seg_lo, seg_hi : (k,) int64
        Candidate indices and the first and last index of their contiguous segments.
    w : Windows
        Window offsets.
    grid_s : float
        Grid step, seconds.
    up : (k, 3) float64, optional
        Each candidate's device's learned upright direction (the gravity vector while its wearer
        walks, in the sensor's axes); NaN rows where it is not known yet.
    rotation_band_g : float
        See :func:`descent_speed`.
    rhythm : (lo, hi)
        The window ``[-lo, -hi]`` (samples) where an earlier peak makes the impact rhythmic.
    """
    x = xyz.astype(np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    cs = np.zeros((len(x) + 1, 4))
    np.cumsum(np.column_stack((x, sq)), axis=0, out=cs[1:])

    g0 = _window_mean(cs, centres, -w.before[0], -w.before[1], seg_lo, seg_hi, w.min_count)[:, :3]
    # The device's own 1 g: the mean vector's length before the event (near rest, or walking,
    # whose accelerations average out); a value no plausible sensor reads at rest is not used.
    g_ref = np.linalg.norm(g0, axis=1)
    g_ref = np.where(np.isfinite(g_ref) & (np.abs(g_ref - 1.0) <= 0.2), g_ref, 1.0)
    mag, valid = gather(np.sqrt(sq).astype(np.float32), centres, -w.freefall, -1, seg_lo, seg_hi)
    ff = np.where(valid, mag, np.inf).min(axis=1).astype(np.float64)
    few = valid.sum(axis=1) < w.min_count
    ff[few] = np.nan
    speed = descent_speed(mag, valid, grid_s, g_ref, rotation_band_g)
    speed[few] = np.nan

    after = _window_mean(cs, centres, w.after[0], w.after[1], seg_lo, seg_hi, w.min_count)
    g1 = after[:, :3]
    angle = _angle_deg(g0, g1)
    upright = np.full((len(centres), 3), np.nan) if up is None else up
    tilt0, tilt1 = _angle_deg(g0, upright), _angle_deg(g1, upright)
    prior = np.full(len(centres), np.nan)
    if rhythm[0] > rhythm[1]:
        h, ok = gather(hi, centres, -rhythm[0], -rhythm[1], seg_lo, seg_hi)
        prior = np.where(ok, h, -np.inf).max(axis=1).astype(np.float64)
        prior[ok.sum(axis=1) < w.min_count] = np.nan
    # Total variance of the vector: E|a|^2 - |E a|^2 (rotation counts as movement, not only
    # changes of magnitude).
    var = after[:, 3] - np.einsum("ki,ki->k", g1, g1)
    std = np.sqrt(np.maximum(var, 0.0))
    return ImpactFeatures(hi[centres], ff, speed, angle, std, tilt0, tilt1, prior)


def decide(f: ImpactFeatures, partial: Bools, *, impact_g: float, freefall_g: float,
           descent_mps: float, orientation_deg: float, still_std_g: float, hard_impact_g: float,
           lying_deg: float) -> tuple[Bools, F64]:
    """Fall or not, and a confidence, from the features of impact candidates.

    From upright or sitting, or where the device's upright axis is not known yet, a fall is an
    impact after which the trunk rests at a new orientation (the most specific feature at the
    trunk), supported by a descent before it or stillness after it:
    ``turned and (descent or still)``. A descent is a free fall (the magnitude dipped to
    ``freefall_g``) or the speed gained before the impact reaching ``descent_mps``. Jumps
    (descent, no new orientation), sitting down hard (little tilt) and lying down gently (no
    impact) fail it. Lying down fast onto a bed passes it: from upright to lying with an impact
    and stillness is what a fall onto a soft floor is too (docs/fall-detector.md, "Still
    missed").

    Where the upright is known, the trunk must also end at least halfway to lying (tilt after
    at least ``orientation_deg`` from upright): sitting down hard turns the pelvis 30-50 deg.

    From lying (tilt before at least ``lying_deg`` from the learned upright), the trunk can only
    go to lying: a roll in bed looks like a fall in every other feature. It is a fall only with
    a real free fall (a bed's height) and a hard impact: a fall out of bed.

    ``partial`` candidates were cut off: the stream stopped or broke before the after-window
    was complete. The rule above is applied to what there is (an unknown feature does not
    agree), and a cut-off alarms on top of that only on evidence that stands without the
    after-window: a hard impact after a free fall, with no other impact in the seconds before
    it (a jogger's or hopper's stride repeats; a fall's impact comes alone). A device that simply
    goes silent after weaker evidence is the offline rule's case, not a fall.

    Returns
    -------
    alarm : (k,) bool
    confidence : (k,) float64
        Fraction of the four features (impact, descent, orientation, stillness) that agreed;
        unknown features do not count as agreeing.
    """
    freefall = f.freefall_min_g <= freefall_g
    down = freefall | (f.descent_mps >= descent_mps)
    turned = f.orientation_change_deg >= orientation_deg
    still = f.post_std_g <= still_std_g
    hard = f.peak_g >= hard_impact_g
    lying = f.tilt_before_deg >= lying_deg
    # With the upright known, a fall must also end at least halfway to lying (the same 45 deg
    # as the turn, but from upright): a hard sit on a low chair turns the pelvis 30-50 deg,
    # which a relative change from a forward lean can count as "turned". Not the 60 deg of
    # lying: falls while sitting down or onto a table often end half-sitting (50-85 deg).
    ends_lying = np.isnan(f.tilt_after_deg) | (f.tilt_after_deg >= orientation_deg)
    alarm = np.where(lying, freefall & hard, turned & ends_lying & (down | still))
    alone = ~(f.prior_peak_g >= impact_g)
    alarm = alarm | (partial & hard & freefall & alone)
    confidence = (1.0 + down.astype(np.float64) + turned + still) / 4.0
    return alarm, confidence
