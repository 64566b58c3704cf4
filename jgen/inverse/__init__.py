"""Linear inverse problems: measurement operators, CT (Radon, FBP), phantoms, TV reconstruction,
posterior sampling with a diffusion prior (replacement, projection, RePaint, DPS), SSIM/PSNR,
and the pieces of `jgen solve` (`jgen.inverse.solve`)."""

from jgen.inverse.operators import (
    LinearOperator,
    blur,
    compose,
    downsampling,
    gaussian_kernel,
    least_squares,
    make_operator,
    masking,
    measure,
    normal_op,
    operator_norm,
    rgb_to_gray,
)
from jgen.inverse.phantoms import (
    SHEPP_LOGAN_ELLIPSES,
    random_ellipses,
    render_ellipses,
    shepp_logan,
)
from jgen.inverse.posterior import (
    PosteriorInfo,
    dps_sample,
    gaussian_posterior,
    repaint_sample,
    replacement_sample,
)
from jgen.inverse.projection import projection_sample
from jgen.inverse.quality import psnr, ssim
from jgen.inverse.radon import (
    backproject,
    fbp,
    parallel_beam_angles,
    radon,
    radon_operator,
    ramp_filter,
)
from jgen.inverse.solve import load_prior, make_task, reconstruct
from jgen.inverse.tv import TVResult, finite_differences, tv_norm, tv_reconstruct

__all__ = [
    "SHEPP_LOGAN_ELLIPSES",
    "LinearOperator",
    "PosteriorInfo",
    "TVResult",
    "backproject",
    "blur",
    "compose",
    "downsampling",
    "dps_sample",
    "fbp",
    "finite_differences",
    "gaussian_kernel",
    "gaussian_posterior",
    "least_squares",
    "load_prior",
    "make_operator",
    "make_task",
    "masking",
    "measure",
    "normal_op",
    "operator_norm",
    "parallel_beam_angles",
    "projection_sample",
    "psnr",
    "radon",
    "radon_operator",
    "ramp_filter",
    "random_ellipses",
    "reconstruct",
    "render_ellipses",
    "repaint_sample",
    "replacement_sample",
    "rgb_to_gray",
    "shepp_logan",
    "ssim",
    "tv_norm",
    "tv_reconstruct",
]
