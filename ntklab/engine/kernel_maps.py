"""Kernel maps of the activations: (K12, K11, K22) -> (E[phi(u) phi(v)], E[phi'(u) phi'(v)]) for
(u, v) ~ N(0, [[K11, K12], [K12, K22]]), the infinite-width meaning of engine/plan.py:Activation.

relu: the arc-cosine kernel of degree 1 (Cho & Saul 2009); erf: Williams' arcsine kernel (1997);
gelu (exact, x Phi(x)): orthant moments of a bivariate normal, its derivative by Price's theorem.
Each map takes the array module (`jnp`) so it runs inside the compiled stages of engine/kernel_stages.py.
"""

import jax

# arcsin and arccos from a polynomial: XLA's CPU arccos/atan2 are scalar library calls (40 ns an
# element here, most of a CNTK's time), this is a dozen vectorized multiply-adds. On |x| <= 1/2,
# asin(x) = x + x z R(z) with z = x^2; above, asin(x) = pi/2 - 2 asin(sqrt((1 - x) / 2)).
# R(z) = (asin(sqrt z) / sqrt z - 1) / z on [0, 1/4]: the degree-12 Chebyshev interpolant of R,
# rewritten in powers of z (numpy.polynomial.chebyshev.chebinterpolate of np.arcsin); its
# relative error on asin is below 3e-16 over [-1, 1].
_ASIN_R = (
    0.16666666666675897, 0.07499999997927573, 0.044642858924889985, 0.03038186469979015,
    0.02237429688239777, 0.017315685592716068, 0.014398995669998433, 0.008050136122730502,
    0.029259209458076203, -0.06530577961277355, 0.18823447634646046, -0.2552200845687301,
    0.17842643151209284,
)  # fmt: skip


def _asin_small(s, z):
    """asin(s) for 0 <= s <= 1/2, z = s^2."""
    r = _ASIN_R[-1]
    for c in _ASIN_R[-2::-1]:
        r = r * z + c
    return s + s * z * r


def _acos(c, jnp):
    """arccos on [-1, 1], accurate near +-1 (where it matters for the arc-cosine kernels)."""
    a = jnp.abs(c)
    big = a > 0.5
    z = jnp.where(big, 0.5 * (1.0 - a), a * a)
    s = jnp.where(big, jnp.sqrt(z), a)
    p = _asin_small(s, z)  # big: asin(sqrt((1 - |c|) / 2)) = acos(|c|) / 2; else asin(|c|)
    acos_abs = jnp.where(big, 2.0 * p, 0.5 * jnp.pi - p)
    return jnp.where(c >= 0, acos_abs, jnp.pi - acos_abs)


def _asin(x, jnp):
    return 0.5 * jnp.pi - _acos(x, jnp)


def _relu_map(k12, v1, v2, jnp, derivative: bool):
    """Arc-cosine kernel of degree 1 (Cho & Saul): with cos(theta) = K12 / sqrt(K11 K22),
    E[relu relu] = sqrt(K11 K22) (sin theta + (pi - theta) cos theta) / (2 pi), E[relu' relu'] = (pi - theta) / (2 pi).

    Near theta = 0 the angle is ill-conditioned (a rounding error e in cos theta moves theta by
    sqrt(2 e)), so a pair whose K11 K22 - K12^2 is within a few rounding errors of zero (an input
    with itself, at the same pixel) is taken as exactly collinear, theta = 0, as exact arithmetic
    would give. A zero variance gives theta = pi/2 (the kernel is 0 there).
    """
    prod = v1 * v2
    gap = prod - k12 * k12
    eps = jnp.finfo(k12.dtype).eps
    collinear = gap <= 16 * eps * prod
    sine = jnp.sqrt(jnp.where(collinear, 0.0, gap))  # sqrt(K11 K22) sin(theta)
    positive = prod > 0
    cos = jnp.clip(jnp.where(positive, k12 / jnp.sqrt(jnp.where(positive, prod, 1.0)), 0.0), -1.0, 1.0)
    theta = jnp.where(collinear & positive, jnp.where(k12 > 0, 0.0, jnp.pi), _acos(cos, jnp))
    nngp = (sine + (jnp.pi - theta) * k12) / (2 * jnp.pi)
    dot = (jnp.pi - theta) / (2 * jnp.pi) if derivative else None
    return nngp, dot


def _erf_map(k12, v1, v2, jnp, derivative: bool):
    d = (1.0 + 2.0 * v1) * (1.0 + 2.0 * v2)
    nngp = (2.0 / jnp.pi) * _asin(jnp.clip(2.0 * k12 / jnp.sqrt(d), -1.0, 1.0), jnp)
    dot = (4.0 / jnp.pi) / jnp.sqrt(d - 4.0 * k12 * k12) if derivative else None
    return nngp, dot


def _gelu_nngp(k12, v1, v2, jnp):
    """E[u Phi(u) v Phi(v)]: u Phi(u) v Phi(v) = u v 1{u - g1 > 0} 1{v - g2 > 0} with g1, g2 ~ N(0, 1)
    independent. Regress (u, v) on (s, t) = (u - g1, v - g2), then use the orthant moments of (s, t)."""
    a, b, c = v1, v2, k12
    sa, sb = 1.0 + a, 1.0 + b  # var s, var t; cov(s, t) = c; cov([u, v], [s, t]) = [[a, c], [c, b]]
    det = sa * sb - c * c
    # A = M Sigma^-1 with M = [[a, c], [c, b]], Sigma^-1 = [[sb, -c], [-c, sa]] / det
    a11, a12 = (a * sb - c * c) / det, (c * sa - a * c) / det
    a21, a22 = (c * sb - b * c) / det, (b * sa - c * c) / det
    # cov(e1, e2) = c - (A M^T)_12 = c - (a11 c + a12 b)
    e12 = c - (a11 * c + a12 * b)
    ss, st = jnp.sqrt(sa), jnp.sqrt(sb)
    r = c / (ss * st)
    asr, root = _asin(r, jnp), jnp.sqrt(1.0 - r * r)
    p = 0.25 + asr / (2 * jnp.pi)
    m_ss = sa * (p + r * root / (2 * jnp.pi))
    m_tt = sb * (p + r * root / (2 * jnp.pi))
    m_st = ss * st * (r * p + root / (2 * jnp.pi))
    return e12 * p + a11 * a21 * m_ss + (a11 * a22 + a12 * a21) * m_st + a12 * a22 * m_tt


def _gelu_map(k12, v1, v2, jnp, derivative: bool):
    if not derivative:
        return _gelu_nngp(k12, v1, v2, jnp), None
    # Price's theorem: E[phi'(u) phi'(v)] = d/dK12 E[phi(u) phi(v)] at fixed variances.
    nngp, dot = jax.jvp(lambda c: _gelu_nngp(c, v1, v2, jnp), (k12,), (jnp.ones_like(k12),))
    return nngp, dot


MAPS = {"relu": _relu_map, "erf": _erf_map, "gelu": _gelu_map}


