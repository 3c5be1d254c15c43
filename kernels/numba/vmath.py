"""exp, log, sin and cos for loops that vectorise: numba's math.exp / math.log / math.sin on
float32 are calls into libm, which keep a loop scalar (and expf's underflow path is slow). The
float32 forms here are the C++ kernels' polynomials (Cephes expf / logf / sinf / cosf, ~1 ulp;
csrc/cpu/isa_gmm_kernels.inc, csrc/cpu/isa_noise_avx2.inc), branch-free, with float <-> int bit
casts as LLVM intrinsics. float64 keeps libm.

    vexp(x): exp(x) for x <= 88 (inf from 88.4 on); NaN stays NaN. 0 below -87, where the
             result is at most a few times 2^-126: no subnormal arithmetic (measured ~3x
             slower per element), and such a weight cannot move a log-sum-exp sum holding 1.
    vlog(x): log(x); log 0 = -inf, log inf = inf, NaN for x < 0 or NaN.
    vsincos(x): (sin x, cos x) for x in [0, 2 pi] (float32 only: the Box-Muller angle).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload


@intrinsic
def _bits(typingctx, x):
    """float32 -> its int32 bit pattern."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _float(typingctx, i):
    """Low 32 bits of an integer (numba widens int32 arithmetic) as a float32 bit pattern."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if v.type.width != 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(i), codegen


_F = np.float32
_I = np.int32
_MAGIC = _F(12582912.0)  # 1.5 * 2^23: t = v + magic holds round(v) in its low mantissa bits
_LOG2E = _F(1.44269504088896341)
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
_EXP_P = tuple(
    _F(c)
    for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
)
_LOG_P = tuple(
    _F(c)
    for c in (
        7.0376836292e-2,
        -1.1514610310e-1,
        1.1676998740e-1,
        -1.2420140846e-1,
        1.4249322787e-1,
        -1.6668057665e-1,
        2.0000714765e-1,
        -2.4999993993e-1,
        3.3333331174e-1,
    )
)
_EXP_LO, _EXP_HI = _F(-87.0), _F(89.0)
_SQRT_HALF = _F(0.707106781186547524)
_ONE, _HALF, _ZERO = _F(1.0), _F(0.5), _F(0.0)
_INF = _F(np.inf)
_TINY = _F(1.17549435e-38)  # smallest normal float32
_TWO23 = _F(8388608.0)


_FOUR_OVER_PI = _F(1.27323954473516)
_PIO4_PARTS = (_F(0.78515625), _F(2.4187564849853515625e-4), _F(3.77489497744594108e-8))
_COS_P = (_F(2.443315711809948e-5), _F(-1.388731625493765e-3), _F(4.166664568298827e-2))
_SIN_P = (_F(-1.9515295891e-4), _F(8.3321608736e-3), _F(-1.6666654611e-1))


def vexp(x):
    return math.exp(x)


def vlog(x):
    return math.log(x)


def vsincos(x):
    return math.sin(x), math.cos(x)


def _sincos32(x):
    # the octant j (even) of x and x - j pi/4 in three parts (the first two exact for j <= 8)
    j = (_I(x * _FOUR_OVER_PI) + _I(1)) & _I(-2)
    y = _F(j)
    r = ((x - y * _PIO4_PARTS[0]) - y * _PIO4_PARTS[1]) - y * _PIO4_PARTS[2]
    z = r * r
    pc = ((_COS_P[0] * z + _COS_P[1]) * z + _COS_P[2]) * z * z - _HALF * z + _ONE
    ps = ((_SIN_P[0] * z + _SIN_P[1]) * z + _SIN_P[2]) * z * r + r
    swap = (j & _I(2)) != _I(0)
    s = pc if swap else ps
    c = ps if swap else pc
    s = -s if (j & _I(4)) != _I(0) else s
    c = -c if ((j - _I(2)) & _I(4)) == _I(0) else c
    return s, c


def _exp32(x):
    xc = _EXP_HI if x > _EXP_HI else x  # NaN stays
    t = xc * _LOG2E + _MAGIC
    n = _bits(t) - _bits(_MAGIC)
    f = t - _MAGIC
    r = (xc - f * _LN2_HI) - f * _LN2_LO
    p = _EXP_P[0]
    p = p * r + _EXP_P[1]
    p = p * r + _EXP_P[2]
    p = p * r + _EXP_P[3]
    p = p * r + _EXP_P[4]
    p = p * r + _EXP_P[5]
    p = p * r * r + r + _ONE
    out = p * _float((n + _I(127)) << _I(23))  # NaN x: NaN p
    return _ZERO if x < _EXP_LO else out


def _log32(x):
    sub = x < _TINY  # subnormal: scaled into the normal range first
    xi = _bits(x * _TWO23 if sub else x)
    e = _F((xi >> _I(23)) - _I(126)) - (_F(23.0) if sub else _ZERO)
    m = _float((xi & _I(-2139095041)) | _I(0x3F000000))  # mantissa in [0.5, 1); mask 0x807FFFFF
    small = m < _SQRT_HALF
    e = e - _ONE if small else e
    m = (m + m if small else m) - _ONE
    z = m * m
    y = _LOG_P[0]
    y = y * m + _LOG_P[1]
    y = y * m + _LOG_P[2]
    y = y * m + _LOG_P[3]
    y = y * m + _LOG_P[4]
    y = y * m + _LOG_P[5]
    y = y * m + _LOG_P[6]
    y = y * m + _LOG_P[7]
    y = y * m + _LOG_P[8]
    y = y * m * z
    y = y + e * _LN2_LO
    y = y - _HALF * z
    out = m + y + e * _LN2_HI
    out = -_INF if x == _ZERO else out
    out = np.float32(np.nan) if x < _ZERO else out
    return x if (x == _INF) | (x != x) else out


@overload(vexp, jit_options=dict(fastmath=False))
def _vexp(x):
    return _exp32 if x == types.float32 else (lambda x: math.exp(x))


@overload(vlog, jit_options=dict(fastmath=False))
def _vlog(x):
    return _log32 if x == types.float32 else (lambda x: math.log(x))


@overload(vsincos, jit_options=dict(fastmath=False))
def _vsincos(x):
    return _sincos32 if x == types.float32 else None
