"""Low-dose CT simulation from image-domain (reconstructed) CT slices, with a stated scanner geometry.

The "simple low-dose simulation" of the field: forward-project the attenuation image to line integrals,
draw Poisson counts at the incident flux of the low-dose scan, take the log, reconstruct by filtered
back-projection (Zeng et al., "A simple low-dose x-ray CT simulation from high-dose scan", IEEE Trans. Nucl.
Sci. 62(5):2226-2233, 2015, is the usual general reference; the count floor follows LoDoPaB-CT, Leuschner et
al., Sci. Data 8:109, 2021). LIDnet (Chen et al., ACM MM 2021) adds noise "of level N0" with the method of its
reference [14]; its bibliography is alphabetical and [14]'s first author sorts between Duan and Girshick, so
[14] is NOT Zeng et al. and is unidentified here: this module is the project's own implementation of the
standard method, not a copy of the paper's.

Geometry (:class:`ScanGeometry`, stated in every report): parallel beam over 180 degrees, ``n_views`` views
(default 1000), detector bins of ``bin_mm`` at the isocentre (default 1.0 mm, the order of a clinical
scanner's sampling at the isocentre), FBP with a ramp filter windowed by ``filter_name`` (default ``"hann"``,
a smooth clinical-like kernel; ``"ramp"``, ``"shepp-logan"``, ``"cosine"``, ``"hamming"`` selectable; same
window definitions as scikit-image's ``iradon``). The detector pitch is a property of the scanner, not of
the image grid, so the same N0 gives nearly the same noise for any reconstruction pixel size; the number of
bins follows from the scan field of view (``ceil(FOV / bin_mm)``; the exact pitch used is
``FOV / n_bins``). Simulate at the image's NATIVE pixel size, before any resampling.

Model, per slice (float64 where it matters, output float32 HU)::

    HU    <- max(HU, -1000)                          # air; padding values -1024/-2048/-3024 become air
    mu     = MU_WATER_PER_MM * (1 + HU / 1000)       # /mm, MU_WATER_PER_MM = 0.0192 /mm (~70 keV)
    mu_d   = mu area-resampled to the detector grid  # pixel = bin pitch d: each bin integrates a d-wide strip
    p      = sum over the ray of mu_d * d            # line integrals (dimensionless), n_views x n_bins
    lambda = N0 * exp(-p)                            # expected counts per detector bin and view
    I      = Poisson(lambda) + Normal(0, sigma_e^2)  # sigma_e = electronic_noise_std (counts), default 0
    I      = max(I, COUNT_FLOOR)                     # COUNT_FLOOR = 0.1 count (LoDoPaB sets 0 counts to 0.1)
    p~     = -log(I / N0)
    mode "noise_only": mu~ = mu + FBP(p~ - p)        # FBP onto the native pixel centres (FBP is linear)
    mode "full":       mu~ = FBP(p~)
    HU~    = 1000 * (mu~ / MU_WATER_PER_MM - 1)

N0 keeps the paper's meaning: photons per ray, i.e. per detector bin and view. For a ray through an object
of line integral p, Var(p~) ~ exp(p) / N0, and the reconstructed noise at the centre of a uniform object is
(:func:`predicted_noise_sigma_hu`, checked against simulation in the tests)::

    sigma_mu^2 = (pi^2 / n_views) * exp(p) / N0 * sum_k g_k^2 * (2/3 + rho/3)

with ``g`` the discrete filter kernel (window included, in 1/mm) and ``rho`` the correlation of two
neighbouring filtered bins (the linear interpolation of the back-projection).

Measured on the bundled real chest slices (soft-tissue sigma of the added noise, :func:`soft_tissue_noise_sigma`;
``docs/reproduction.md``): on the middle slices the default geometry gives 84-108 HU at N0 = 1000 and 43-56 HU
at N0 = 3000, the range the project targets for the paper's doses (60-120 / 35-70 HU); that is noisier than
clinical low-dose chest CT (roughly 20-60 HU; routine dose 10-25 HU), as the paper's N0 = 1000 is an
ultra-low dose. Thicker slices (shoulders, upper abdomen) get more: N0 is fixed per slice, there is no
tube-current modulation. With the pure ramp filter the same N0 gives ~2.6x more.

Why ``mode="noise_only"`` is the default: the input is already a reconstructed image. Re-projecting and
re-reconstructing it (``"full"``) adds the simulator's own blur (the 1 mm detector, the window) and edge
error even at infinite dose, so a denoiser trained on (full-mode LDCT, NDCT) pairs partly learns to undo the
simulator. ``noise_only`` keeps the NDCT exactly and adds only the (object-dependent, correlated, streaky)
dose noise and the log bias; ``N0=inf`` returns the input exactly. The NDCT's own noise is kept (image-domain
data do not carry the original scan's I0, which Zeng et al.'s exact dose-fraction formula would need).

Scan field of view: the projector assumes zero attenuation outside the circle inscribed in the square
(non-square slices are zero-padded to a centred square). Material outside that circle whose largest line
integral is at most ``fov_tolerance`` (default 0.05: air, blankets) is left out; anything more (table, arms)
makes the slice be zero-padded to the smallest square whose inscribed circle holds every pixel above
-1000 HU (then rounded up to a multiple of 32 pixels, so that most slices of a volume share one geometry
and are projected together), simulated there and cropped back. The output always has the input's shape.

Implementation: batched PyTorch (``torch.nn.functional.grid_sample`` for the ray sums and for the
back-projection, ``torch.fft`` for the filter), several slices per pass, on the CPU; results do not depend
on how slices are batched (checked in the tests to float32 rounding).

Modules (one concept each; this ``__init__`` only re-exports, nothing imports from it inside the package):

- :mod:`~src_training.simulation.geometry`: :class:`ScanGeometry`, :data:`DEFAULT_GEOMETRY`, :data:`FILTERS`,
  the windowed ramp filter, detector bins, the scan field of view.
- :mod:`~src_training.simulation.projector`: the batched torch projector and back-projection.
- :mod:`~src_training.simulation.noise`: HU <-> mu, Poisson counts, modes, :func:`slice_rng`,
  :func:`simulate_ldct_slice`, :func:`simulate_ldct`, :data:`SIMULATOR_VERSION`.
- :mod:`~src_training.simulation.cache`: :func:`cached_simulate_ldct`.
- :mod:`~src_training.simulation.calibration`: :func:`soft_tissue_mask`, :func:`soft_tissue_noise_sigma`,
  :func:`predicted_noise_sigma_hu`, :func:`n0_for_noise_sigma`.
"""

from __future__ import annotations

from .cache import cached_simulate_ldct
from .calibration import n0_for_noise_sigma, predicted_noise_sigma_hu, soft_tissue_mask, soft_tissue_noise_sigma
from .geometry import DEFAULT_FOV_TOLERANCE, DEFAULT_GEOMETRY, FILTERS, ScanGeometry
from .noise import (
    COUNT_FLOOR,
    DEFAULT_MODE,
    HU_MIN,
    MU_WATER_PER_MM,
    SIMULATOR_VERSION,
    Mode,
    hu_to_mu,
    mu_to_hu,
    simulate_ldct,
    simulate_ldct_slice,
    slice_rng,
)

__all__ = [
    "MU_WATER_PER_MM",
    "HU_MIN",
    "COUNT_FLOOR",
    "DEFAULT_MODE",
    "SIMULATOR_VERSION",
    "FILTERS",
    "ScanGeometry",
    "DEFAULT_GEOMETRY",
    "slice_rng",
    "hu_to_mu",
    "mu_to_hu",
    "simulate_ldct_slice",
    "simulate_ldct",
    "cached_simulate_ldct",
    "soft_tissue_mask",
    "soft_tissue_noise_sigma",
    "predicted_noise_sigma_hu",
    "n0_for_noise_sigma",
]
